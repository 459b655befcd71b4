"""``python -m bot doctor``: one checklist of everything the bot needs, each line ok or a
problem with its fix.

The checks, in order: the configuration loads; Discord accepts the token; the
application's install link has the scopes and permissions the bot needs; the bot has those
permissions in each server it is in; the slash commands Discord holds are the bot's own;
the database is reachable and at the newest schema revision; Redis and the workers (when
``queue.backend = "redis"``); the model is on this machine (or how big its download is);
the GPU and its free memory against what the configured sizes and counts need; the model
loads (``--no-load`` skips this slow part); the image tagger loads and has the tags
moderation needs; free disk for the model cache and the kept images.

**Nothing here changes state.** Discord is only read (``GET``); the database is opened
read-only and a missing SQLite file is not created; nothing is downloaded (the model and
the tagger load from local files only, as if offline); Redis is only read.

Each check is a small function returning a :class:`Check`. A check that fails in a way it
did not foresee becomes a problem line naming the exception, never a traceback. The Discord
token never appears in the output: every line is scrubbed of it (and of anything that
looks like a token) before it is printed.

Exit status: 0 when nothing is a problem (warnings allowed), 1 when something is, 2 when the
configuration does not load (the config line is still printed, as text or JSON).
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import shutil
import sqlite3
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, Literal
from urllib.parse import quote

from bot.config import REDACTED, ConfigError, Settings, load_settings, redact_tokens

log = logging.getLogger(__name__)

Status = Literal["ok", "warn", "problem"]
OK: Final[Status] = "ok"
WARN: Final[Status] = "warn"
PROBLEM: Final[Status] = "problem"

EXIT_OK: Final = 0
EXIT_PROBLEM: Final = 1
EXIT_CONFIG: Final = 2

GB: Final = 1_000_000_000
MIB: Final = 1024 * 1024

# What the bot needs on Discord (README, "Setting up the Discord application").
REQUIRED_SCOPES: Final = ("bot", "applications.commands")
REQUIRED_PERMISSIONS: Final = (
    ("View Channels", 1 << 10),
    ("Send Messages", 1 << 11),
    ("Send Messages in Threads", 1 << 38),
    ("Embed Links", 1 << 14),
    ("Attach Files", 1 << 15),
    ("Read Message History", 1 << 16),
)
INVITE_PERMISSIONS: Final = sum(bit for _, bit in REQUIRED_PERMISSIONS)  # 274878024704
ADMINISTRATOR: Final = 1 << 3

# GPU memory (README, "GPU sizes"): about 7 GB of fp16 weights; one image of about a
# megapixel (832x1216, 1024x1024) needs 10-12 GB in all; the hires pass (x1.5, 2.25 MP)
# and count = 4 need 16 GB or more. A fixed part (weights, CUDA context and workspace) and
# a part per megapixel of each image in one call fit those figures: 9 + 3 x MP x images.
FIXED_GB: Final = 9.0
GB_PER_MEGAPIXEL_IMAGE: Final = 3.0
# The download when the hub cannot be asked: about 7 GB of fp16 weights (README), twice
# that in full precision.
FP16_DOWNLOAD_GB: Final = 7.0
FULL_DOWNLOAD_GB: Final = 14.0
WEIGHT_COMPONENTS: Final = ("unet", "vae", "text_encoder", "text_encoder_2")


@dataclass(frozen=True)
class Check:
    """One line of the checklist."""

    name: str
    status: Status
    detail: str
    fix: str = ""

    def as_dict(self) -> dict[str, str]:
        return {"name": self.name, "status": self.status, "detail": self.detail, "fix": self.fix}


@dataclass(frozen=True)
class Options:
    """How the doctor runs: ``load=False`` skips loading the model (``--no-load``)."""

    load: bool = True
    discord_timeout_s: float = 10.0
    hub_timeout_s: float = 10.0
    hub_endpoint: str | None = None  # None: huggingface_hub's (HF_ENDPOINT)


@dataclass
class Context:
    """The settings, the options, and what one check learns for a later one."""

    settings: Settings
    options: Options = field(default_factory=Options)
    model_local: bool = False
    download_bytes: int | None = None  # what the model download still needs, when known


# --------------------------------------------------------------------------- formatting
def scrub(text: str, secrets: Iterable[str] = ()) -> str:
    """``text`` without the given secrets and without anything that looks like a token."""
    for secret in secrets:
        if secret:
            text = text.replace(secret, REDACTED)
    return redact_tokens(text)


def render_text(checks: Sequence[Check]) -> str:
    """One line per check (``ok``, ``warn`` or ``PROBLEM``, the name, what was found and
    the fix), then a summary line."""
    width = max((len(c.name) for c in checks), default=0)
    lines = []
    for check in checks:
        label = "PROBLEM" if check.status == PROBLEM else check.status
        line = f"{label:<8} {check.name:<{width}}  {check.detail}"
        if check.fix:
            line += f" — fix: {check.fix}"
        lines.append(line)
    problems = sum(c.status == PROBLEM for c in checks)
    warnings = sum(c.status == WARN for c in checks)
    if problems:
        lines.append(f"{problems} problem(s), {warnings} warning(s)")
    else:
        lines.append(f"all ok ({warnings} warning(s))" if warnings else "all ok")
    return "\n".join(lines)


def render_json(checks: Sequence[Check]) -> str:
    """One JSON object: ``ok``, the counts, and ``checks`` (name, status, detail, fix)."""
    return json.dumps(
        {
            "ok": all(c.status != PROBLEM for c in checks),
            "problems": sum(c.status == PROBLEM for c in checks),
            "warnings": sum(c.status == WARN for c in checks),
            "checks": [c.as_dict() for c in checks],
        },
        ensure_ascii=False,
    )


def exit_status(checks: Sequence[Check]) -> int:
    return EXIT_PROBLEM if any(c.status == PROBLEM for c in checks) else EXIT_OK


def _gb(size: float) -> str:
    return f"{size / GB:.1f} GB"


def _reason(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {lines[0]}" if lines else type(exc).__name__


def _listing(items: Sequence[str], limit: int = 8) -> str:
    shown = ", ".join(items[:limit])
    return shown + (f" and {len(items) - limit} more" if len(items) > limit else "")


# --------------------------------------------------------------------------- config
def check_config(path: str | None, settings: Settings | None, error: str | None) -> Check:
    where = path or "settings (defaults and environment)"
    if settings is None:
        detail = error or f"{where}: cannot be loaded"
        fix = "correct the key the message names (config.example.toml documents every key)"
        if detail.endswith("config file not found"):
            fix = "create it from config.example.toml (every key is documented there)"
        return Check("config", PROBLEM, detail, fix)
    from bot.discord_app.runner import token_source

    token = "no Discord token" if settings.discord.token is None else "token from "
    if settings.discord.token is not None:
        token += token_source(settings)
    return Check(
        "config",
        OK,
        f"{where} is valid ({token}; queue backend {settings.queue.backend})",
    )


# --------------------------------------------------------------------------- Discord
def invite_url(application_id: int | str) -> str:
    return (
        f"https://discord.com/oauth2/authorize?client_id={application_id}"
        f"&scope=bot+applications.commands&permissions={INVITE_PERMISSIONS}"
    )


def missing_permissions(granted: int) -> list[str]:
    """The README's permissions that ``granted`` lacks (none with Administrator)."""
    if granted & ADMINISTRATOR:
        return []
    return [name for name, bit in REQUIRED_PERMISSIONS if not granted & bit]


def guild_permissions(
    member_roles: Iterable[str | int], roles: Iterable[Mapping[str, Any]], guild_id: str | int
) -> int:
    """A member's guild-wide permissions as Discord computes them: @everyone's (the role
    whose id is the guild's) and those of each role it holds; all with Administrator."""
    held = {str(r) for r in member_roles} | {str(guild_id)}
    value = 0
    for role in roles:
        if str(role.get("id")) in held:
            value |= int(role.get("permissions") or 0)
    return (1 << 53) - 1 if value & ADMINISTRATOR else value


class DiscordDown(Exception):
    """No usable answer from Discord (no connection, a timeout, a 5xx, not JSON)."""


class DiscordRest:
    """GET requests to Discord's REST API with the bot token, each with a timeout."""

    def __init__(self, base: str, token: str, timeout_s: float) -> None:
        import aiohttp

        self.base = base.rstrip("/")
        self.timeout = aiohttp.ClientTimeout(
            total=timeout_s, connect=timeout_s, sock_connect=timeout_s, sock_read=timeout_s
        )
        self.session = aiohttp.ClientSession(
            headers={
                "Authorization": f"Bot {token}",
                "User-Agent": "DiscordBot (https://github.com/animagine-bot, 1) doctor",
            },
            timeout=self.timeout,
        )

    async def close(self) -> None:
        await self.session.close()

    async def get(self, path: str, **params: str) -> tuple[int, Any]:
        """``(status, JSON body)``; raises :class:`DiscordDown` for anything else."""
        import aiohttp

        from bot.discord_app.http import describe_failure, snippet

        url = f"{self.base}{path}"
        for attempt in range(3):
            try:
                async with self.session.get(url, params=params or None) as response:
                    body = await response.read()
                    kind = response.headers.get("Content-Type", "")
                    status = response.status
            except (aiohttp.ClientError, TimeoutError) as exc:
                raise DiscordDown(f"GET {url}: {describe_failure(exc, self.timeout)}") from None
            data: Any = None
            if kind.split(";")[0].strip() == "application/json":
                try:
                    data = json.loads(body)
                except ValueError:
                    data = None
            if status == 429 and attempt < 2:
                wait = data.get("retry_after", 1.0) if isinstance(data, dict) else 1.0
                await asyncio.sleep(min(float(wait), 10.0))
                continue
            if status >= 500 or data is None:
                text = snippet(body.decode("utf-8", "replace")) or "(empty)"
                raise DiscordDown(f"GET {url} answered {status}: {text}")
            return status, data
        raise DiscordDown(f"GET {url}: rate limited three times")


def _discord_error(status: int, data: Any) -> str:
    message = data.get("message") if isinstance(data, dict) else None
    return f"{status} {message}" if message else str(status)


def _down(name: str, settings: Settings, reason: str) -> Check:
    return Check(
        name,
        PROBLEM,
        f"cannot reach Discord's REST API at {settings.discord.rest_url}: {reason}",
        "check this machine's network, or discord.rest_url when a proxy is configured "
        "(Discord's own status: https://discordstatus.com)",
    )


def _not_checked(name: str, why: str) -> Check:
    return Check(name, WARN, f"not checked: {why}")


async def check_token(rest: DiscordRest, settings: Settings) -> tuple[Check, dict[str, Any] | None]:
    from bot.discord_app.runner import token_source

    source = token_source(settings)
    status, data = await rest.get("/users/@me")
    if status == 200 and isinstance(data, dict):
        name = data.get("username", "?")
        return Check("token", OK, f"accepted: bot {name} ({data.get('id')}), from {source}"), data
    if status == 401:
        detail = f"Discord rejected the token (401 Unauthorized), from {source}"
        fix = (
            "reset the token in the developer portal (Bot → Reset Token) and put the new "
            "one in DISCORD_TOKEN or the discord.token_file"
        )
        return Check("token", PROBLEM, detail, fix), None
    detail = f"Discord answered GET /users/@me with {_discord_error(status, data)}"
    return Check("token", PROBLEM, detail, "check the token and discord.rest_url"), None


async def check_application(rest: DiscordRest) -> tuple[Check, str | None]:
    status, app = await rest.get("/oauth2/applications/@me")
    if status != 200 or not isinstance(app, dict):
        detail = f"GET /oauth2/applications/@me answered {_discord_error(status, app)}"
        return Check("application", PROBLEM, detail), None
    app_id = str(app.get("id"))
    name = f"{app.get('name', '?')} ({app_id})"
    params = app.get("install_params")
    if not params:
        config = app.get("integration_types_config") or {}
        params = (config.get("0") or {}).get("oauth2_install_params")
    if not params:
        custom = app.get("custom_install_url")
        if custom:
            detail = f"{name}: the install link is a custom URL ({custom}); not checked"
            return Check("application", WARN, detail), app_id
        detail = f"{name}: no install link is set in the developer portal"
        fix = (
            "invite the bot with the README's link "
            f"{invite_url(app_id)}, or set Installation → Install Link to Discord's link "
            "with the scopes bot and applications.commands and those permissions"
        )
        return Check("application", WARN, detail, fix), app_id
    scopes = set(params.get("scopes") or [])
    lacking_scopes = [s for s in REQUIRED_SCOPES if s not in scopes]
    lacking = missing_permissions(int(params.get("permissions") or 0))
    if not lacking_scopes and not lacking:
        detail = (
            f"{name}: install link with the scopes {', '.join(REQUIRED_SCOPES)} and the "
            "permissions the bot needs"
        )
        return Check("application", OK, detail), app_id
    parts = []
    if lacking_scopes:
        parts.append(f"lacks the scope(s) {', '.join(lacking_scopes)}")
    if lacking:
        parts.append(f"lacks the permission(s) {', '.join(lacking)}")
    detail = f"{name}: the install link {' and '.join(parts)}"
    fix = (
        "in the developer portal (Installation → Default Install Settings → Guild Install) "
        "add them; servers invited with the old link may lack them too"
    )
    return Check("application", PROBLEM, detail, fix), app_id


async def _all_guilds(rest: DiscordRest) -> list[dict[str, Any]] | str:
    """The bot's servers (200 a page), or what Discord answered instead."""
    guilds: list[dict[str, Any]] = []
    after = "0"
    while True:
        status, page = await rest.get("/users/@me/guilds", limit="200", after=after)
        if status != 200 or not isinstance(page, list):
            return f"GET /users/@me/guilds answered {_discord_error(status, page)}"
        guilds += [g for g in page if isinstance(g, dict)]
        if len(page) < 200:
            return guilds
        after = str(max(int(g["id"]) for g in page))


async def _permissions_in(rest: DiscordRest, guild: Mapping[str, Any], bot_id: str) -> int | str:
    """The bot's guild-wide permissions in ``guild``, or why they cannot be read."""
    if guild.get("owner"):
        return (1 << 53) - 1
    if guild.get("permissions") is not None:
        granted = int(guild["permissions"])
        return (1 << 53) - 1 if granted & ADMINISTRATOR else granted
    gid = guild["id"]
    status, member = await rest.get(f"/guilds/{gid}/members/{bot_id}")
    if status != 200 or not isinstance(member, dict):
        return f"its member could not be read ({_discord_error(status, member)})"
    status, roles = await rest.get(f"/guilds/{gid}/roles")
    if status != 200 or not isinstance(roles, list):
        return f"its roles could not be read ({_discord_error(status, roles)})"
    return guild_permissions(member.get("roles") or [], roles, gid)


async def check_permissions(rest: DiscordRest, bot_id: str, app_id: str | None) -> Check:
    guilds = await _all_guilds(rest)
    invite = invite_url(app_id or bot_id)
    if isinstance(guilds, str):
        return Check("permissions", PROBLEM, f"cannot list the bot's servers: {guilds}")
    if not guilds:
        return Check("permissions", WARN, "the bot is in no server yet", f"invite it: {invite}")
    gate = asyncio.Semaphore(4)

    async def one(guild: Mapping[str, Any]) -> int | str:
        async with gate:
            return await _permissions_in(rest, guild, bot_id)

    found = await asyncio.gather(*(one(g) for g in guilds))
    problems = []
    for guild, granted in zip(guilds, found, strict=True):
        label = f"{guild.get('name', '?')} ({guild['id']})"
        if isinstance(granted, str):
            problems.append(f"{label}: {granted}")
        elif lacking := missing_permissions(granted):
            problems.append(f"{label} lacks {', '.join(lacking)}")
    if not problems:
        detail = (
            f"the bot has the permissions it needs in all {len(guilds)} server(s) "
            "(server-wide; channel overrides are not checked)"
        )
        return Check("permissions", OK, detail)
    detail = f"{len(problems)} of {len(guilds)} server(s): {_listing(problems, 10)}"
    fix = (
        "in each server named, give the bot's role those permissions (Server Settings → "
        f"Roles), or invite it again with {invite}"
    )
    return Check("permissions", PROBLEM, detail, fix)


async def command_payloads() -> list[dict[str, Any]]:
    """What the bot syncs: its command tree as ``PUT .../commands`` sends it, built from
    the same cogs the bot adds (no service, database or engine is needed for that)."""
    from typing import cast

    from discord.ext import commands

    from bot.discord_app.client import COGS, BotTree, intents

    bot = commands.Bot(command_prefix="!", intents=intents(), tree_cls=BotTree, help_command=None)
    host = cast(Any, bot)  # the cogs keep the bot; building the tree touches nothing else
    for cog in COGS:
        await bot.add_cog(cog(host))
    return [command.to_dict(bot.tree) for command in bot.tree.get_commands()]


_OPTION_KEYS: Final = (
    "type",
    "name",
    "description",
    "required",
    "choices",
    "min_value",
    "max_value",
    "min_length",
    "max_length",
    "autocomplete",
    "channel_types",
    "options",
)


def _comparable(payload: Mapping[str, Any], keys: Sequence[str]) -> dict[str, Any]:
    """The parts of a command (or option) members see, with Discord's defaults dropped."""
    out: dict[str, Any] = {}
    for key in keys:
        value = payload.get(key)
        if key == "options" and value:
            value = [_comparable(o, _OPTION_KEYS) for o in value]
        elif key == "choices" and value:
            value = [{"name": c.get("name"), "value": c.get("value")} for c in value]
        elif key == "channel_types" and value:
            value = sorted(value)
        elif key == "default_member_permissions" and value is not None:
            value = str(value)
        elif key == "type" and value is None:
            value = 1
        if value is None or value is False or value in ([], ""):
            continue
        out[key] = value
    return out


_COMMAND_KEYS: Final = (
    "type",
    "name",
    "description",
    "options",
    "default_member_permissions",
    "nsfw",
)


def _label(command: Mapping[str, Any]) -> str:
    kind = int(command.get("type") or 1)
    if kind == 1:
        return f"/{command.get('name')}"
    return f"'{command.get('name')}' ({'user' if kind == 2 else 'message'} menu)"


def compare_commands(
    wanted: Sequence[Mapping[str, Any]], synced: Sequence[Mapping[str, Any]]
) -> tuple[list[str], list[str], list[str]]:
    """``(missing, outdated, extra)``: labels of the bot's commands Discord lacks, holds in
    another form, and holds though the bot has no such command."""

    def key(c: Mapping[str, Any]) -> tuple[str, int]:
        return str(c.get("name")), int(c.get("type") or 1)

    remote = {key(c): c for c in synced}
    local = {key(c): c for c in wanted}
    missing = [_label(c) for k, c in local.items() if k not in remote]
    outdated = [
        _label(c)
        for k, c in local.items()
        if k in remote and _comparable(c, _COMMAND_KEYS) != _comparable(remote[k], _COMMAND_KEYS)
    ]
    extra = [_label(c) for k, c in remote.items() if k not in local]
    return missing, outdated, extra


async def check_commands(rest: DiscordRest, app_id: str, settings: Settings) -> Check:
    wanted = await command_payloads()
    dev_guilds = settings.discord.dev_guilds
    scopes: list[tuple[str, str]] = (
        [
            (f"development server {g}", f"/applications/{app_id}/guilds/{g}/commands")
            for g in dev_guilds
        ]
        if dev_guilds
        else [("global", f"/applications/{app_id}/commands")]
    )
    findings = []
    for where, path in scopes:
        status, synced = await rest.get(path)
        if status != 200 or not isinstance(synced, list):
            findings.append(f"{where}: cannot read them ({_discord_error(status, synced)})")
            continue
        missing, outdated, extra = compare_commands(wanted, synced)
        parts = []
        if missing:
            parts.append(f"missing {_listing(missing)}")
        if outdated:
            parts.append(f"outdated {_listing(outdated)}")
        if extra:
            parts.append(f"not the bot's (any more) {_listing(extra)}")
        if parts:
            findings.append(f"{where}: {'; '.join(parts)}")
    scope_text = (
        "to the development server(s) " + ", ".join(str(g) for g in dev_guilds)
        if dev_guilds
        else "globally"
    )
    if not findings:
        return Check("commands", OK, f"synced {scope_text}: {len(wanted)} commands")
    return Check(
        "commands",
        PROBLEM,
        f"not synced {scope_text}: {' | '.join(findings)}",
        "start the bot (python -m bot run): it syncs its commands at start-up (global "
        "changes can take a while to show in Discord)",
    )


async def discord_checks(settings: Settings, options: Options) -> list[Check]:
    """token, application, permissions, commands: the bot's standing on Discord."""
    names = ("token", "application", "permissions", "commands")
    token = settings.discord.token
    if token is None:
        return [
            Check(
                "token",
                PROBLEM,
                "no Discord token",
                "set DISCORD_TOKEN, or discord.token_file to a file holding the token",
            ),
            *(_not_checked(n, "there is no token") for n in names[1:]),
        ]
    rest = DiscordRest(
        settings.discord.rest_url, token.get_secret_value(), options.discord_timeout_s
    )
    done: list[Check] = []
    try:
        token_check, me = await check_token(rest, settings)
        done.append(token_check)
        if me is None:
            return done + [_not_checked(n, "the token was not accepted") for n in names[1:]]
        application, app_id = await check_application(rest)
        done.append(application)
        done.append(await _guarded("permissions", check_permissions(rest, str(me["id"]), app_id)))
        if app_id is None:
            done.append(_not_checked("commands", "the application could not be read"))
        else:
            done.append(await _guarded("commands", check_commands(rest, app_id, settings)))
    except DiscordDown as exc:
        name = names[len(done)]
        done.append(_down(name, settings, str(exc)))
        done += [_not_checked(n, "Discord did not answer") for n in names[len(done) :]]
    finally:
        await rest.close()
    return done


# --------------------------------------------------------------------------- database
def check_database(settings: Settings) -> Check:
    """Reachable and at the newest revision, read-only: nothing is created or upgraded."""
    from sqlalchemy.engine import make_url

    from bot.storage import DatabaseError, check_schema_version
    from bot.storage.database import describe_location, is_memory, sqlite_path
    from bot.storage.migrate import head, known_revisions

    url = make_url(settings.database.url)
    where = describe_location(url)
    upgrade_fix = "python -m bot db upgrade (the bot also upgrades it when it starts)"
    if is_memory(url):
        return Check("database", WARN, "in memory: everything is lost when the bot stops")
    path = sqlite_path(url)
    newest = head()
    if path is not None:
        if not path.is_file():  # a first start: the bot creates it (a typo shows here too)
            return Check(
                "database",
                WARN,
                f"{where}: not created yet (the bot creates it when it starts)",
                "python -m bot db upgrade creates it now, if this is the path you meant",
            )
        try:
            current = _sqlite_revision(path, settings.database.busy_timeout_ms)
        except sqlite3.Error as exc:
            from bot.storage.database import describe_problem

            detail = f"{where}: {describe_problem(exc)}"
            return Check("database", PROBLEM, detail, "check the file and its permissions")
        if current is not None and current not in known_revisions():
            detail = (
                f"{where} is at revision {current!r}, which this version of the bot does not "
                "know (a newer version upgraded it)"
            )
            return Check("database", PROBLEM, detail, "run that newer version, or restore a backup")
        writable = os.access(path, os.W_OK) and os.access(path.parent, os.W_OK)
        if not writable:
            detail = f"{where}: the bot cannot write to the file or its folder"
            return Check("database", PROBLEM, detail, "give the bot's user write access to both")
    else:
        try:
            version = check_schema_version(
                settings.database.url, busy_timeout_ms=settings.database.busy_timeout_ms
            )
        except DatabaseError as exc:
            return Check("database", PROBLEM, str(exc), "check database.url and the server")
        current = version.current
    if current is None:
        return Check("database", PROBLEM, f"{where}: empty (no schema)", upgrade_fix)
    if current != newest:
        detail = f"{where} at revision {current}, behind the newest ({newest})"
        return Check("database", PROBLEM, detail, upgrade_fix)
    return Check("database", OK, f"{where} at revision {current} (newest)")


def _sqlite_revision(path: Path, busy_timeout_ms: int) -> str | None:
    """The file's schema revision, read without writing anything. With no ``-wal`` file
    beside it (the bot is not running and closed cleanly) the file alone holds everything
    and is opened immutable, which creates no ``-wal``/``-shm`` files; otherwise read-only,
    through the write-ahead log that is already there."""
    wal = path.with_name(path.name + "-wal")
    mode = "mode=ro" if wal.exists() else "mode=ro&immutable=1"
    uri = f"file:{quote(str(path.absolute()))}?{mode}"
    conn = sqlite3.connect(uri, uri=True, timeout=busy_timeout_ms / 1000)
    try:
        tables = conn.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name = 'alembic_version'"
        ).fetchall()
        if not tables:
            return None
        row = conn.execute("SELECT version_num FROM alembic_version").fetchone()
        return None if row is None else str(row[0])
    finally:
        conn.close()


# --------------------------------------------------------------------------- Redis
async def redis_checks(settings: Settings) -> list[Check]:
    """Redis answers, and workers of this protocol version beat lately."""
    queue = settings.queue
    if queue.backend != "redis":
        unused = f'not used (queue.backend = "{queue.backend}": this process renders)'
        return [Check("redis", OK, unused), Check("workers", OK, unused)]
    from bot.queue import protocol
    from bot.queue.redis_backend import (
        Keys,
        RedisUnavailable,
        connect,
        list_workers,
        safe_url,
    )

    where = safe_url(queue.redis_url)
    try:
        client = await connect(queue.redis_url, connect_timeout=5.0)
    except RedisUnavailable as exc:
        return [
            Check("redis", PROBLEM, str(exc), "start Redis, or correct queue.redis_url"),
            _not_checked("workers", "Redis did not answer"),
        ]
    keys = Keys(queue.redis_prefix)
    try:
        info = await client.info("server")
        stored = await client.get(keys.protocol)
        beats = await list_workers(client, keys)
    finally:
        await client.aclose()
    version = info.get("redis_version", "?") if isinstance(info, dict) else "?"
    redis_check = Check("redis", OK, f"{where} answers (Redis {version})")
    if stored is not None:
        theirs = stored.decode() if isinstance(stored, bytes) else str(stored)
        if theirs != str(protocol.PROTOCOL_VERSION):
            redis_check = Check(
                "redis",
                WARN,
                f"{where}: a bot of protocol {theirs} last used the prefix "
                f"{queue.redis_prefix!r}; this one speaks {protocol.PROTOCOL_VERSION}",
                "stop the other bot, or give this one its own queue.redis_prefix",
            )
    return [redis_check, _workers_check(beats, settings, time.time())]


def _workers_check(beats: Sequence[Any], settings: Settings, now: float) -> Check:
    queue = settings.queue
    window = 3 * queue.redis_heartbeat_s
    live = [b for b in beats if now - b.at <= window + 1.0]
    start = "start one or more: python -m bot worker --config worker.toml (on a GPU machine)"
    if not live:
        detail = f"no worker has reported in the last {window:g} s: jobs would wait"
        return Check("workers", PROBLEM, detail, start)
    refused = [b for b in live if not b.compatible]
    usable = [b for b in live if b.compatible]
    described = [f"{b.name} ({b.gpu}, {b.state})" for b in usable]
    if refused:
        from bot.queue.protocol import PROTOCOL_VERSION

        names = [f"{b.name} (protocol {b.version})" for b in refused]
        detail = (
            f"{len(refused)} worker(s) of another release: {_listing(names)}; this bot "
            f"speaks protocol {PROTOCOL_VERSION}"
            + (f"; usable: {_listing(described)}" if usable else "")
        )
        return Check("workers", PROBLEM, detail, "run the same release on the bot and workers")
    notes = [f"{b.name}: {b.problem}" for b in usable if b.problem]
    others = [f"{b.name} serves {b.model}" for b in usable if b.model != settings.model.source]
    if notes or others:
        detail = f"{len(usable)} worker(s): {_listing(described)}; " + "; ".join(notes + others)
        return Check("workers", WARN, detail, "see the workers' logs and their model.source")
    return Check("workers", OK, f"{len(usable)} worker(s): {_listing(described)}")


# --------------------------------------------------------------------------- model
def _hub_cache(cache_dir: str) -> Path:
    if cache_dir:
        return Path(cache_dir).expanduser()
    from huggingface_hub import constants

    return Path(constants.HF_HUB_CACHE)


def _offline(settings: Settings) -> bool:
    flag = os.environ.get("HF_HUB_OFFLINE", "").strip().lower()
    return settings.model.offline or flag in {"1", "true", "yes", "on"}


def _cached_file(repo: str, filename: str, cache_dir: str, revision: str) -> Path | None:
    from huggingface_hub import try_to_load_from_cache

    found = try_to_load_from_cache(
        repo, filename, cache_dir=cache_dir or None, revision=revision or None
    )
    return Path(found) if isinstance(found, str) else None


def folder_size(folder: Path) -> int:
    """Bytes of the files under ``folder`` (links followed: the HF cache links to blobs)."""
    total = 0
    for root, _dirs, files in os.walk(folder):
        for name in files:
            try:
                total += (Path(root) / name).stat().st_size
            except OSError:
                continue
    return total


def missing_components(folder: Path) -> list[str]:
    """The components ``model_index.json`` names that the folder lacks (or, for the
    networks, lacks weights for)."""
    try:
        index = json.loads((folder / "model_index.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return ["model_index.json"]
    missing = []
    for name, spec in index.items():
        if name.startswith("_") or not isinstance(spec, list) or None in spec:
            continue
        part = folder / name
        if not part.is_dir():
            missing.append(name)
        elif name in WEIGHT_COMPONENTS and not any(
            p.suffix in {".safetensors", ".bin"} for p in part.iterdir()
        ):
            missing.append(f"{name} weights")
    return missing


def download_size(files: Iterable[tuple[str, int]], variant: str) -> int:
    """Bytes a diffusers download of a hub repo fetches: ``model_index.json``, each
    component's configs and tokenizer files, and one set of weights per component (the
    ``variant`` files when asked for and present, else the plain safetensors, else .bin)."""
    total = 0
    weights: dict[str, list[tuple[str, int]]] = {}
    for path, size in files:
        if "/" not in path:
            total += size if path == "model_index.json" else 0
            continue
        folder, name = path.split("/", 1)
        if "/" in name:
            continue
        if name.endswith((".safetensors", ".bin")):
            weights.setdefault(folder, []).append((name, size))
        elif name.endswith((".json", ".txt")):
            total += size
    for found in weights.values():
        choices = []
        for ext in (".safetensors", ".bin"):
            if variant:
                choices.append([s for n, s in found if n.endswith(f".{variant}{ext}")])
            choices.append([s for n, s in found if n.endswith(ext) and n.count(".") == 1])
        total += sum(next((c for c in choices if c), []))
    return total


def _hub_download_size(repo: str, ctx: Context) -> int:
    from huggingface_hub import HfApi

    model = ctx.settings.model
    info = HfApi(endpoint=ctx.options.hub_endpoint).model_info(
        repo,
        revision=model.revision or None,
        files_metadata=True,
        timeout=ctx.options.hub_timeout_s,
    )
    files = [(s.rfilename, int(s.size or 0)) for s in (info.siblings or [])]
    return download_size(files, model.variant)


def check_model(ctx: Context) -> Check:
    """The model on this machine: a folder, a file, or the HF cache; else its download."""
    from bot.engine.loading import SourceKind, classify_source
    from bot.errors import ModelLoadError

    model = ctx.settings.model
    source = model.source
    try:
        kind = classify_source(source)
    except ModelLoadError as exc:
        return Check(
            "model",
            PROBLEM,
            str(exc),
            "set model.source to a hub repo id, a folder or a .safetensors file",
        )
    if kind is SourceKind.FOLDER:
        folder = Path(source).expanduser()
        missing = missing_components(folder)
        if missing:
            detail = f"{folder}: diffusers folder without {', '.join(missing)}"
            return Check("model", PROBLEM, detail, "copy the whole model folder again")
        ctx.model_local = True
        return Check("model", OK, f"diffusers folder {folder} ({_gb(folder_size(folder))})")
    if kind is SourceKind.SINGLE_FILE:
        path = Path(source).expanduser()
        ctx.model_local = True
        note = (
            ""
            if model.single_file_config
            else "; configs come from the hub (model.single_file_config unset)"
        )
        return Check("model", OK, f"single file {path} ({_gb(path.stat().st_size)}){note}")
    cache = _hub_cache(model.cache_dir)
    index = _cached_file(source, "model_index.json", model.cache_dir, model.revision)
    if index is not None:
        snapshot = index.parent
        missing = missing_components(snapshot)
        if not missing:
            ctx.model_local = True
            return Check(
                "model",
                OK,
                f"{source} in the Hugging Face cache {cache} ({_gb(folder_size(snapshot))})",
            )
        detail = f"{source} is in the cache {cache} only in part (no {', '.join(missing)})"
        if _offline(ctx.settings):
            return Check(
                "model",
                PROBLEM,
                detail,
                f"download it where the hub is reachable: hf download {source}",
            )
        return Check("model", WARN, detail + ": the bot downloads the rest when it starts")
    fix_download = (
        f"download it first (hf download {source}"
        + (f" --cache-dir {model.cache_dir}" if model.cache_dir else "")
        + ") or point model.source at a local copy"
    )
    estimate = FP16_DOWNLOAD_GB if model.variant == "fp16" else FULL_DOWNLOAD_GB
    if _offline(ctx.settings):
        detail = f"{source} is not in the Hugging Face cache {cache} and the hub is off (offline)"
        return Check("model", PROBLEM, detail, fix_download)
    try:
        size = _hub_download_size(source, ctx)
    except Exception as exc:
        ctx.download_bytes = int(estimate * GB)
        kind_name = type(exc).__name__
        if kind_name in {"RepositoryNotFoundError", "GatedRepoError", "RevisionNotFoundError"}:
            detail = f"{source}: the hub has no such model (or it is gated): {_reason(exc)}"
            return Check("model", PROBLEM, detail, "check model.source and model.revision")
        detail = (
            f"{source} is not in the Hugging Face cache {cache} and the hub cannot be reached "
            f"({_reason(exc)}); the download is about {estimate:.0f} GB"
        )
        return Check(
            "model", PROBLEM, detail, "check the network (or HF_ENDPOINT), or " + fix_download
        )
    ctx.download_bytes = size
    detail = (
        f"{source} is not downloaded yet: the bot downloads {_gb(size)} into {cache} when it starts"
    )
    return Check("model", WARN, detail, fix_download)


def check_model_loads(ctx: Context) -> Check:
    """Through the loading code the bot uses, from local files only."""
    if not ctx.options.load:
        return Check("model-load", WARN, "not tried (--no-load)")
    if not ctx.model_local:
        return Check("model-load", WARN, "not tried: the model is not on this machine")
    from bot.engine.loading import load_pipeline, load_tokenizer, resolve_placement
    from bot.errors import DeviceError, ModelLoadError

    settings = ctx.settings
    model = settings.model.model_copy(update={"offline": True})
    started = time.perf_counter()
    try:
        if settings.queue.backend == "redis":
            load_tokenizer(model)
            took = time.perf_counter() - started
            return Check(
                "model-load", OK, f"its tokenizer loads ({took:.1f} s; jobs render on the workers)"
            )
        placement = resolve_placement(settings.engine)
        pipeline = load_pipeline(model, placement)
    except (ModelLoadError, DeviceError) as exc:
        return Check(
            "model-load", PROBLEM, str(exc), "download the model again, or fix model.* and engine.*"
        )
    took = time.perf_counter() - started
    dtype = str(placement.dtype).removeprefix("torch.")
    del pipeline
    _release_gpu()
    return Check("model-load", OK, f"loads in {took:.1f} s on {placement.device} in {dtype}")


def _release_gpu() -> None:
    import gc

    import torch

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


# --------------------------------------------------------------------------- GPU
def memory_need(pixels: int, images: int) -> float:
    """GB of GPU memory one call of ``images`` images of ``pixels`` each needs (README)."""
    return FIXED_GB + GB_PER_MEGAPIXEL_IMAGE * pixels / 1e6 * images


def check_gpu(settings: Settings) -> Check:
    import torch

    engine = settings.engine
    if settings.queue.backend == "redis":
        return Check("gpu", OK, "not used here: jobs render on the workers (queue.backend = redis)")
    default_px = engine.default_width * engine.default_height
    largest_px = min(engine.max_pixels, engine.max_side * engine.max_side)
    images = max(engine.max_count, settings.queue.micro_batch_images)
    usual, largest = memory_need(default_px, 1), memory_need(largest_px, images)
    cuda = torch.cuda.is_available()
    if not cuda:
        if engine.device == "cuda":
            return Check(
                "gpu",
                PROBLEM,
                'engine.device is "cuda" but no CUDA GPU is available',
                'install a CUDA build of torch and the NVIDIA driver, or set engine.device = "cpu"',
            )
        return Check(
            "gpu",
            WARN,
            "no CUDA GPU: the engine runs on the CPU in float32 (minutes per image)",
            "run on a machine with an NVIDIA GPU and a CUDA build of torch",
        )
    name = torch.cuda.get_device_name(0)
    if engine.device == "cpu":
        return Check(
            "gpu",
            WARN,
            f'{name} is present but engine.device = "cpu"',
            'set engine.device = "auto"',
        )
    free, total = torch.cuda.mem_get_info(0)
    free_gb = free / GB
    detail = (
        f"{name}: {free_gb:.1f} of {total / GB:.1f} GB free; needs about {usual:.0f} GB for "
        f"{engine.default_width}x{engine.default_height}, about {largest:.0f} GB for the "
        f"largest request ({largest_px} pixels x {images} images)"
    )
    if free_gb < usual:
        return Check("gpu", PROBLEM, detail, "free the GPU (other processes?) or use a larger one")
    if free_gb < largest:
        return Check(
            "gpu",
            WARN,
            detail,
            "lower engine.max_count or engine.max_pixels (or queue.micro_batch_images): the "
            "largest requests may run out of memory and fail",
        )
    return Check("gpu", OK, detail)


# --------------------------------------------------------------------------- tagger
def check_tagger(settings: Settings) -> Check:
    from bot.moderation.classifier import (
        MODEL_FILE,
        TAGS_FILE,
        ClassifierUnavailable,
        Tagger,
    )

    config = settings.moderation.classifier
    if not config.source:
        closed = settings.moderation.fail_closed
        effect = (
            "images are withheld outside age-restricted channels (fail_closed)"
            if closed
            else "images are posted unchecked"
        )
        return Check(
            "tagger",
            WARN,
            f"no image classifier (moderation.classifier.source is empty): {effect}, and the "
            "image side of the hard block cannot run",
            'set moderation.classifier.source = "SmilingWolf/wd-vit-tagger-v3"',
        )
    source = config.source
    is_local = Path(source).expanduser().exists()
    if not is_local:
        cached = [
            _cached_file(source, name, config.cache_dir, config.revision)
            for name in (MODEL_FILE, TAGS_FILE)
        ]
        if None in cached:
            detail = f"{source} is not in the Hugging Face cache {_hub_cache(config.cache_dir)}"
            fix = f"download it first: hf download {source} {MODEL_FILE} {TAGS_FILE}"
            if config.offline:
                return Check(
                    "tagger", PROBLEM, detail + " and moderation.classifier.offline is set", fix
                )
            return Check(
                "tagger",
                WARN,
                detail
                + ": the bot downloads it when it starts; its tags are checked once it is here",
                fix,
            )
    try:
        tagger = Tagger.load(
            source,
            revision=config.revision or None,
            cache_dir=config.cache_dir or None,
            offline=True,
            threads=config.threads,
            device=config.device,
            hard_block=config.hard_block,
        )
    except ClassifierUnavailable as exc:
        return Check(
            "tagger", PROBLEM, str(exc), "fix moderation.classifier.source (a WD14 tagger)"
        )
    if tagger.problem is not None:
        return Check("tagger", PROBLEM, f"{source}: {tagger.problem}", "configure a WD14 tagger")
    return Check(
        "tagger",
        OK,
        f"{source} loads; the hard block watches {len(tagger.minor_tags)} minor and "
        f"{len(tagger.sexual_tags)} sexual tags",
    )


# --------------------------------------------------------------------------- disk
def _existing(path: Path) -> Path:
    path = path.absolute()
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def check_disk(ctx: Context) -> Check:
    """Free space where the model is downloaded and where finished images are kept."""
    from bot.outbox import images_folder

    settings = ctx.settings
    places: list[tuple[str, Path, int]] = []
    if not ctx.model_local and not Path(settings.model.source).expanduser().exists():
        places.append(
            ("model cache", _hub_cache(settings.model.cache_dir), ctx.download_bytes or 0)
        )
    images = images_folder(settings)
    kept = folder_size(images) if images.is_dir() else 0
    limit = settings.delivery.keep_mib * MIB
    places.append(("images", images, max(0, limit - kept)))
    by_device: dict[int, tuple[int, int]] = {}
    parts = []
    for label, path, need in places:
        anchor = _existing(path)
        usage = shutil.disk_usage(anchor)
        device = anchor.stat().st_dev
        needed = by_device.get(device, (0, usage.free))[0] + need
        by_device[device] = (needed, usage.free)
        what = (
            f"needs {_gb(need)} more"
            if label == "model cache"
            else (f"keeps up to {settings.delivery.keep_mib} MiB, {kept / MIB:.0f} MiB now")
        )
        parts.append(f"{label} {path}: {_gb(usage.free)} free ({what})")
    short = [(n, f) for n, f in by_device.values() if f < n]
    detail = "; ".join(parts)
    if short:
        need, free = short[0]
        return Check(
            "disk",
            PROBLEM,
            f"{detail}; {_gb(need)} needed on a disk with {_gb(free)} free",
            "free disk space, or move model.cache_dir / delivery.images_dir to a larger disk, "
            "or lower delivery.keep_mib",
        )
    return Check("disk", OK, detail)


# --------------------------------------------------------------------------- runner
async def _guarded(name: str, work: Awaitable[Check]) -> Check:
    """``work``'s check; a failure it did not foresee is a problem line, not a traceback."""
    try:
        return await work
    except DiscordDown:
        raise
    except Exception as exc:
        log.debug("check %s failed", name, exc_info=True)
        return Check(name, PROBLEM, f"the check itself failed: {_reason(exc)}")


async def _in_thread(name: str, fn: Callable[[], Check]) -> Check:
    return await _guarded(name, asyncio.to_thread(fn))


async def run_checks(
    settings: Settings, options: Options | None = None, *, config_path: str | None = None
) -> list[Check]:
    """Every check, in the checklist's order, for a configuration that loaded."""
    ctx = Context(settings, options or Options())
    checks = [check_config(config_path, settings, None)]
    checks += await discord_checks(settings, ctx.options)
    checks.append(await _in_thread("database", lambda: check_database(settings)))
    try:
        checks += await redis_checks(settings)
    except Exception as exc:
        checks.append(Check("redis", PROBLEM, f"the check itself failed: {_reason(exc)}"))
    checks.append(await _in_thread("model", lambda: check_model(ctx)))
    checks.append(await _in_thread("gpu", lambda: check_gpu(settings)))
    checks.append(await _in_thread("model-load", lambda: check_model_loads(ctx)))
    checks.append(await _in_thread("tagger", lambda: check_tagger(settings)))
    checks.append(await _in_thread("disk", lambda: check_disk(ctx)))
    return checks


def doctor(
    config_path: str | None,
    *,
    as_json: bool = False,
    load: bool = True,
    options: Options | None = None,
) -> tuple[int, str]:
    """Load the configuration, run every check; ``(exit status, what to print)``."""
    try:
        settings = load_settings(config_path)
    except ConfigError as exc:
        checks = [check_config(config_path, None, str(exc))]
        text = render_json(checks) if as_json else render_text(checks)
        return EXIT_CONFIG, scrub(text)
    options = options or Options()
    if options.load != load:
        options = Options(
            load, options.discord_timeout_s, options.hub_timeout_s, options.hub_endpoint
        )
    checks = asyncio.run(run_checks(settings, options, config_path=config_path))
    token = settings.discord.token
    secrets = [token.get_secret_value()] if token is not None else []
    text = render_json(checks) if as_json else render_text(checks)
    return exit_status(checks), scrub(text, secrets)
