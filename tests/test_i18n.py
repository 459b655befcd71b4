"""The message catalogues: complete for the command tree, within Discord's limits, and
replies whose translations keep their placeholders."""

from __future__ import annotations

import ast
import asyncio
import importlib
from pathlib import Path
from typing import Any, cast

import discord
import pytest
import regex
from discord import app_commands
from discord.ext import commands

from bot.discord_app import formatting
from bot.discord_app.client import COGS, BotTree, intents
from bot.discord_app.cogs.admin import ADMIN_ONLY
from bot.discord_app.cogs.mod import MODERATOR_ONLY
from bot.discord_app.components import CancelButton, DeleteButton, EditButton, RerollButton
from bot.discord_app.i18n import (
    LOCALES,
    CatalogueTranslator,
    catalogue,
    placeholders,
    say,
    tr,
    trn,
)
from bot.errors import ReadableError, RequestError, counted, words

Location = app_commands.TranslationContextLocation
NAME = regex.compile(r"^[-_\p{L}\p{N}\p{sc=Deva}\p{sc=Thai}]{1,32}$")
CODES = [str(locale) for locale in LOCALES]
ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "bot"
EXTERNAL: frozenset[str] = frozenset(
    {
        # discord.py's own check failures, translated by the tree's error handler
        "This command cannot be used in private messages.",
    }
)
"""Texts with an entry that no ``tr`` literal of ours names: they come from elsewhere."""


class Recorder(app_commands.Translator):
    """Every string the tree asks to translate, with where it is used."""

    def __init__(self) -> None:
        self.seen: dict[tuple[str, str], set[Location]] = {}

    async def translate(
        self,
        string: app_commands.locale_str,
        locale: discord.Locale,
        context: app_commands.TranslationContextTypes,
    ) -> str | None:
        table = "texts"
        if context.location in (
            Location.command_name,
            Location.group_name,
            Location.parameter_name,
        ):
            table = "menus" if isinstance(context.data, app_commands.ContextMenu) else "names"
        self.seen.setdefault((table, string.message), set()).add(context.location)
        return None


async def tree() -> app_commands.CommandTree[Any]:
    """The bot's command tree, built as ``doctor`` builds it (no service needed)."""
    bot = commands.Bot(command_prefix="!", intents=intents(), tree_cls=BotTree, help_command=None)
    for cog in COGS:
        await bot.add_cog(cog(cast(Any, bot)))
    return bot.tree


async def _record() -> dict[tuple[str, str], set[Location]]:
    built = await tree()
    recorder = Recorder()
    for command in built.get_commands():
        await command.get_translated_payload(built, recorder)
    return recorder.seen


async def _payloads() -> list[dict[str, Any]]:
    built = await tree()
    translator = CatalogueTranslator()
    return [await c.get_translated_payload(built, translator) for c in built.get_commands()]


@pytest.fixture(scope="module")
def recorded() -> dict[tuple[str, str], set[Location]]:
    return asyncio.run(_record())


@pytest.fixture(scope="module")
def payloads() -> list[dict[str, Any]]:
    return asyncio.run(_payloads())


@pytest.mark.parametrize("code", CODES)
async def test_every_string_of_the_command_tree_has_an_entry(
    recorded: dict[tuple[str, str], set[Location]], code: str
) -> None:
    book = catalogue(code)
    assert book is not None
    assert len(recorded) > 150
    tables = {"names": book.names, "menus": book.menus, "texts": book.texts}
    missing = sorted(f"[{table}] {text!r}" for table, text in recorded if text not in tables[table])
    assert not missing, f"{code}.toml lacks:\n" + "\n".join(missing)


@pytest.mark.parametrize("code", CODES)
async def test_localized_names_and_texts_are_within_discords_limits(
    recorded: dict[tuple[str, str], set[Location]], code: str
) -> None:
    book = catalogue(code)
    assert book is not None
    for name, local in book.names.items():
        assert NAME.match(local), (name, local)
        assert local == local.lower(), (name, local)
    for name, local in book.menus.items():
        assert 1 <= len(local) <= 32, (name, local)
    for table, text in recorded:
        if table == "texts":
            assert 1 <= len(book.texts[text]) <= 100, (text, book.texts[text])


@pytest.mark.parametrize("code", CODES)
def test_translations_keep_the_placeholders_of_their_english_template(code: str) -> None:
    book = catalogue(code)
    assert book is not None
    wrong = {k: v for k, v in book.texts.items() if placeholders(k) != placeholders(v)}
    assert not wrong


def _readable_errors() -> set[str]:
    """The names of every error class whose message is a translatable text."""
    for module in ("bot.service", "bot.describe", "bot.discord_app.moderation"):
        importlib.import_module(module)
    found: set[str] = set()
    todo: list[type[ReadableError]] = [ReadableError]
    while todo:
        cls = todo.pop()
        found.add(cls.__name__)
        todo += cls.__subclasses__()
    return found


_TEMPLATE_ARGS: dict[str, tuple[int, ...]] = {
    "tr": (1,),
    "trn": (2, 3),
    "words": (0,),
    "counted": (1, 2),
    **dict.fromkeys(_readable_errors(), (0,)),
}
"""Which positional arguments are English templates: of ``tr``/``trn`` (the adapter), of
``words``/``counted`` and of the errors made of texts (the core)."""


def _tr_literals(path: Path) -> set[str]:
    """The English templates a module passes to ``tr``/``trn``: literals, or an expression
    choosing between literals (``tr(locale, "on" if enabled else "off")``)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if not isinstance(node, ast.Call):
            continue
        name = getattr(node.func, "id", None) or getattr(node.func, "attr", None)
        for index in _TEMPLATE_ARGS.get(str(name), ()):
            text = node.args[index] if len(node.args) > index else None
            if isinstance(text, ast.JoinedStr | ast.BinOp):
                pytest.fail(f"{path}:{node.lineno}: {name}() needs a literal template")
            if text is not None:
                found |= {
                    each.value
                    for each in ast.walk(text)
                    if isinstance(each, ast.Constant) and isinstance(each.value, str)
                }
    return found


def _used_texts() -> set[str]:
    """Every template of the adapter's replies and of the core's texts (and the tables
    whose values the adapter translates)."""
    used = {text for module in PACKAGE.rglob("*.py") for text in _tr_literals(module)}
    used |= {MODERATOR_ONLY, ADMIN_ONLY, "Limit reached"}
    used |= set(formatting.LIMIT_TITLES.values()) | set(formatting.JOB_STATUS_WORDS.values())
    used |= {button.label for button in (RerollButton, EditButton, DeleteButton, CancelButton)}
    return used


@pytest.mark.parametrize("code", CODES)
def test_every_reply_passed_to_tr_has_an_entry(code: str) -> None:
    book = catalogue(code)
    assert book is not None
    used = _used_texts()
    assert len(used) > 200
    missing = sorted(used - book.texts.keys())
    assert not missing, f"{code}.toml lacks:\n" + "\n".join(map(repr, missing))


@pytest.mark.parametrize("code", CODES)
def test_no_catalogue_entry_is_left_over(
    recorded: dict[tuple[str, str], set[Location]], code: str
) -> None:
    """An entry nothing uses any more is a translation nobody reads: removed with its text."""
    book = catalogue(code)
    assert book is not None
    tree = {text for table, text in recorded if table == "texts"}
    stale = sorted(book.texts.keys() - _used_texts() - tree - EXTERNAL)
    assert not stale, f"{code}.toml has unused entries:\n" + "\n".join(map(repr, stale))


async def test_the_synced_payload_is_localized_and_option_names_stay_unique(
    payloads: list[dict[str, Any]],
) -> None:
    imagine = next(p for p in payloads if p["name"] == "imagine")
    assert imagine["name_localizations"] == {
        "ja": "画像生成",
        "zh-CN": "生成图片",
        "ko": "이미지생성",
    }
    assert set(imagine["description_localizations"]) == set(CODES)

    def check(options: list[dict[str, Any]]) -> None:
        for code in CODES:
            names = [o.get("name_localizations", {}).get(code, o["name"]) for o in options]
            assert len(names) == len(set(names)), (code, names)
        for option in options:
            check(option.get("options", []))

    for kind in {p.get("type", 1) for p in payloads}:  # names are unique per command type
        check([p for p in payloads if p.get("type", 1) == kind])


def test_replies_fall_back_to_english() -> None:
    assert tr("ja", "Saved.") == "保存しました。"
    assert tr("ko", "Not saved: {reason}.", reason="x") == "저장되지 않았습니다: x."
    for locale in ("en-US", "en-GB", "zh-TW", "fr"):
        assert tr(locale, "Not saved: {reason}.", reason="x") == "Not saved: x."
    assert tr("ja", "No entry for {this} one.", this="x") == "No entry for x one."
    assert tr(discord.Locale.chinese, "Saved.") == "已保存。"


def test_counts_pick_the_form_of_their_number() -> None:
    assert trn("en-US", 1, "1 image", "{count} images") == "1 image"
    assert trn("en-US", 3, "1 image", "{count} images") == "3 images"
    assert trn("ja", 3, "1 image", "{count} images") == tr("ja", "{count} images", count=3)
    assert "3" in trn("ko", 3, "1 image", "{count} images")


def test_texts_of_the_core_are_written_in_the_readers_language() -> None:
    error = RequestError("{name} must be a multiple of 8 (got {value})", name="width", value=9)
    assert str(error) == "width must be a multiple of 8 (got 9)"
    assert say("en-US", error) == "width must be a multiple of 8 (got 9)"
    japanese = say("ja", error)
    assert japanese != str(error)
    assert "width" in japanese
    assert "9" in japanese
    nested = words(
        "Slow down: your limit is {rate}; this request costs {cost}.",
        rate="x",
        cost=counted(3, "1 image", "{count} images"),
    )
    assert str(nested) == "Slow down: your limit is x; this request costs 3 images."
    assert tr("ja", "{count} images", count=3) in say("ja", nested)
    # a reason quoted from elsewhere stays as it is, braces and all
    assert say("ja", RequestError("odd {text}")) == "odd {text}"
    assert say("ko", "plain words") == "plain words"


def test_job_messages_are_written_in_the_locale_given() -> None:
    assert formatting.duration("en-US", 30) == "30 s"
    assert formatting.duration("ja", 30) != "30 s"
    assert formatting.duration("ja", 30).startswith("30")
    assert formatting.bad_request_text("en-US", "x") == "That request cannot be rendered: x"
    assert formatting.bad_request_text("ko", "x") != "That request cannot be rendered: x"


def test_the_help_embed_is_localized_but_keeps_tags() -> None:
    embed = formatting.help_embed("ja", 40, 4)
    assert embed.title == "Animagine XL 3.1 のプロンプトの書き方"
    assert embed.description is not None
    assert embed.description.startswith("**Danbooru タグ**")
    assert "例: `1girl, souryuu asuka langley" in embed.description
    fields = {f.name: f.value for f in embed.fields}
    assert "最大 40" in fields["設定"]
    assert fields["品質タグ"].startswith("masterpiece > best quality")
    assert all(
        name != value
        for name, value in zip(
            [f.name for f in embed.fields],
            [f.name for f in formatting.help_embed("en-US", 40, 4).fields],
            strict=True,
        )
    )
