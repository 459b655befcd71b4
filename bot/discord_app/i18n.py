"""Localization: the command tree's names and descriptions, and the replies members read.

The text lives in message catalogues, ``locales/<locale>.toml`` (Discord's locale codes:
``ja``, ``zh-CN``, ``ko``), keyed by the English source string. Each has three tables:

``names``
    slash command, group and option names: lowercase, ``^[-_\\p{L}\\p{N}...]{1,32}$``
``menus``
    context menu names ("Generation info"): up to 32 characters, spaces allowed
``texts``
    descriptions, choice names and replies. A reply's key is its English template, with
    ``{named}`` placeholders; its translation has the same placeholders.

:class:`CatalogueTranslator` serves the first three to discord.py's command tree at sync
(plain strings of the cogs reach it as ``locale_str``). :func:`tr` (and :func:`trn`
for counts) translates a reply for a locale: the member's (:func:`locale_of`) for what they
read, the one stored with a job (``JobRecord.locale``) for its messages, a server's
preferred locale for its moderation log. English, any locale without a catalogue and any
text without an entry stay English.
"""

from __future__ import annotations

import functools
import string
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from importlib import resources
from typing import Any, Final

import discord
from discord import app_commands

from bot.errors import ReadableError, Text

SOURCE_LOCALE: Final = "en-US"
LOCALES: Final = (discord.Locale.japanese, discord.Locale.chinese, discord.Locale.korean)
"""The locales with a catalogue (``ja``, ``zh-CN``, ``ko``); every other one reads English."""

_NAME_LOCATIONS: Final = frozenset(
    {
        app_commands.TranslationContextLocation.command_name,
        app_commands.TranslationContextLocation.group_name,
        app_commands.TranslationContextLocation.parameter_name,
    }
)


@dataclass(frozen=True)
class Catalogue:
    """One locale's translations, keyed by the English source string."""

    locale: str
    names: Mapping[str, str]
    menus: Mapping[str, str]
    texts: Mapping[str, str]


def placeholders(text: str) -> set[str]:
    """The ``{named}`` placeholders of a template."""
    return {name for _, name, _, _ in string.Formatter().parse(text) if name}


def _table(data: Mapping[str, Any], key: str, locale: str) -> dict[str, str]:
    table = data.get(key, {})
    if not isinstance(table, dict) or not all(isinstance(v, str) for v in table.values()):
        raise ValueError(f"locales/{locale}.toml: [{key}] must map strings to strings")
    return table


@functools.cache
def catalogue(locale: str) -> Catalogue | None:
    """The catalogue of ``locale`` (read once), or None for English and other locales."""
    if locale not in {str(loc) for loc in LOCALES}:
        return None
    path = resources.files("bot.discord_app").joinpath("locales", f"{locale}.toml")
    data = tomllib.loads(path.read_text(encoding="utf-8"))
    return Catalogue(
        locale=locale,
        names=_table(data, "names", locale),
        menus=_table(data, "menus", locale),
        texts=_table(data, "texts", locale),
    )


def locale_of(interaction: discord.Interaction[Any]) -> str:
    """The member's locale (their Discord client's language), e.g. ``ja``."""
    return str(interaction.locale)


def tr(locale: str | discord.Locale, text: str, /, **values: object) -> str:
    """``text`` (an English template) for ``locale``, with ``values`` filled in.

    A locale without a catalogue, or a text without an entry in it, reads English.
    """
    book = catalogue(str(locale))
    translated = text if book is None else book.texts.get(text, text)
    return translated.format(**values) if values else translated


class CatalogueTranslator(app_commands.Translator):
    """The command tree's strings from the catalogues (None, English, where none has it)."""

    async def translate(
        self,
        string: app_commands.locale_str,
        locale: discord.Locale,
        context: app_commands.TranslationContextTypes,
    ) -> str | None:
        book = catalogue(str(locale))
        if book is None:
            return None
        source = string.message
        if context.location in _NAME_LOCATIONS:
            menu = isinstance(context.data, app_commands.ContextMenu)
            table = book.menus if menu else book.names
        else:
            table = book.texts
        translated = table.get(source)
        return None if translated is None or translated == source else translated


def trn(locale: str | discord.Locale, count: int, one: str, many: str, /, **values: object) -> str:
    """``one`` (an English template for a count of 1) or ``many`` (with ``{count}``) for
    ``locale``: the catalogues hold both forms, as their languages need."""
    return tr(locale, one if count == 1 else many, count=count, **values)


def say(locale: str | discord.Locale, value: object) -> str:
    """Words of the core in ``locale``: a :class:`~bot.errors.Text` (or the text of a
    :class:`~bot.errors.ReadableError`) through the catalogue, its values first; anything
    else as ``str()`` (a reason the core quotes from elsewhere stays as it is)."""
    if isinstance(value, ReadableError):
        value = value.text
    if isinstance(value, Text):
        values = {name: say(locale, each) for name, each in value.values.items()}
        return tr(locale, value.template, **values)
    return str(value)
