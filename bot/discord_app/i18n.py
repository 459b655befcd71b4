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
(plain strings of the cogs reach it as ``locale_str``). :func:`tr` translates a reply for
the member's locale (:func:`locale_of`); English, any locale without a catalogue and any
text without an entry stay English. :func:`localize` translates text that another module
already rendered in English (``formatting``), line by line, by matching the lines against
the catalogue's templates: a stop-gap until those functions take a locale themselves.
"""

from __future__ import annotations

import functools
import re
import string
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from importlib import resources
from typing import Any, Final

import discord
from discord import app_commands

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
class Template:
    """An English reply template, matched against rendered English text."""

    source: str
    pattern: re.Pattern[str]
    literal: int
    """How many characters of it are fixed text (the most specific match wins)."""


@dataclass(frozen=True)
class Catalogue:
    """One locale's translations, keyed by the English source string."""

    locale: str
    names: Mapping[str, str]
    menus: Mapping[str, str]
    texts: Mapping[str, str]
    templates: tuple[Template, ...] = field(default=(), repr=False)


def placeholders(text: str) -> set[str]:
    """The ``{named}`` placeholders of a template."""
    return {name for _, name, _, _ in string.Formatter().parse(text) if name}


def _template(source: str) -> Template | None:
    parts = list(string.Formatter().parse(source))
    if not any(name for _, name, _, _ in parts):
        return None
    regex = []
    seen: set[str] = set()
    literal = 0
    for text, name, _, _ in parts:
        regex.append(re.escape(text))
        literal += len(text)
        if name:
            regex.append(f"(?P={name})" if name in seen else f"(?P<{name}>.+?)")
            seen.add(name)
    return Template(source, re.compile("".join(regex), re.DOTALL), literal)


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
    texts = _table(data, "texts", locale)
    templates = tuple(t for source in texts if (t := _template(source)) is not None)
    return Catalogue(
        locale=locale,
        names=_table(data, "names", locale),
        menus=_table(data, "menus", locale),
        texts=texts,
        templates=tuple(sorted(templates, key=lambda t: -t.literal)),
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


def _localize_line(book: Catalogue, line: str) -> str:
    body = line.lstrip()
    indent = line[: len(line) - len(body)]
    if not body:
        return line
    if (exact := book.texts.get(body)) is not None:
        return indent + exact
    for template in book.templates:
        if (match := template.pattern.fullmatch(body)) is not None:
            return indent + book.texts[template.source].format(**match.groupdict())
    return line


def localize(locale: str | discord.Locale, rendered: str) -> str:
    """English text rendered elsewhere, translated line by line where the catalogue has
    the line (or a template matching it); other lines stay as they are."""
    book = catalogue(str(locale))
    if book is None or not rendered:
        return rendered
    return "\n".join(_localize_line(book, line) for line in rendered.split("\n"))


def localize_embed(
    locale: str | discord.Locale,
    embed: discord.Embed,
    *,
    description: bool = True,
    values: bool = True,
) -> discord.Embed:
    """``embed`` with its title, description, field names and values and footer passed
    through :func:`localize` (in place; returned for chaining). ``description=False`` and
    ``values=False`` leave those alone, for embeds that quote members' text there."""
    if catalogue(str(locale)) is None:
        return embed
    if embed.title:
        embed.title = localize(locale, embed.title)
    if description and embed.description:
        embed.description = localize(locale, embed.description)
    for index, item in enumerate(embed.fields):
        embed.set_field_at(
            index,
            name=localize(locale, item.name or ""),
            value=localize(locale, item.value or "") if values else item.value,
            inline=bool(item.inline),
        )
    if embed.footer.text:
        embed.set_footer(text=localize(locale, embed.footer.text), icon_url=embed.footer.icon_url)
    return embed


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
