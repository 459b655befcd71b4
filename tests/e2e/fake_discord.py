"""A local fake Discord: REST API and gateway on one loopback aiohttp server.

End-to-end tests drive the real discord.py client over real sockets against it::

    async with FakeDiscord(heartbeat_interval=0.5) as fake:
        bot = make_bot()  # e.g. commands.Bot(..., guild_ready_timeout=0.05)
        async with running_client(bot, fake):
            handle = await fake.slash_command(
                DEFAULT_GUILD_ID, GENERAL_CHANNEL_ID, ALICE_ID, "imagine", {"prompt": "a cat"}
            )
            assert (await handle.response()).type == CallbackType.DEFERRED_CHANNEL_MESSAGE
            message = await handle.followup()
            assert message.attachments[0].data.startswith(b"\\x89PNG")

What the fake models (see ``shared/reference/discord-testing.md`` for the protocol facts):

* a configurable world: the application, the bot user, guilds with text channels (optionally
  age-restricted), threads, roles and members, plus DM channels created on demand;
* the gateway: HELLO, heartbeats answered and recorded with their receive times, IDENTIFY ->
  READY + GUILD_CREATE, RESUME -> replay of missed events + RESUMED, arbitrary dispatches,
  dropped connections and invalidated sessions;
* the REST routes a bot needs at start-up, for application-command sync, interaction
  callbacks, webhook follow-ups and edits, and channel messages; every request is recorded,
  and unknown routes answer 404 and are listed in :attr:`FakeDiscord.unknown_requests`;
* a model of the messages in each channel (content, embeds, components, attachments with
  their bytes, flags), interaction tokens that can be expired, upload limits;
* faults on purpose: errors for the next requests (:meth:`FakeDiscord.fail_next`) or for a
  period (:meth:`FakeDiscord.fail_for`), as JSON or as a proxy's HTML page (with any
  status, 200 included); 429 rate limits, per route or global, once or for a period;
  requests held without an answer (:meth:`FakeDiscord.hang_next`,
  :meth:`FakeDiscord.hang_for`); on the gateway: refused connections for a period
  (:meth:`FakeDiscord.gateway_down_for`), dropped connections (the client RESUMEs), op 7
  RECONNECT, op 9 INVALID_SESSION (the client IDENTIFYs afresh and gets READY and its
  guilds again). :meth:`FakeDiscord.recover` ends every fault at once.

Every JSON answer carries ``Content-Type: application/json`` exactly (discord.py ignores
bodies with ``; charset=utf-8``).
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import datetime as dt
import hashlib
import itertools
import json
import math
import mimetypes
import re
import secrets
import socket
import time
import traceback
from collections import Counter
from collections.abc import AsyncIterator, Callable, Hashable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from enum import IntEnum
from http import HTTPStatus
from typing import Any, Final, TypeVar

import discord
import yarl
from aiohttp import BodyPartReader, WSMsgType, web
from discord.gateway import DiscordWebSocket
from discord.http import Route

__all__ = [
    "ALICE_ID",
    "API_VERSION",
    "APP_OWNER_ID",
    "BOB_ID",
    "BOT_INVITE_PERMISSIONS",
    "DEFAULT_APPLICATION_ID",
    "DEFAULT_ATTACHMENT_SIZE_LIMIT",
    "DEFAULT_GUILD_ID",
    "DEFAULT_INSTALL_PARAMS",
    "DEFAULT_TOKEN",
    "EPHEMERAL",
    "GENERAL_CHANNEL_ID",
    "LOADING",
    "MODERATOR_ROLE_ID",
    "NSFW_CHANNEL_ID",
    "NSFW_THREAD_ID",
    "THREAD_ID",
    "AttachmentUpload",
    "CallbackRecord",
    "CallbackType",
    "ChannelType",
    "CommandType",
    "DiscordError",
    "FakeAttachment",
    "FakeChannel",
    "FakeDiscord",
    "FakeGuild",
    "FakeMember",
    "FakeMessage",
    "FakeRole",
    "FakeUser",
    "GatewayFrame",
    "HeartbeatRecord",
    "InteractionHandle",
    "InteractionType",
    "OptionType",
    "Permission",
    "RecordedRequest",
    "UploadedFile",
    "default_guild",
    "make_snowflake",
    "running_client",
    "snowflake_time",
]

JSON = dict[str, Any]
T = TypeVar("T")
K = TypeVar("K", bound=Hashable)

API_VERSION: Final = 10
DISCORD_EPOCH_MS: Final = 1_420_070_400_000
EPHEMERAL: Final = 1 << 6
"""Message flag: only the invoking user sees the message."""
LOADING: Final = 1 << 7
"""Message flag: the "Bot is thinking..." placeholder of a deferred response."""
DEFAULT_ATTACHMENT_SIZE_LIMIT: Final = 10 * 1024 * 1024
TOKEN_LIFETIME: Final = dt.timedelta(minutes=15)
MAX_CONTENT_LENGTH: Final = 2000
MAX_EMBEDS: Final = 10
MAX_FILES: Final = 10

DEFAULT_TOKEN: Final = "fake-bot-token.abc.xyz"
DEFAULT_APPLICATION_ID: Final = 900_000_000_000_000_001
"""The application id; as on Discord, also the bot user's id."""
APP_OWNER_ID: Final = 900_000_000_000_000_002
DEFAULT_GUILD_ID: Final = 800_000_000_000_000_001
GENERAL_CHANNEL_ID: Final = 800_000_000_000_000_010
NSFW_CHANNEL_ID: Final = 800_000_000_000_000_011
THREAD_ID: Final = 800_000_000_000_000_012
"""A public thread in #general."""
NSFW_THREAD_ID: Final = 800_000_000_000_000_013
"""A public thread in the age-restricted channel (inherits the flag)."""
MODERATOR_ROLE_ID: Final = 800_000_000_000_000_020
ALICE_ID: Final = 700_000_000_000_000_001
"""A plain member of the default guild."""
BOB_ID: Final = 700_000_000_000_000_002
"""A member of the default guild with the Moderator role (manage messages)."""
BOT_INVITE_PERMISSIONS: Final = 274_878_024_704
"""The permissions integer of the README's invite link (View Channels, Send Messages, Send
Messages in Threads, Embed Links, Attach Files, Read Message History)."""
DEFAULT_INSTALL_PARAMS: Final = {
    "scopes": ["bot", "applications.commands"],
    "permissions": str(BOT_INVITE_PERMISSIONS),
}
"""The application's in-app install link (``install_params``) unless told otherwise."""


class Permission:
    """Permission bits used by the fake (a subset of Discord's)."""

    ADD_REACTIONS: Final = 1 << 6
    ADMINISTRATOR: Final = 1 << 3
    VIEW_CHANNEL: Final = 1 << 10
    SEND_MESSAGES: Final = 1 << 11
    MANAGE_MESSAGES: Final = 1 << 13
    EMBED_LINKS: Final = 1 << 14
    ATTACH_FILES: Final = 1 << 15
    READ_MESSAGE_HISTORY: Final = 1 << 16
    USE_EXTERNAL_EMOJIS: Final = 1 << 18
    USE_APPLICATION_COMMANDS: Final = 1 << 31
    SEND_MESSAGES_IN_THREADS: Final = 1 << 38
    ALL: Final = (1 << 51) - 1

    MEMBER_DEFAULT: Final = (
        VIEW_CHANNEL
        | SEND_MESSAGES
        | EMBED_LINKS
        | ATTACH_FILES
        | READ_MESSAGE_HISTORY
        | ADD_REACTIONS
        | USE_EXTERNAL_EMOJIS
        | USE_APPLICATION_COMMANDS
        | SEND_MESSAGES_IN_THREADS
    )
    BOT_DEFAULT: Final = MEMBER_DEFAULT


class ChannelType(IntEnum):
    GUILD_TEXT = 0
    DM = 1
    GUILD_VOICE = 2
    GUILD_CATEGORY = 4
    GUILD_ANNOUNCEMENT = 5
    PUBLIC_THREAD = 11
    PRIVATE_THREAD = 12


class InteractionType(IntEnum):
    PING = 1
    APPLICATION_COMMAND = 2
    MESSAGE_COMPONENT = 3
    AUTOCOMPLETE = 4
    MODAL_SUBMIT = 5


class CallbackType(IntEnum):
    """Interaction callback (response) types."""

    PONG = 1
    CHANNEL_MESSAGE = 4
    DEFERRED_CHANNEL_MESSAGE = 5
    DEFERRED_UPDATE_MESSAGE = 6
    UPDATE_MESSAGE = 7
    AUTOCOMPLETE_RESULT = 8
    MODAL = 9
    LAUNCH_ACTIVITY = 12


class OptionType(IntEnum):
    SUB_COMMAND = 1
    SUB_COMMAND_GROUP = 2
    STRING = 3
    INTEGER = 4
    BOOLEAN = 5
    USER = 6
    CHANNEL = 7
    ROLE = 8
    MENTIONABLE = 9
    NUMBER = 10
    ATTACHMENT = 11


class CommandType(IntEnum):
    CHAT_INPUT = 1
    USER = 2
    MESSAGE = 3


_CURRENT_RECORD: contextvars.ContextVar[RecordedRequest] = contextvars.ContextVar(
    "fake_discord_request"
)
_THREAD_TYPES: Final = (ChannelType.PUBLIC_THREAD, ChannelType.PRIVATE_THREAD)
_snowflake_counter = itertools.count()


def _utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def make_snowflake(at: dt.datetime | None = None) -> int:
    """A unique Discord snowflake whose timestamp is ``at`` (default: now).

    discord.py derives ``created_at`` (and ``Interaction.expires_at``) from ids, so the ids
    the fake hands out carry real times.
    """
    moment = at if at is not None else _utcnow()
    ms = int(moment.timestamp() * 1000) - DISCORD_EPOCH_MS
    return (ms << 22) | (1 << 17) | (next(_snowflake_counter) % 4096)


def snowflake_time(snowflake: int) -> dt.datetime:
    return dt.datetime.fromtimestamp(((snowflake >> 22) + DISCORD_EPOCH_MS) / 1000, tz=dt.UTC)


def _iso(moment: dt.datetime) -> str:
    return moment.isoformat()


# --------------------------------------------------------------------------------------------
# The world
# --------------------------------------------------------------------------------------------


@dataclass
class FakeUser:
    id: int
    username: str
    global_name: str | None = None
    bot: bool = False
    avatar: str | None = None

    def to_payload(self) -> JSON:
        return {
            "id": str(self.id),
            "username": self.username,
            "discriminator": "0",
            "global_name": self.global_name,
            "avatar": self.avatar,
            "bot": self.bot,
            "public_flags": 0,
            "flags": 0,
        }


@dataclass
class FakeRole:
    id: int
    name: str
    permissions: int = 0
    position: int = 0
    color: int = 0

    def to_payload(self) -> JSON:
        return {
            "id": str(self.id),
            "name": self.name,
            "color": self.color,
            "colors": {"primary_color": self.color},
            "hoist": False,
            "icon": None,
            "unicode_emoji": None,
            "position": self.position,
            "permissions": str(self.permissions),
            "managed": False,
            "mentionable": False,
            "flags": 0,
        }


@dataclass
class FakeChannel:
    """A guild text channel, a thread (``parent_id`` set, thread type) or a DM channel.

    A thread's age restriction comes from its parent, as on Discord; its own ``nsfw`` is
    ignored.
    """

    id: int
    name: str
    type: ChannelType = ChannelType.GUILD_TEXT
    nsfw: bool = False
    parent_id: int | None = None
    position: int = 0
    topic: str | None = None
    owner_id: int | None = None
    bot_permissions: int | None = None
    """The bot's permissions here; ``None`` means the guild's ``bot_permissions``."""
    recipient: FakeUser | None = None
    """The other user of a DM channel."""

    @property
    def is_thread(self) -> bool:
        return self.type in _THREAD_TYPES


@dataclass
class FakeMember:
    user: FakeUser
    roles: list[int] = field(default_factory=list)
    nick: str | None = None
    permissions: int | None = None
    """Fixed permissions; ``None`` computes them from @everyone and the roles."""
    joined_at: dt.datetime = field(default_factory=lambda: dt.datetime(2024, 1, 1, tzinfo=dt.UTC))


@dataclass
class FakeGuild:
    id: int
    name: str
    channels: list[FakeChannel] = field(default_factory=list)
    roles: list[FakeRole] = field(default_factory=list)
    members: list[FakeMember] = field(default_factory=list)
    owner_id: int | None = None
    bot_permissions: int = Permission.BOT_DEFAULT
    locale: str = "en-US"
    everyone_permissions: int = Permission.MEMBER_DEFAULT

    def __post_init__(self) -> None:
        if self.role(self.id) is None:
            self.roles.insert(0, FakeRole(self.id, "@everyone", self.everyone_permissions))

    def channel(self, channel_id: int) -> FakeChannel | None:
        return next((c for c in self.channels if c.id == channel_id), None)

    def member(self, user_id: int) -> FakeMember | None:
        return next((m for m in self.members if m.user.id == user_id), None)

    def role(self, role_id: int) -> FakeRole | None:
        return next((r for r in self.roles if r.id == role_id), None)

    def permissions_for(self, member: FakeMember) -> int:
        if member.permissions is not None:
            return member.permissions
        if member.user.id == self.owner_id:
            return Permission.ALL
        value = 0
        for role_id in [self.id, *member.roles]:
            role = self.role(role_id)
            if role is not None:
                value |= role.permissions
        return Permission.ALL if value & Permission.ADMINISTRATOR else value

    def is_nsfw(self, channel: FakeChannel) -> bool:
        if channel.is_thread and channel.parent_id is not None:
            parent = self.channel(channel.parent_id)
            return parent is not None and parent.nsfw
        return channel.nsfw


def default_guild() -> FakeGuild:
    """One guild: #general, an age-restricted #nsfw-art, a thread in each, Alice and Bob."""
    alice = FakeUser(ALICE_ID, "alice", "Alice")
    bob = FakeUser(BOB_ID, "bob", "Bob")
    return FakeGuild(
        id=DEFAULT_GUILD_ID,
        name="Test Server",
        owner_id=BOB_ID,
        channels=[
            FakeChannel(GENERAL_CHANNEL_ID, "general", position=0),
            FakeChannel(NSFW_CHANNEL_ID, "nsfw-art", nsfw=True, position=1),
            FakeChannel(
                THREAD_ID,
                "general-thread",
                ChannelType.PUBLIC_THREAD,
                parent_id=GENERAL_CHANNEL_ID,
                owner_id=ALICE_ID,
            ),
            FakeChannel(
                NSFW_THREAD_ID,
                "nsfw-thread",
                ChannelType.PUBLIC_THREAD,
                parent_id=NSFW_CHANNEL_ID,
                owner_id=ALICE_ID,
            ),
        ],
        roles=[FakeRole(MODERATOR_ROLE_ID, "Moderator", Permission.MANAGE_MESSAGES, position=1)],
        members=[FakeMember(alice), FakeMember(bob, roles=[MODERATOR_ROLE_ID])],
    )


# --------------------------------------------------------------------------------------------
# Records
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class UploadedFile:
    """A file part of a multipart request (``files[n]``)."""

    field: str
    filename: str
    data: bytes
    content_type: str | None

    @property
    def index(self) -> int | None:
        match = re.fullmatch(r"files\[(\d+)\]", self.field)
        return int(match.group(1)) if match else None


@dataclass(frozen=True)
class AttachmentUpload:
    """A file a simulated user attaches to an ATTACHMENT command option."""

    filename: str
    data: bytes
    content_type: str | None = None


@dataclass
class RecordedRequest:
    """One HTTP request the fake received, and how it answered."""

    method: str
    path: str
    """The full path, e.g. ``/api/v10/channels/1/messages``."""
    route: str
    """The path relative to the REST base, e.g. ``/channels/1/messages``."""
    query: dict[str, str]
    headers: dict[str, str]
    """Request headers, without ``Authorization`` (see :attr:`auth`)."""
    auth: str | None
    """``"bot"`` for ``Authorization: Bot <the token>``, ``"invalid"`` for any other value,
    ``None`` when the header is absent."""
    json: Any
    """The JSON body, or ``payload_json`` of a multipart body; ``None`` otherwise."""
    files: list[UploadedFile]
    body: bytes
    received_at: float
    """``time.monotonic()`` when the request arrived."""
    status: int = 0
    response: Any = None


@dataclass(frozen=True)
class HeartbeatRecord:
    received_at: float
    """``time.monotonic()`` when the heartbeat arrived."""
    sequence: int | None
    connection: int
    acked: bool


@dataclass(frozen=True)
class GatewayFrame:
    direction: str
    """``"sent"`` (fake -> client) or ``"received"``."""
    connection: int
    payload: JSON
    at: float

    @property
    def op(self) -> int | None:
        op = self.payload.get("op")
        return op if isinstance(op, int) else None

    @property
    def event(self) -> str | None:
        event = self.payload.get("t")
        return event if isinstance(event, str) else None


@dataclass
class FakeAttachment:
    id: int
    filename: str
    data: bytes
    url: str
    content_type: str | None = None
    description: str | None = None
    ephemeral: bool = False

    @property
    def size(self) -> int:
        return len(self.data)

    def to_payload(self) -> JSON:
        payload: JSON = {
            "id": str(self.id),
            "filename": self.filename,
            "size": self.size,
            "url": self.url,
            "proxy_url": self.url,
            "content_type": self.content_type,
        }
        if self.description is not None:
            payload["description"] = self.description
        if self.ephemeral:
            payload["ephemeral"] = True
        return payload


@dataclass
class FakeMessage:
    """A message in the fake's model; edits update it in place."""

    id: int
    channel_id: int
    guild_id: int | None
    author: FakeUser
    content: str = ""
    embeds: list[JSON] = field(default_factory=list)
    components: list[JSON] = field(default_factory=list)
    attachments: list[FakeAttachment] = field(default_factory=list)
    flags: int = 0
    type: int = 0
    webhook_id: int | None = None
    application_id: int | None = None
    interaction_metadata: JSON | None = None
    interaction_id: int | None = None
    """The interaction this message answers (original response or follow-up)."""
    extra: JSON = field(default_factory=dict)
    """Other fields the sender set (``message_reference``, ``allowed_mentions``, ...)."""
    edited_at: dt.datetime | None = None
    edits: list[JSON] = field(default_factory=list)
    """The raw payload of every edit, in order."""
    deleted: bool = False

    @property
    def ephemeral(self) -> bool:
        return bool(self.flags & EPHEMERAL)

    @property
    def loading(self) -> bool:
        """Whether this is still the "thinking..." placeholder of a deferred response."""
        return bool(self.flags & LOADING)

    @property
    def created_at(self) -> dt.datetime:
        return snowflake_time(self.id)

    def iter_components(self) -> Iterator[JSON]:
        """Every component, depth first (action rows, containers, labels, sections)."""
        yield from _walk_components(self.components)

    def component(self, custom_id: str) -> JSON | None:
        return next((c for c in self.iter_components() if c.get("custom_id") == custom_id), None)

    @property
    def custom_ids(self) -> list[str]:
        return [c["custom_id"] for c in self.iter_components() if "custom_id" in c]

    def to_payload(self) -> JSON:
        payload: JSON = {
            **self.extra,
            "id": str(self.id),
            "channel_id": str(self.channel_id),
            "author": self.author.to_payload(),
            "content": self.content,
            "timestamp": _iso(self.created_at),
            "edited_timestamp": _iso(self.edited_at) if self.edited_at else None,
            "tts": False,
            "mention_everyone": False,
            "mentions": [],
            "mention_roles": [],
            "attachments": [a.to_payload() for a in self.attachments],
            "embeds": self.embeds,
            "components": self.components,
            "pinned": False,
            "type": self.type,
            "flags": self.flags,
        }
        if self.guild_id is not None:
            payload["guild_id"] = str(self.guild_id)
        if self.webhook_id is not None:
            payload["webhook_id"] = str(self.webhook_id)
        if self.application_id is not None:
            payload["application_id"] = str(self.application_id)
        if self.interaction_metadata is not None:
            payload["interaction_metadata"] = self.interaction_metadata
        return payload


def _walk_components(components: Sequence[JSON]) -> Iterator[JSON]:
    for component in components:
        yield component
        yield from _walk_components(component.get("components") or [])
        for key in ("component", "accessory"):
            child = component.get(key)
            if isinstance(child, dict):
                yield from _walk_components([child])


@dataclass
class CallbackRecord:
    """An accepted interaction callback (the initial response)."""

    type: int
    data: JSON
    files: list[UploadedFile]
    message_id: int | None
    """The message it created or updated (types 4, 5, 6, 7)."""
    request: RecordedRequest

    @property
    def ephemeral(self) -> bool:
        return bool(int(self.data.get("flags") or 0) & EPHEMERAL)

    @property
    def deferred(self) -> bool:
        return self.type in (
            CallbackType.DEFERRED_CHANNEL_MESSAGE,
            CallbackType.DEFERRED_UPDATE_MESSAGE,
        )

    @property
    def custom_id(self) -> str | None:
        """The modal's custom id for a MODAL response."""
        value = self.data.get("custom_id")
        return value if isinstance(value, str) else None


class DiscordError(Exception):
    """Raised inside handlers: answered as a Discord-style JSON error."""

    def __init__(self, status: int, code: int, message: str, *, errors: JSON | None = None) -> None:
        super().__init__(f"{status} {code} {message}")
        self.status = status
        self.code = code
        self.message = message
        self.errors = errors

    def body(self) -> JSON:
        body: JSON = {"message": self.message, "code": self.code}
        if self.errors is not None:
            body["errors"] = self.errors
        return body


def _unauthorized() -> DiscordError:
    return DiscordError(401, 0, "401: Unauthorized")


def _unknown(kind: str, code: int) -> DiscordError:
    return DiscordError(404, code, f"Unknown {kind}")


def _invalid_form(field_name: str, message: str) -> DiscordError:
    return DiscordError(
        400,
        50035,
        "Invalid Form Body",
        errors={field_name: {"_errors": [{"code": "BASE_TYPE_INVALID", "message": message}]}},
    )


def _json_response(
    body: Any, *, status: int = 200, headers: Mapping[str, str] | None = None
) -> web.Response:
    all_headers = {"Content-Type": "application/json"}
    all_headers.update(headers or {})
    return web.Response(status=status, body=json.dumps(body).encode(), headers=all_headers)


def _html_page(status: int) -> str:
    """An HTML page as a proxy in front of the API sends it: Cloudflare's error page for an
    error status, its "Just a moment..." challenge page for 200."""
    if status == 200:
        return (
            '<!DOCTYPE html><html lang="en-US"><head><title>Just a moment...</title>'
            "</head>\n<body>\n<noscript>Enable JavaScript and cookies to continue</noscript>"
            "\n</body></html>\n"
        )
    try:
        reason = HTTPStatus(status).phrase
    except ValueError:
        reason = "Error"
    return (
        f"<html>\r\n<head><title>{status} {reason}</title></head>\r\n<body>\r\n"
        f"<center><h1>{status} {reason}</h1></center>\r\n<hr><center>cloudflare</center>\r\n"
        "</body>\r\n</html>\r\n"
    )


@dataclass
class _InjectedFailure:
    """A failure the fake answers instead of the route's handler (or a hang before it).

    Count-based (``remaining`` matching requests) or time-based (every matching request
    until the monotonic ``until``).
    """

    method: str
    pattern: re.Pattern[str]
    status: int = 500
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)
    remaining: int | None = 1
    until: float | None = None
    html: bool = False
    hang: bool = False
    rate_limit: tuple[float, bool] | None = None
    """``(retry_after, is_global)``: the rate-limit headers are built at answer time."""
    uploads_only: bool = False
    """Only requests that carry files (an attachment service's outage)."""

    def expired(self, now: float) -> bool:
        return self.until is not None and now >= self.until

    def matches(self, record: RecordedRequest) -> bool:
        if self.uploads_only and not record.files:
            return False
        return self.method in (record.method, "*") and bool(self.pattern.fullmatch(record.route))

    def response(self) -> web.Response:
        headers = dict(self.headers)
        if self.rate_limit is not None:
            headers.update(_rate_limit_headers(self.pattern.pattern, *self.rate_limit))
        if self.html:
            body = self.body if isinstance(self.body, str) else _html_page(self.status)
            headers.setdefault("Content-Type", "text/html; charset=UTF-8")
            return web.Response(status=self.status, body=body.encode(), headers=headers)
        body = self.body
        if body is None:
            body = {"message": f"injected {self.status}", "code": 0}
        return _json_response(body, status=self.status, headers=headers)


def _rate_limit_body(retry_after: float, is_global: bool) -> JSON:
    return {
        "message": "You are being rate limited.",
        "retry_after": retry_after,
        "global": is_global,
    }


def _rate_limit_headers(bucket_key: str, retry_after: float, is_global: bool) -> dict[str, str]:
    """The headers of Discord's 429: ``Via`` (discord.py treats a 429 without it as a
    Cloudflare ban), ``Retry-After`` in whole seconds, and the scope; a per-route limit also
    names its bucket and when it resets."""
    headers = {
        "Via": "1.1 google",
        "Retry-After": str(max(1, math.ceil(retry_after))),
        "X-RateLimit-Scope": "global" if is_global else "user",
    }
    if is_global:
        headers["X-RateLimit-Global"] = "true"
    else:
        headers.update(
            {
                "X-RateLimit-Bucket": hashlib.sha1(bucket_key.encode()).hexdigest()[:32],
                "X-RateLimit-Limit": "5",
                "X-RateLimit-Remaining": "0",
                "X-RateLimit-Reset": f"{time.time() + retry_after:.3f}",
                "X-RateLimit-Reset-After": f"{retry_after:.3f}",
            }
        )
    return headers


# --------------------------------------------------------------------------------------------
# Interactions
# --------------------------------------------------------------------------------------------


class InteractionHandle:
    """A simulated user's interaction: its payload, and what the bot answered."""

    def __init__(
        self,
        fake: FakeDiscord,
        payload: JSON,
        *,
        guild_id: int | None,
        channel_id: int,
        user: FakeUser,
        source_message_id: int | None,
    ) -> None:
        self._fake = fake
        self.payload = payload
        """The INTERACTION_CREATE ``d`` sent to the bot."""
        self.id = int(payload["id"])
        self.token: str = payload["token"]
        self.type = InteractionType(payload["type"])
        self.guild_id = guild_id
        self.channel_id = channel_id
        self.user = user
        self.source_message_id = source_message_id
        """The message a component was used on (or a modal was opened from)."""
        self.attachment_size_limit = int(payload["attachment_size_limit"])
        self.dispatched_at = time.monotonic()
        self.expired = False
        self.callback: CallbackRecord | None = None
        self.original_message_id: int | None = None
        self.followup_message_ids: list[int] = []
        self._loading_original = False

    def __repr__(self) -> str:
        return f"<InteractionHandle id={self.id} type={self.type.name} user={self.user.username}>"

    @property
    def created_at(self) -> dt.datetime:
        return snowflake_time(self.id)

    def expire(self) -> None:
        """Expire the token now: webhook calls fail as after Discord's 15 minutes."""
        self.expired = True
        self._fake._bump()

    @property
    def token_valid(self) -> bool:
        return not self.expired and _utcnow() < self.created_at + TOKEN_LIFETIME

    @property
    def original_message(self) -> FakeMessage | None:
        if self.original_message_id is None:
            return None
        return self._fake._messages.get(self.original_message_id)

    @property
    def followups(self) -> list[FakeMessage]:
        """Messages sent with ``POST /webhooks/{app}/{token}``, in order.

        After a deferred (type 5) response, Discord turns the first follow-up into the
        original response; that message is listed here too.
        """
        return [self._fake._messages[i] for i in self.followup_message_ids]

    @property
    def requests(self) -> list[RecordedRequest]:
        """Requests that used this interaction's id or token."""
        return [r for r in self._fake.requests if self.token in r.path or str(self.id) in r.path]

    async def response(
        self,
        timeout: float = 5.0,  # noqa: ASYNC109 - the waiting helpers take plain timeouts
    ) -> CallbackRecord:
        """Wait for the initial response (callback)."""
        return await self._fake.wait_for(
            lambda: self.callback, timeout, f"a response to interaction {self.id}"
        )

    async def modal(
        self,
        timeout: float = 5.0,  # noqa: ASYNC109 - the waiting helpers take plain timeouts
    ) -> CallbackRecord:
        """Wait for the initial response and check that it opened a modal."""
        record = await self.response(timeout)
        if record.type != CallbackType.MODAL:
            raise AssertionError(f"expected a modal response, got type {record.type}")
        return record

    async def followup(
        self,
        index: int = 0,
        timeout: float = 5.0,  # noqa: ASYNC109 - the waiting helpers take plain timeouts
    ) -> FakeMessage:
        """Wait for follow-up number ``index`` (0-based)."""
        return await self._fake.wait_for(
            lambda: self.followups[index] if len(self.followups) > index else None,
            timeout,
            f"follow-up #{index} of interaction {self.id}",
        )

    async def original(
        self,
        predicate: Callable[[FakeMessage], bool] | None = None,
        timeout: float = 5.0,  # noqa: ASYNC109 - the waiting helpers take plain timeouts
    ) -> FakeMessage:
        """Wait for the original response message (optionally until ``predicate`` holds)."""

        def check() -> FakeMessage | None:
            message = self.original_message
            if message is None or (predicate is not None and not predicate(message)):
                return None
            return message

        return await self._fake.wait_for(check, timeout, f"original of interaction {self.id}")

    def messages(self) -> list[FakeMessage]:
        """The original response (if any) and the follow-ups."""
        ids = [self.original_message_id] if self.original_message_id else []
        ids += [i for i in self.followup_message_ids if i not in ids]
        return [self._fake._messages[i] for i in ids]


# --------------------------------------------------------------------------------------------
# Gateway state
# --------------------------------------------------------------------------------------------


@dataclass(eq=False)
class _Connection:
    id: int
    ws: web.WebSocketResponse
    request: web.Request
    query: dict[str, str]
    opened_at: float
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    session: _Session | None = None
    closed_at: float | None = None


@dataclass(eq=False)
class _Session:
    session_id: str
    shard: tuple[int, int] = (0, 1)
    seq: int = 0
    connection: _Connection | None = None
    backlog: list[JSON] = field(default_factory=list)
    invalid: bool = False


def shard_for(guild_id: int, shard_count: int) -> int:
    """The shard Discord puts a guild on."""
    return (guild_id >> 22) % shard_count


def _shard_of(identify: JSON) -> tuple[int, int]:
    shard = identify.get("shard")
    if isinstance(shard, list) and len(shard) == 2:
        return int(shard[0]), int(shard[1])
    return 0, 1


# --------------------------------------------------------------------------------------------
# The fake
# --------------------------------------------------------------------------------------------


class FakeDiscord:
    """Fake Discord REST API + gateway on ``127.0.0.1`` (a free port), for one bot.

    Use as ``async with FakeDiscord(...) as fake``; point discord.py at it with
    :meth:`patch_discord` (or :func:`running_client`, which does it too).

    Args:
        token: the bot token the REST API and the gateway accept.
        application_id: the application id (the bot user's id unless ``bot_user`` is given).
        bot_user: the bot's user.
        guilds: the world; default: :func:`default_guild`.
        users: extra users (e.g. for DMs with people who share no guild).
        heartbeat_interval: seconds, sent in HELLO (Discord's is 41.25).
        attachment_size_limit: the per-file upload limit sent with each interaction.
        ack_deadline: seconds within which a callback must arrive (Discord: 3); later ones
            answer ``404 Unknown interaction`` (10062). ``None`` disables the check.
        expired_token_status: the HTTP status for webhook calls with an expired or unknown
            interaction token (body ``{"code": 50027, "message": "Invalid Webhook Token"}``).
        strict: leaving the context fails the test if any request hit an unknown route or a
            handler of the fake crashed.
        install_params: the application's in-app install link (``scopes``, ``permissions``)
            as ``GET /oauth2/applications/@me`` reports it; ``None``: none is set.

    The bot's own place in each guild, as the REST API shows it (``GET /users/@me/guilds``,
    ``GET /guilds/{id}/members/{bot id}``, ``GET /guilds/{id}/roles``): an explicit member
    of ``guild.members`` when there is one, else a member holding the managed role Discord
    creates at invite, whose permissions are ``guild.bot_permissions``. Its guild
    permissions are then computed as Discord does (@everyone's and its roles' together; all
    for the owner or with Administrator). Set :attr:`guild_list_permissions` to ``False`` to
    leave ``permissions`` out of the guild list.
    """

    def __init__(
        self,
        *,
        token: str = DEFAULT_TOKEN,
        application_id: int = DEFAULT_APPLICATION_ID,
        bot_user: FakeUser | None = None,
        guilds: Sequence[FakeGuild] | None = None,
        users: Sequence[FakeUser] = (),
        heartbeat_interval: float = 41.25,
        attachment_size_limit: int = DEFAULT_ATTACHMENT_SIZE_LIMIT,
        ack_deadline: float | None = 3.0,
        expired_token_status: int = 401,
        strict: bool = True,
        host: str = "127.0.0.1",
        install_params: JSON | None = DEFAULT_INSTALL_PARAMS,
    ) -> None:
        self.token = token
        self.install_params = None if install_params is None else dict(install_params)
        self.guild_list_permissions = True
        """``False``: ``GET /users/@me/guilds`` leaves out each guild's ``permissions``."""
        self._bot_role_ids: dict[int, int] = {}
        self.application_id = application_id
        self.bot_user = bot_user or FakeUser(application_id, "animagine-test", bot=True)
        self.app_owner = FakeUser(APP_OWNER_ID, "app-owner")
        self.guilds: dict[int, FakeGuild] = {
            g.id: g for g in (guilds if guilds is not None else [default_guild()])
        }
        self.heartbeat_interval = heartbeat_interval
        self.ack_heartbeats = True
        """Set to ``False`` to stop answering heartbeats (a zombied connection)."""
        self.attachment_size_limit = attachment_size_limit
        self.ack_deadline = ack_deadline
        self.expired_token_status = expired_token_status
        self.strict = strict
        self.host = host
        self.port: int | None = None

        self.requests: list[RecordedRequest] = []
        """Every HTTP request (not the gateway upgrade), in arrival order."""
        self.unknown_requests: list[RecordedRequest] = []
        self.heartbeats: list[HeartbeatRecord] = []
        self.gateway_log: list[GatewayFrame] = []
        self.identifies: list[JSON] = []
        """IDENTIFY payloads (``d``), token removed."""
        self.resumes: list[JSON] = []
        """Accepted RESUME payloads (``d``), token removed."""
        self.internal_errors: list[str] = []

        self._users: dict[int, FakeUser] = {u.id: u for u in users}
        self._users[self.bot_user.id] = self.bot_user
        self._users[self.app_owner.id] = self.app_owner
        for guild in self.guilds.values():
            for member in guild.members:
                self._users.setdefault(member.user.id, member.user)
        self._dm_channels: dict[int, FakeChannel] = {}
        self._messages: dict[int, FakeMessage] = {}
        self._channel_messages: dict[int, list[int]] = {}
        self._uploads: dict[int, FakeAttachment] = {}
        self._global_commands: list[JSON] = []
        self._guild_commands: dict[int, list[JSON]] = {}
        self._command_ids: dict[tuple[int | None, str, int], int] = {}
        self._interactions: dict[int, InteractionHandle] = {}
        self._tokens: dict[str, InteractionHandle] = {}
        self._failures: list[_InjectedFailure] = []
        self._held: list[RecordedRequest] = []
        self._gateway_down_until = 0.0
        self._gateway_failure = _InjectedFailure("GET", re.compile("/gateway"))
        self.refused_gateway_connections = 0
        self.dropped_requests = 0  # requests whose client went away while sending
        """Websocket connections refused by :meth:`gateway_down_for`."""
        self._recoveries = 0
        self._stopping = False
        self._connections: list[_Connection] = []
        self._connection_ids = itertools.count(1)
        self._session: _Session | None = None  # shard 0's (the only one unless sharded)
        self._shards: dict[int, _Session] = {}  # shard id -> its session
        self.recommended_shards = 1
        """What ``GET /gateway/bot`` recommends (``discord.shards = "auto"`` follows it)."""
        self._changed = asyncio.Event()
        self._runner: web.AppRunner | None = None

    # ---- lifecycle -------------------------------------------------------------------------

    async def __aenter__(self) -> FakeDiscord:
        await self.start()
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, *_: object) -> None:
        await self.stop()
        if exc_type is None and self.strict:
            self.assert_healthy()

    async def start(self) -> None:
        self._stopping = False
        app = web.Application(middlewares=[self._middleware], client_max_size=1 << 30)
        api = f"/api/v{API_VERSION}"
        commands = f"{api}/applications/{{app_id}}"
        hook = f"{api}/webhooks/{{app_id}}/{{token}}"
        channel = f"{api}/channels/{{channel_id}}"
        routes = [
            ("GET", "/gateway", self._gateway),
            ("GET", f"{api}/users/@me", self._get_me),
            ("GET", f"{api}/users/@me/guilds", self._get_my_guilds),
            ("GET", f"{api}/guilds/{{guild_id}}/members/{{user_id}}", self._get_member),
            ("GET", f"{api}/guilds/{{guild_id}}/roles", self._get_roles),
            ("GET", f"{api}/oauth2/applications/@me", self._get_application),
            ("GET", f"{api}/applications/@me", self._get_application),
            ("GET", f"{api}/gateway", self._get_gateway),
            ("GET", f"{api}/gateway/bot", self._get_gateway),
            ("GET", f"{commands}/commands", self._get_commands),
            ("PUT", f"{commands}/commands", self._put_commands),
            ("GET", f"{commands}/guilds/{{guild_id}}/commands", self._get_commands),
            ("PUT", f"{commands}/guilds/{{guild_id}}/commands", self._put_commands),
            ("POST", f"{api}/interactions/{{interaction_id}}/{{token}}/callback", self._callback),
            ("POST", hook, self._webhook_post),
            ("GET", f"{hook}/messages/{{message_id}}", self._webhook_get),
            ("PATCH", f"{hook}/messages/{{message_id}}", self._webhook_patch),
            ("DELETE", f"{hook}/messages/{{message_id}}", self._webhook_delete),
            ("POST", f"{api}/users/@me/channels", self._create_dm),
            ("GET", channel, self._get_channel),
            ("POST", f"{channel}/typing", self._typing),
            ("GET", f"{channel}/messages", self._get_history),
            ("POST", f"{channel}/messages", self._post_channel_message),
            ("GET", f"{channel}/messages/{{message_id}}", self._get_channel_message),
            ("PATCH", f"{channel}/messages/{{message_id}}", self._patch_channel_message),
            ("DELETE", f"{channel}/messages/{{message_id}}", self._delete_channel_message),
            ("GET", "/attachments/{channel_id}/{attachment_id}/{filename}", self._get_attachment),
        ]
        for method, path, handler in routes:
            app.router.add_route(method, path, handler)
        app.router.add_route("*", "/{tail:.*}", self._unknown_route)

        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        runner = web.AppRunner(app, handle_signals=False, access_log=None, shutdown_timeout=1.0)
        try:
            sock.bind((self.host, 0))
            sock.listen(128)
            sock.setblocking(False)
            await runner.setup()
            await web.SockSite(runner, sock).start()
        except BaseException:
            await runner.cleanup()
            sock.close()
            raise
        self.port = int(sock.getsockname()[1])
        self._runner = runner

    async def stop(self) -> None:
        """Close every gateway connection, then the server (held requests are closed)."""
        self._stopping = True
        for conn in list(self._connections):
            if not conn.ws.closed:
                with contextlib.suppress(Exception):
                    await conn.ws.close(code=1001, message=b"fake discord shutting down")
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    def assert_healthy(self) -> None:
        """Fail if a request hit an unknown route or a handler of the fake crashed."""
        problems = [f"unknown route: {r.method} {r.path}" for r in self.unknown_requests]
        problems += [f"fake discord error: {e}" for e in self.internal_errors]
        if problems:
            raise AssertionError("\n".join(problems))

    # ---- addresses -------------------------------------------------------------------------

    @property
    def base_url(self) -> str:
        if self.port is None:
            raise RuntimeError("FakeDiscord is not started")
        return f"http://{self.host}:{self.port}"

    @property
    def rest_base(self) -> str:
        """The value for ``discord.http.Route.BASE``."""
        return f"{self.base_url}/api/v{API_VERSION}"

    @property
    def gateway_url(self) -> str:
        """The value for ``DiscordWebSocket.DEFAULT_GATEWAY`` (and ``resume_gateway_url``)."""
        return f"ws://{self.host}:{self.port}/gateway"

    @contextlib.contextmanager
    def patch_discord(self) -> Iterator[None]:
        """Point discord.py's process-global REST base and gateway here; restore on exit."""
        old_base, old_gateway = Route.BASE, DiscordWebSocket.DEFAULT_GATEWAY
        Route.BASE = self.rest_base
        DiscordWebSocket.DEFAULT_GATEWAY = yarl.URL(self.gateway_url)
        try:
            yield
        finally:
            Route.BASE = old_base
            DiscordWebSocket.DEFAULT_GATEWAY = old_gateway

    # ---- waiting ---------------------------------------------------------------------------

    def _bump(self) -> None:
        """Wake every waiter: something was recorded or changed."""
        self._changed.set()
        self._changed = asyncio.Event()

    async def wait_for(
        self,
        predicate: Callable[[], T | None],
        timeout: float = 5.0,  # noqa: ASYNC109 - the waiting helpers take plain timeouts
        what: str = "",
    ) -> T:
        """Wait until ``predicate()`` returns something truthy, and return it.

        The predicate is re-checked whenever the fake records a request, a gateway frame or
        a heartbeat, or changes a message. Raises ``TimeoutError`` describing the recent
        requests.
        """
        deadline = time.monotonic() + timeout
        while True:
            result = predicate()
            if result:
                return result
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                recent = "\n".join(
                    f"  {r.method} {r.route} -> {r.status}" for r in self.requests[-10:]
                )
                raise TimeoutError(
                    f"timed out after {timeout}s waiting for {what or predicate!r}; "
                    f"last requests:\n{recent or '  (none)'}"
                )
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), min(remaining, 0.25))

    async def wait_for_request(
        self,
        predicate: Callable[[RecordedRequest], bool],
        timeout: float = 5.0,  # noqa: ASYNC109 - the waiting helpers take plain timeouts
    ) -> RecordedRequest:
        """Wait for a recorded (and answered) request matching ``predicate``."""
        return await self.wait_for(
            lambda: next((r for r in self.requests if predicate(r)), None), timeout, "a request"
        )

    async def wait_for_message(
        self,
        predicate: Callable[[FakeMessage], bool] = lambda _m: True,
        *,
        channel_id: int | None = None,
        timeout: float = 5.0,  # noqa: ASYNC109 - the waiting helpers take plain timeouts
    ) -> FakeMessage:
        """Wait for a (not deleted) message matching ``predicate``."""

        def find() -> FakeMessage | None:
            candidates = (
                self.messages(channel_id) if channel_id is not None else self.all_messages()
            )
            return next((m for m in candidates if predicate(m)), None)

        return await self.wait_for(find, timeout, "a message")

    # ---- queries ---------------------------------------------------------------------------

    def messages(self, channel_id: int, *, include_deleted: bool = False) -> list[FakeMessage]:
        """The messages of a channel, oldest first (ephemeral ones included)."""
        found = [self._messages[i] for i in self._channel_messages.get(channel_id, [])]
        return [m for m in found if include_deleted or not m.deleted]

    def all_messages(self, *, include_deleted: bool = False) -> list[FakeMessage]:
        return [m for m in self._messages.values() if include_deleted or not m.deleted]

    def message(self, message_id: int) -> FakeMessage:
        return self._messages[message_id]

    def interaction(self, interaction_id: int) -> InteractionHandle:
        return self._interactions[interaction_id]

    def interaction_responses(self, interaction_id: int) -> list[CallbackRecord]:
        """The accepted callback of an interaction (a list: empty until it answered)."""
        handle = self._interactions[interaction_id]
        return [handle.callback] if handle.callback is not None else []

    def requests_to(self, method: str, route_pattern: str) -> list[RecordedRequest]:
        """Recorded requests whose route fully matches the regular expression."""
        regex = re.compile(route_pattern)
        return [r for r in self.requests if r.method == method and regex.fullmatch(r.route)]

    def count_posts(
        self,
        key: Callable[[FakeMessage], K | None],
        *,
        channel_id: int | None = None,
        include_deleted: bool = False,
    ) -> Counter[K]:
        """How many messages share each ``key`` (messages whose key is ``None`` are left
        out): e.g. ``count_posts(lambda m: m.channel_id)``, or a job id read from the
        content, to assert that nothing was posted twice."""
        messages = (
            self.messages(channel_id, include_deleted=include_deleted)
            if channel_id is not None
            else self.all_messages(include_deleted=include_deleted)
        )
        return Counter(k for m in messages if (k := key(m)) is not None)

    def upload_counts(self, *, channel_id: int | None = None) -> Counter[str]:
        """How many attachments of visible (not deleted) messages carry each file content,
        by SHA-256 of the bytes: a count over 1 is the same file posted twice.

        An edit that keeps or replaces a message's files counts once, as a member sees it.
        """
        messages = self.messages(channel_id) if channel_id is not None else self.all_messages()
        return Counter(hashlib.sha256(a.data).hexdigest() for m in messages for a in m.attachments)

    def commands(self, guild_id: int | None = None) -> list[JSON]:
        """The commands last synced globally (``guild_id=None``) or for a guild."""
        if guild_id is None:
            return list(self._global_commands)
        return list(self._guild_commands.get(guild_id, []))

    def command(
        self, name: str, guild_id: int | None = None, type: int = CommandType.CHAT_INPUT
    ) -> JSON:
        """A synced command by name: the guild's first (if ``guild_id``), then global."""
        scopes = [self.commands(guild_id)] if guild_id is not None else []
        scopes.append(self._global_commands)
        for scope in scopes:
            for command in scope:
                if command["name"] == name and int(command.get("type", 1)) == type:
                    return command
        known = sorted({c["name"] for scope in scopes for c in scope})
        raise LookupError(f"no synced command {name!r} (type {type}); synced: {known}")

    def command_id(
        self, name: str, guild_id: int | None = None, type: int = CommandType.CHAT_INPUT
    ) -> int:
        return int(self.command(name, guild_id, type)["id"])

    def user(self, user_id: int) -> FakeUser:
        return self._users[user_id]

    def add_user(self, user: FakeUser) -> FakeUser:
        self._users[user.id] = user
        return user

    def dm_channel(self, user: FakeUser | FakeMember | int) -> FakeChannel:
        """The DM channel between the bot and ``user`` (created on first use)."""
        resolved = self._resolve_user(user)
        for channel in self._dm_channels.values():
            if channel.recipient is not None and channel.recipient.id == resolved.id:
                return channel
        channel = FakeChannel(make_snowflake(), "", ChannelType.DM, recipient=resolved)
        self._dm_channels[channel.id] = channel
        return channel

    @property
    def heartbeat_times(self) -> list[float]:
        return [h.received_at for h in self.heartbeats]

    @property
    def connected(self) -> bool:
        """Whether the bot's session has an open gateway connection."""
        session = self._session
        return bool(session and session.connection is not None and not session.connection.ws.closed)

    @property
    def session_id(self) -> str | None:
        return self._session.session_id if self._session else None

    # ---- fault injection -------------------------------------------------------------------

    def fail_next(
        self,
        method: str,
        route_pattern: str,
        *,
        status: int = 500,
        body: Any = None,
        headers: Mapping[str, str] | None = None,
        times: int = 1,
        html: bool = False,
    ) -> None:
        """Answer the next ``times`` matching REST requests with this error instead.

        ``method`` is an HTTP method or ``"*"``; ``route_pattern`` is a regular expression
        matched in full against the route, e.g. ``r"/channels/\\d+/messages"``. The body is
        JSON (default ``{"message": "injected <status>", "code": 0}``); ``html=True``
        answers with a ``text/html`` page instead (``body`` if it is a string, else a
        Cloudflare-style error page, or its challenge page for ``status=200``): what a proxy
        in front of the API sends. Note: discord.py retries 500, 502, 504 and 524 answers
        itself (five tries, with sleeps of 1, 3, 5, 7 and 9 s).
        """
        self._failures.append(
            _InjectedFailure(
                method.upper(),
                re.compile(route_pattern),
                status,
                body,
                dict(headers or {}),
                remaining=times,
                html=html,
            )
        )

    def fail_for(
        self,
        method: str,
        route_pattern: str,
        seconds: float,
        *,
        status: int = 503,
        body: Any = None,
        html: bool = False,
        headers: Mapping[str, str] | None = None,
        uploads_only: bool = False,
    ) -> None:
        """An outage: every matching request fails for ``seconds`` from now, then the route
        answers normally again (or at once after :meth:`recover`).

        Arguments as for :meth:`fail_next`; e.g. ``fail_for("*", r"/webhooks/.*", 45)``
        refuses every interaction follow-up and edit with 503 for 45 s. ``uploads_only``:
        only requests that carry files fail (Discord's attachment service down, text and
        edits without files still going through).
        """
        self._failures.append(
            _InjectedFailure(
                method.upper(),
                re.compile(route_pattern),
                status,
                body,
                dict(headers or {}),
                remaining=None,
                until=time.monotonic() + seconds,
                html=html,
                uploads_only=uploads_only,
            )
        )

    def rate_limit_next(
        self,
        method: str,
        route_pattern: str,
        *,
        retry_after: float = 0.05,
        is_global: bool = False,
        times: int = 1,
    ) -> None:
        """Answer the next matching requests with a 429 that discord.py retries.

        As Discord: the JSON body has ``retry_after`` (seconds, fractional) and ``global``;
        the headers have ``Retry-After`` (whole seconds), ``X-RateLimit-Scope`` (``global``
        or ``user``) and, for a per-route limit, ``X-RateLimit-Bucket``,
        ``X-RateLimit-Remaining: 0`` and the reset time; a global one has
        ``X-RateLimit-Global: true``.
        """
        self._failures.append(
            _InjectedFailure(
                method.upper(),
                re.compile(route_pattern),
                429,
                _rate_limit_body(retry_after, is_global),
                remaining=times,
                rate_limit=(retry_after, is_global),
            )
        )

    def rate_limit_for(
        self,
        method: str,
        route_pattern: str,
        seconds: float,
        *,
        retry_after: float = 0.05,
        is_global: bool = False,
    ) -> None:
        """Answer every matching request with a 429 (as :meth:`rate_limit_next`) for
        ``seconds`` from now: a client that honours ``retry_after`` is refused again until
        the period ends."""
        self._failures.append(
            _InjectedFailure(
                method.upper(),
                re.compile(route_pattern),
                429,
                _rate_limit_body(retry_after, is_global),
                remaining=None,
                until=time.monotonic() + seconds,
                rate_limit=(retry_after, is_global),
            )
        )

    def hang_next(self, method: str, route_pattern: str, *, times: int = 1) -> None:
        """The next ``times`` matching requests get no answer: the fake reads them and holds
        the connection open until :meth:`recover` (or until the client gives up).

        Other requests are served meanwhile. A held request whose client is still
        connected when it is released gets its normal answer (the route runs then); one
        whose client went away is not run at all and is recorded with status 0. While held
        it is listed in :attr:`held_requests`.
        """
        self._failures.append(
            _InjectedFailure(method.upper(), re.compile(route_pattern), remaining=times, hang=True)
        )

    def hang_for(self, method: str, route_pattern: str, seconds: float) -> None:
        """Every matching request arriving in the next ``seconds`` gets no answer until the
        period ends (or :meth:`recover`); then as :meth:`hang_next`."""
        self._failures.append(
            _InjectedFailure(
                method.upper(),
                re.compile(route_pattern),
                remaining=None,
                until=time.monotonic() + seconds,
                hang=True,
            )
        )

    def recover(self) -> None:
        """End every injected failure, outage, rate limit and hang at once.

        Held requests are released: answered normally if their client still waits.
        """
        self._failures.clear()
        self._gateway_down_until = 0.0
        self._recoveries += 1
        self._bump()

    def gateway_down_for(self, seconds: float, *, status: int = 502, html: bool = True) -> None:
        """The gateway refuses every websocket connection for ``seconds`` from now (or until
        :meth:`recover`): the upgrade is answered with ``status`` and, by default, a proxy's
        HTML page. Open connections stay open; drop them with :meth:`drop_connection`."""
        self._gateway_down_until = time.monotonic() + seconds
        self._gateway_failure = _InjectedFailure(
            "GET", re.compile("/gateway"), status, remaining=None, html=html
        )

    @property
    def held_requests(self) -> list[RecordedRequest]:
        """Requests the fake is holding without an answer (see :meth:`hang_next`)."""
        return list(self._held)

    async def _hold(self, request: web.Request, failure: _InjectedFailure) -> bool:
        """Hold ``request`` until the hang ends; whether its client still waits."""
        recoveries = self._recoveries
        while not self._stopping and self._recoveries == recoveries:
            if failure.until is not None and time.monotonic() >= failure.until:
                break
            transport = request.transport
            if transport is None or transport.is_closing():
                return False
            await asyncio.sleep(0.02)
        transport = request.transport
        return not self._stopping and transport is not None and not transport.is_closing()

    def expire_token(self, token: str) -> None:
        self._tokens[token].expire()

    # ---- gateway: server side --------------------------------------------------------------

    async def _gateway(self, request: web.Request) -> web.StreamResponse:
        ws = web.WebSocketResponse(max_msg_size=0)
        await ws.prepare(request)
        conn = _Connection(
            next(self._connection_ids), ws, request, dict(request.query), time.monotonic()
        )
        self._connections.append(conn)
        try:
            await self._send(
                conn,
                {
                    "op": 10,
                    "d": {"heartbeat_interval": int(self.heartbeat_interval * 1000)},
                    "s": None,
                    "t": None,
                },
            )
            async for msg in ws:
                if msg.type is not WSMsgType.TEXT:
                    continue
                try:
                    await self._on_gateway_message(conn, json.loads(msg.data))
                except Exception:
                    self.internal_errors.append(traceback.format_exc())
        finally:
            conn.closed_at = time.monotonic()
            if conn.session is not None and conn.session.connection is conn:
                conn.session.connection = None
            self._bump()
        return ws

    async def _send(self, conn: _Connection, frame: JSON) -> bool:
        async with conn.lock:
            if conn.ws.closed:
                return False
            try:
                await conn.ws.send_str(json.dumps(frame))
            except (ConnectionError, RuntimeError):
                return False
        self.gateway_log.append(GatewayFrame("sent", conn.id, frame, time.monotonic()))
        self._bump()
        return True

    async def _on_gateway_message(self, conn: _Connection, frame: JSON) -> None:
        now = time.monotonic()
        op = frame.get("op")
        data = frame.get("d")
        logged = frame
        if op in (2, 6) and isinstance(data, dict):
            logged = {**frame, "d": {k: v for k, v in data.items() if k != "token"}}
        self.gateway_log.append(GatewayFrame("received", conn.id, logged, now))
        if op == 1:
            acked = self.ack_heartbeats
            self.heartbeats.append(
                HeartbeatRecord(now, data if isinstance(data, int) else None, conn.id, acked)
            )
            if acked:
                await self._send(conn, {"op": 11})
        elif op == 2 and isinstance(data, dict):
            await self._identify(conn, data)
        elif op == 6 and isinstance(data, dict):
            await self._resume(conn, data)
        elif op == 8 and isinstance(data, dict):
            await self._request_members(data)
        self._bump()

    async def _identify(self, conn: _Connection, data: JSON) -> None:
        if data.get("token") != self.token:
            await conn.ws.close(code=4004, message=b"Authentication failed.")
            return
        self.identifies.append({k: v for k, v in data.items() if k != "token"})
        shard_id, shard_count = _shard_of(data)
        previous = self._shards.get(shard_id)
        if previous is not None:
            previous.invalid = True
        session = _Session(secrets.token_hex(16), (shard_id, shard_count), connection=conn)
        conn.session = session
        self._shards[shard_id] = session
        if shard_id == 0:
            self._session = session
        guilds = [g for g in self.guilds.values() if shard_for(g.id, shard_count) == shard_id]
        ready: JSON = {
            "v": API_VERSION,
            "user": {
                **self.bot_user.to_payload(),
                "verified": True,
                "mfa_enabled": False,
                "email": None,
            },
            "guilds": [{"id": str(g.id), "unavailable": True} for g in guilds],
            "session_id": session.session_id,
            "session_type": "normal",
            "resume_gateway_url": self.gateway_url,
            "application": {"id": str(self.application_id), "flags": 0},
            "private_channels": [],
            "relationships": [],
            "presences": [],
            "guild_join_requests": [],
            "geo_ordered_rtc_regions": [],
            "user_settings": {},
            "_trace": ["fake-discord"],
        }
        if "shard" in data:
            ready["shard"] = data["shard"]
        await self._dispatch_to(session, "READY", ready)
        for guild in guilds:
            await self._dispatch_to(session, "GUILD_CREATE", self._guild_create_payload(guild))

    async def _resume(self, conn: _Connection, data: JSON) -> None:
        wanted = data.get("session_id")
        session = next((s for s in self._shards.values() if s.session_id == wanted), None)
        if (
            session is None
            or session.invalid
            or data.get("session_id") != session.session_id
            or data.get("token") != self.token
        ):
            await self._send(conn, {"op": 9, "d": False, "s": None, "t": None})
            return
        self.resumes.append({k: v for k, v in data.items() if k != "token"})
        session.connection = conn
        conn.session = session
        last_seen = data.get("seq") or 0
        for frame in list(session.backlog):
            if frame["s"] > last_seen:
                await self._send(conn, frame)
        await self._dispatch_to(session, "RESUMED", {"_trace": ["fake-discord"]})

    async def _request_members(self, data: JSON) -> None:
        guild = self.guilds.get(int(data.get("guild_id", 0)))
        if guild is None:
            return
        payload: JSON = {
            "guild_id": str(guild.id),
            "members": [self._member_payload(guild, m) for m in self._guild_members(guild)],
            "chunk_index": 0,
            "chunk_count": 1,
            "not_found": [],
        }
        if "nonce" in data:
            payload["nonce"] = data["nonce"]
        await self.dispatch("GUILD_MEMBERS_CHUNK", payload)

    # ---- gateway: test controls ------------------------------------------------------------

    async def dispatch(self, event: str, data: JSON) -> int:
        """Dispatch a gateway event to the bot's session; returns its sequence number.

        A sharded bot gets an event of a guild on that guild's shard (Discord's
        ``(guild_id >> 22) % shard_count``), others on shard 0. While the bot is
        disconnected the event is kept and replayed on RESUME.
        """
        session = self._session
        guild_id = data.get("guild_id") if isinstance(data, dict) else None
        if session is not None and guild_id is not None and session.shard[1] > 1:
            session = self._shards.get(shard_for(int(guild_id), session.shard[1]), session)
        if session is None:
            raise RuntimeError("no gateway session: the client has not identified yet")
        return await self._dispatch_to(session, event, data)

    async def _dispatch_to(self, session: _Session, event: str, data: JSON) -> int:
        session.seq += 1
        frame: JSON = {"op": 0, "t": event, "s": session.seq, "d": data}
        session.backlog.append(frame)
        if session.connection is not None:
            await self._send(session.connection, frame)
        return session.seq

    async def drop_connection(self, code: int = 4000, *, abrupt: bool = False) -> None:
        """Close the bot's gateway connection (discord.py then reconnects and RESUMEs).

        ``abrupt=True`` cuts the TCP connection without a close frame.
        """
        session = self._session
        conn = session.connection if session else None
        if conn is None:
            raise RuntimeError("the bot has no open gateway connection")
        if abrupt:
            transport = conn.request.transport
            if transport is not None:
                transport.close()
        else:
            await conn.ws.close(code=code, message=b"dropped by fake discord")

    async def send_reconnect(self) -> None:
        """Send op 7 RECONNECT: the client closes and RESUMEs."""
        session = self._session
        if session is None or session.connection is None:
            raise RuntimeError("the bot has no open gateway connection")
        await self._send(session.connection, {"op": 7, "d": None, "s": None, "t": None})

    async def invalidate_session(self, *, resumable: bool = False) -> None:
        """Send op 9 INVALID_SESSION; unless resumable the client must IDENTIFY again."""
        session = self._session
        if session is None or session.connection is None:
            raise RuntimeError("the bot has no open gateway connection")
        if not resumable:
            session.invalid = True
        await self._send(session.connection, {"op": 9, "d": resumable, "s": None, "t": None})

    async def wait_connected(
        self,
        timeout: float = 5.0,  # noqa: ASYNC109 - the waiting helpers take plain timeouts
    ) -> None:
        await self.wait_for(lambda: self.connected, timeout, "a gateway connection")

    # ---- payload builders ------------------------------------------------------------------

    def _guild_members(self, guild: FakeGuild) -> list[FakeMember]:
        members = list(guild.members)
        if guild.member(self.bot_user.id) is None:
            members.append(FakeMember(self.bot_user))
        return members

    def _member_payload(
        self, guild: FakeGuild, member: FakeMember, *, with_permissions: bool = False
    ) -> JSON:
        payload: JSON = {
            "user": member.user.to_payload(),
            "roles": [str(r) for r in member.roles],
            "nick": member.nick,
            "avatar": None,
            "joined_at": _iso(member.joined_at),
            "premium_since": None,
            "deaf": False,
            "mute": False,
            "pending": False,
            "flags": 0,
            "communication_disabled_until": None,
        }
        if with_permissions:
            payload["permissions"] = str(guild.permissions_for(member))
        return payload

    def _bot_permissions(self, guild: FakeGuild, channel: FakeChannel) -> int:
        if channel.bot_permissions is not None:
            return channel.bot_permissions
        if channel.is_thread and channel.parent_id is not None:
            parent = guild.channel(channel.parent_id)
            if parent is not None and parent.bot_permissions is not None:
                return parent.bot_permissions
        return guild.bot_permissions

    def channel_payload(self, channel: FakeChannel, guild: FakeGuild | None = None) -> JSON:
        """The channel as Discord sends it (guild channel, thread or DM)."""
        if channel.type == ChannelType.DM:
            assert channel.recipient is not None
            return {
                "id": str(channel.id),
                "type": int(ChannelType.DM),
                "last_message_id": None,
                "flags": 0,
                "recipients": [channel.recipient.to_payload()],
            }
        assert guild is not None
        payload: JSON = {
            "id": str(channel.id),
            "type": int(channel.type),
            "guild_id": str(guild.id),
            "name": channel.name,
            "position": channel.position,
            "nsfw": guild.is_nsfw(channel),
            "parent_id": str(channel.parent_id) if channel.parent_id is not None else None,
            "topic": channel.topic,
            "rate_limit_per_user": 0,
            "last_message_id": None,
            "permission_overwrites": [],
            "flags": 0,
        }
        if channel.is_thread:
            now = _iso(_utcnow())
            payload.update(
                owner_id=str(channel.owner_id or self.bot_user.id),
                message_count=0,
                member_count=1,
                total_message_sent=0,
                thread_metadata={
                    "archived": False,
                    "auto_archive_duration": 1440,
                    "archive_timestamp": now,
                    "locked": False,
                    "create_timestamp": now,
                },
            )
            del payload["permission_overwrites"], payload["position"]
        return payload

    def _guild_create_payload(self, guild: FakeGuild) -> JSON:
        members = self._guild_members(guild)
        return {
            "id": str(guild.id),
            "name": guild.name,
            "icon": None,
            "splash": None,
            "discovery_splash": None,
            "banner": None,
            "description": None,
            "owner_id": str(guild.owner_id or self.app_owner.id),
            "unavailable": False,
            "large": False,
            "member_count": len(members),
            "joined_at": _iso(dt.datetime(2024, 1, 1, tzinfo=dt.UTC)),
            "channels": [self.channel_payload(c, guild) for c in guild.channels if not c.is_thread],
            "threads": [self.channel_payload(c, guild) for c in guild.channels if c.is_thread],
            "roles": [r.to_payload() for r in guild.roles],
            "members": [self._member_payload(guild, m) for m in members],
            "emojis": [],
            "stickers": [],
            "voice_states": [],
            "presences": [],
            "stage_instances": [],
            "guild_scheduled_events": [],
            "soundboard_sounds": [],
            "features": [],
            "verification_level": 0,
            "default_message_notifications": 0,
            "explicit_content_filter": 0,
            "mfa_level": 0,
            "nsfw_level": 0,
            "premium_tier": 0,
            "premium_subscription_count": 0,
            "preferred_locale": guild.locale,
            "afk_channel_id": None,
            "afk_timeout": 300,
            "system_channel_id": None,
            "system_channel_flags": 0,
            "rules_channel_id": None,
            "public_updates_channel_id": None,
            "max_members": 500000,
            "vanity_url_code": None,
        }

    # ---- HTTP plumbing ---------------------------------------------------------------------

    @web.middleware
    async def _middleware(
        self,
        request: web.Request,
        handler: Callable[[web.Request], Any],
    ) -> web.StreamResponse:
        if request.path == "/gateway":
            if time.monotonic() < self._gateway_down_until:
                self.refused_gateway_connections += 1
                self._bump()
                return self._gateway_failure.response()
            response: web.StreamResponse = await handler(request)
            return response
        record: RecordedRequest | None = None
        try:
            record = await self._record(request)
            _CURRENT_RECORD.set(record)
            injected = self._take_failure(record)
            if injected is not None and injected.hang:
                self._held.append(record)
                self._bump()
                try:
                    waiting = await self._hold(request, injected)
                finally:
                    self._held.remove(record)
                if not waiting:  # nobody to answer: the route does not run
                    record.status = 0
                    self.requests.append(record)
                    self._bump()
                    return web.Response(status=504)
                injected = None
            if injected is not None:
                response = injected.response()
            else:
                response = await handler(request)
        except DiscordError as error:
            response = _json_response(error.body(), status=error.status)
        except ConnectionResetError:
            # The client went away while sending (a bot killed mid-upload): nothing was
            # received and nobody reads the answer; as with Discord, not an error of the fake.
            self.dropped_requests += 1
            self._bump()
            return web.Response(status=400)
        except Exception:
            self.internal_errors.append(traceback.format_exc())
            # 400, not 500: discord.py retries 5xx answers with sleeps.
            response = _json_response(
                {"message": "fake discord crashed (see internal_errors)", "code": 0},
                status=400,
            )
        if record is None:
            return response
        record.status = response.status
        if isinstance(response, web.Response) and response.body:
            with contextlib.suppress(ValueError, TypeError):
                record.response = json.loads(bytes(response.body))  # type: ignore[arg-type]
        self.requests.append(record)
        self._bump()
        return response

    async def _record(self, request: web.Request) -> RecordedRequest:
        headers = {k: v for k, v in request.headers.items() if k.lower() != "authorization"}
        authorization = request.headers.get("Authorization")
        auth = None
        if authorization is not None:
            auth = "bot" if authorization == f"Bot {self.token}" else "invalid"
        body = b""
        payload: Any = None
        files: list[UploadedFile] = []
        if request.content_type.startswith("multipart/"):
            reader = await request.multipart()
            while (part := await reader.next()) is not None:
                if not isinstance(part, BodyPartReader):
                    continue
                raw = bytes(await part.read(decode=False))
                name = part.name or ""
                if name == "payload_json":
                    payload = json.loads(raw)
                elif part.filename is not None:
                    files.append(
                        UploadedFile(name, part.filename, raw, part.headers.get("Content-Type"))
                    )
        elif request.can_read_body:
            body = await request.read()
            if request.content_type == "application/json" and body:
                payload = json.loads(body)
        prefix = f"/api/v{API_VERSION}"
        route = request.path[len(prefix) :] if request.path.startswith(prefix) else request.path
        return RecordedRequest(
            method=request.method,
            path=request.path,
            route=route,
            query=dict(request.query),
            headers=headers,
            auth=auth,
            json=payload,
            files=files,
            body=body,
            received_at=time.monotonic(),
        )

    def _take_failure(self, record: RecordedRequest) -> _InjectedFailure | None:
        now = time.monotonic()
        self._failures = [f for f in self._failures if not f.expired(now)]
        for failure in self._failures:
            if failure.matches(record):
                if failure.remaining is not None:
                    failure.remaining -= 1
                    if failure.remaining <= 0:
                        self._failures.remove(failure)
                return failure
        return None

    def _require_bot(self, request: web.Request) -> None:
        if _CURRENT_RECORD.get().auth != "bot":
            raise _unauthorized()

    async def _unknown_route(self, request: web.Request) -> web.StreamResponse:
        self.unknown_requests.append(_CURRENT_RECORD.get())
        return _json_response({"message": "404: Not Found", "code": 0}, status=404)

    # ---- REST: identity and commands -------------------------------------------------------

    async def _get_me(self, request: web.Request) -> web.StreamResponse:
        self._require_bot(request)
        return _json_response(
            {**self.bot_user.to_payload(), "verified": True, "mfa_enabled": False}
        )

    async def _get_application(self, request: web.Request) -> web.StreamResponse:
        self._require_bot(request)
        return _json_response(
            {
                "id": str(self.application_id),
                "name": self.bot_user.username,
                "description": "Fake application",
                "icon": None,
                "bot_public": True,
                "bot_require_code_grant": False,
                "owner": self.app_owner.to_payload(),
                "team": None,
                "verify_key": "0" * 64,
                "flags": 0,
                "summary": "",
                "rpc_origins": [],
                "tags": [],
                "bot": self.bot_user.to_payload(),
                **({} if self.install_params is None else {"install_params": self.install_params}),
            }
        )

    # ---- REST: the bot's guilds, its member and roles ---------------------------------------

    def bot_role(self, guild: FakeGuild) -> FakeRole | None:
        """The managed role the bot holds in ``guild`` (None when it is an explicit member)."""
        if guild.member(self.bot_user.id) is not None:
            return None
        role_id = self._bot_role_ids.setdefault(guild.id, make_snowflake())
        return FakeRole(role_id, self.bot_user.username, guild.bot_permissions, position=1)

    def bot_member(self, guild: FakeGuild) -> FakeMember:
        """The bot as a member of ``guild`` (see the class docstring)."""
        explicit = guild.member(self.bot_user.id)
        if explicit is not None:
            return explicit
        role = self.bot_role(guild)
        assert role is not None
        return FakeMember(self.bot_user, roles=[role.id])

    def bot_guild_permissions(self, guild: FakeGuild) -> int:
        """The bot's guild-wide permissions as the REST API reports them."""
        member = self.bot_member(guild)
        role = self.bot_role(guild)
        view = FakeGuild(
            guild.id,
            guild.name,
            roles=[*guild.roles, *([role] if role is not None else [])],
            owner_id=guild.owner_id,
        )
        return view.permissions_for(member)

    def _member_guild(self, request: web.Request) -> FakeGuild:
        self._require_bot(request)
        guild = self.guilds.get(int(request.match_info["guild_id"]))
        if guild is None:
            raise DiscordError(403, 50001, "Missing Access")
        return guild

    async def _get_my_guilds(self, request: web.Request) -> web.StreamResponse:
        self._require_bot(request)
        limit = min(200, max(1, int(request.query.get("limit", "200"))))
        after = int(request.query.get("after", "0"))
        listed = sorted((g for g in self.guilds.values() if g.id > after), key=lambda g: g.id)
        body: list[JSON] = []
        for guild in listed[:limit]:
            entry: JSON = {
                "id": str(guild.id),
                "name": guild.name,
                "icon": None,
                "banner": None,
                "owner": guild.owner_id == self.bot_user.id,
                "features": [],
            }
            if self.guild_list_permissions:
                entry["permissions"] = str(self.bot_guild_permissions(guild))
            body.append(entry)
        return _json_response(body)

    async def _get_member(self, request: web.Request) -> web.StreamResponse:
        guild = self._member_guild(request)
        user_id = int(request.match_info["user_id"])
        member = self.bot_member(guild) if user_id == self.bot_user.id else guild.member(user_id)
        if member is None:
            raise _unknown("Member", 10007)
        return _json_response(self._member_payload(guild, member))

    async def _get_roles(self, request: web.Request) -> web.StreamResponse:
        guild = self._member_guild(request)
        roles = [role.to_payload() for role in guild.roles]
        bot_role = self.bot_role(guild)
        if bot_role is not None:
            payload = bot_role.to_payload()
            payload.update(managed=True, tags={"bot_id": str(self.bot_user.id)})
            roles.append(payload)
        return _json_response(roles)

    async def _get_gateway(self, request: web.Request) -> web.StreamResponse:
        body: JSON = {"url": self.gateway_url}
        if request.path.endswith("/bot"):
            self._require_bot(request)
            body.update(
                shards=self.recommended_shards,
                session_start_limit={
                    "total": 1000,
                    "remaining": 1000,
                    "reset_after": 0,
                    "max_concurrency": 1,
                },
            )
        return _json_response(body)

    def _check_app(self, request: web.Request) -> int | None:
        self._require_bot(request)
        if int(request.match_info["app_id"]) != self.application_id:
            raise DiscordError(403, 50001, "Missing Access")
        guild_id = request.match_info.get("guild_id")
        if guild_id is None:
            return None
        if int(guild_id) not in self.guilds:
            raise DiscordError(403, 50001, "Missing Access")
        return int(guild_id)

    async def _get_commands(self, request: web.Request) -> web.StreamResponse:
        return _json_response(self.commands(self._check_app(request)))

    async def _put_commands(self, request: web.Request) -> web.StreamResponse:
        guild_id = self._check_app(request)
        body = _CURRENT_RECORD.get().json
        if not isinstance(body, list):
            raise _invalid_form("_root", "expected a list of commands")
        synced: list[JSON] = []
        for command in body:
            kind = int(command.get("type", CommandType.CHAT_INPUT))
            key = (guild_id, command["name"], kind)
            command_id = self._command_ids.setdefault(key, make_snowflake())
            entry: JSON = {
                "description": "",
                "options": [],
                "default_member_permissions": None,
                "nsfw": False,
                **command,
                "id": str(command_id),
                "application_id": str(self.application_id),
                "type": kind,
                "version": str(make_snowflake()),
            }
            if guild_id is not None:
                entry["guild_id"] = str(guild_id)
            synced.append(entry)
        if guild_id is None:
            self._global_commands = synced
        else:
            self._guild_commands[guild_id] = synced
        return _json_response(synced)

    # ---- REST: messages model --------------------------------------------------------------

    def _attachment_url(self, channel_id: int, attachment_id: int, filename: str) -> str:
        return f"{self.base_url}/attachments/{channel_id}/{attachment_id}/{filename}"

    def _new_attachment(
        self,
        channel_id: int,
        filename: str,
        data: bytes,
        *,
        content_type: str | None = None,
        description: str | None = None,
        ephemeral: bool = False,
    ) -> FakeAttachment:
        attachment_id = make_snowflake()
        attachment = FakeAttachment(
            attachment_id,
            filename,
            data,
            self._attachment_url(channel_id, attachment_id, filename),
            content_type or mimetypes.guess_type(filename)[0] or "application/octet-stream",
            description,
            ephemeral,
        )
        self._uploads[attachment_id] = attachment
        return attachment

    @staticmethod
    def _check_body(data: JSON, files: Sequence[UploadedFile], size_limit: int) -> None:
        content = data.get("content")
        if isinstance(content, str) and len(content) > MAX_CONTENT_LENGTH:
            raise _invalid_form("content", "Must be 2000 or fewer in length.")
        if len(data.get("embeds") or []) > MAX_EMBEDS:
            raise _invalid_form("embeds", "Must be 10 or fewer in length.")
        if len(files) > MAX_FILES:
            raise _invalid_form("files", "Must be 10 or fewer in length.")
        if any(len(f.data) > size_limit for f in files):
            raise DiscordError(413, 40005, "Request entity too large")

    def _attachments(
        self,
        channel_id: int,
        spec: list[JSON] | None,
        files: Sequence[UploadedFile],
        existing: Sequence[FakeAttachment],
        *,
        ephemeral: bool,
    ) -> list[FakeAttachment]:
        """Resolve an ``attachments`` array: keep existing ones by id, add ``files[n]``."""
        by_index = {f.index if f.index is not None else i: f for i, f in enumerate(files)}
        used: set[int] = set()
        result: list[FakeAttachment] = [] if spec is not None else list(existing)
        for entry in spec or []:
            ident = int(entry["id"])
            kept = next((a for a in existing if a.id == ident), None)
            if kept is not None:
                if "description" in entry:
                    kept.description = entry["description"]
                result.append(kept)
            elif ident in by_index:
                upload = by_index[ident]
                used.add(ident)
                result.append(
                    self._new_attachment(
                        channel_id,
                        entry.get("filename") or upload.filename,
                        upload.data,
                        description=entry.get("description"),
                        ephemeral=ephemeral,
                    )
                )
        for index, upload in by_index.items():
            if index not in used:
                result.append(
                    self._new_attachment(
                        channel_id, upload.filename, upload.data, ephemeral=ephemeral
                    )
                )
        return result

    def _store(self, message: FakeMessage) -> FakeMessage:
        self._messages[message.id] = message
        self._channel_messages.setdefault(message.channel_id, []).append(message.id)
        self._bump()
        return message

    def _create_message(
        self,
        *,
        channel_id: int,
        guild_id: int | None,
        data: JSON,
        files: Sequence[UploadedFile],
        size_limit: int,
        interaction: InteractionHandle | None = None,
        flags: int | None = None,
        allow_empty: bool = False,
    ) -> FakeMessage:
        self._check_body(data, files, size_limit)
        has_body = any(
            data.get(k) for k in ("content", "embeds", "components", "sticker_ids", "poll")
        )
        if not (allow_empty or has_body or files):
            raise DiscordError(400, 50006, "Cannot send an empty message")
        message_flags = int(data.get("flags") or 0) if flags is None else flags
        message = FakeMessage(
            id=make_snowflake(),
            channel_id=channel_id,
            guild_id=guild_id,
            author=self.bot_user,
            content=str(data.get("content") or ""),
            embeds=list(data.get("embeds") or []),
            components=list(data.get("components") or []),
            flags=message_flags,
            extra={k: v for k, v in data.items() if k in _EXTRA_MESSAGE_FIELDS},
        )
        message.attachments = self._attachments(
            channel_id,
            data.get("attachments"),
            files,
            [],
            ephemeral=bool(message_flags & EPHEMERAL),
        )
        if interaction is not None:
            message.webhook_id = self.application_id
            message.application_id = self.application_id
            message.interaction_id = interaction.id
            message.type = _message_type_for(interaction)
            message.interaction_metadata = self._interaction_metadata(interaction)
        return self._store(message)

    def _edit_message(
        self,
        message: FakeMessage,
        data: JSON,
        files: Sequence[UploadedFile],
        size_limit: int,
    ) -> FakeMessage:
        self._check_body(data, files, size_limit)
        if "content" in data:
            message.content = str(data["content"] or "")
        if "embeds" in data:
            message.embeds = list(data["embeds"] or [])
        if "components" in data:
            message.components = list(data["components"] or [])
        if "flags" in data and data["flags"] is not None:
            keep = message.flags & (EPHEMERAL | LOADING)
            message.flags = keep | (int(data["flags"]) & ~(EPHEMERAL | LOADING))
        if "attachments" in data or files:
            message.attachments = self._attachments(
                message.channel_id,
                data.get("attachments"),
                files,
                message.attachments,
                ephemeral=message.ephemeral,
            )
        message.extra.update({k: v for k, v in data.items() if k in _EXTRA_MESSAGE_FIELDS})
        message.edited_at = _utcnow()
        message.edits.append(data)
        self._bump()
        return message

    def _interaction_metadata(self, handle: InteractionHandle) -> JSON:
        metadata: JSON = {
            "id": str(handle.id),
            "type": int(handle.type),
            "user": handle.user.to_payload(),
            "authorizing_integration_owners": handle.payload.get(
                "authorizing_integration_owners", {}
            ),
        }
        if handle.type == InteractionType.APPLICATION_COMMAND:
            metadata["name"] = handle.payload["data"]["name"]
            metadata["command_type"] = handle.payload["data"].get("type", 1)
        if handle.original_message_id is not None:
            metadata["original_response_message_id"] = str(handle.original_message_id)
        if handle.source_message_id is not None:
            metadata["interacted_message_id"] = str(handle.source_message_id)
        return metadata

    def _locate_channel(self, channel_id: int) -> tuple[FakeChannel, FakeGuild | None]:
        for guild in self.guilds.values():
            channel = guild.channel(channel_id)
            if channel is not None:
                return channel, guild
        dm = self._dm_channels.get(channel_id)
        if dm is not None:
            return dm, None
        raise _unknown("Channel", 10003)

    # ---- REST: interaction callbacks and webhooks ------------------------------------------

    async def _callback(self, request: web.Request) -> web.StreamResponse:
        record = _CURRENT_RECORD.get()
        handle = self._interactions.get(int(request.match_info["interaction_id"]))
        if handle is None or handle.token != request.match_info["token"]:
            raise _unknown("interaction", 10062)
        if handle.callback is not None:
            raise DiscordError(400, 40060, "Interaction has already been acknowledged.")
        late = (
            self.ack_deadline is not None
            and record.received_at - handle.dispatched_at > self.ack_deadline
        )
        if late or not handle.token_valid:
            raise _unknown("interaction", 10062)
        body = record.json if isinstance(record.json, dict) else {}
        kind = int(body.get("type", 0))
        data: JSON = body.get("data") or {}
        message: FakeMessage | None = None
        limit = handle.attachment_size_limit
        if kind == CallbackType.CHANNEL_MESSAGE:
            if handle.type in (InteractionType.AUTOCOMPLETE, InteractionType.PING):
                raise DiscordError(400, 40043, "Interaction response type is not allowed")
            message = self._create_message(
                channel_id=handle.channel_id,
                guild_id=handle.guild_id,
                data=data,
                files=record.files,
                size_limit=limit,
                interaction=handle,
            )
            handle.original_message_id = message.id
        elif kind == CallbackType.DEFERRED_CHANNEL_MESSAGE:
            message = self._create_message(
                channel_id=handle.channel_id,
                guild_id=handle.guild_id,
                data={},
                files=[],
                size_limit=limit,
                interaction=handle,
                flags=LOADING | (int(data.get("flags") or 0) & EPHEMERAL),
                allow_empty=True,
            )
            handle.original_message_id = message.id
            handle._loading_original = True
        elif kind in (CallbackType.DEFERRED_UPDATE_MESSAGE, CallbackType.UPDATE_MESSAGE):
            if handle.source_message_id is None:
                raise DiscordError(400, 40043, "Interaction response type is not allowed")
            message = self._messages[handle.source_message_id]
            handle.original_message_id = message.id
            if kind == CallbackType.UPDATE_MESSAGE:
                self._edit_message(message, data, record.files, limit)
        elif kind == CallbackType.AUTOCOMPLETE_RESULT:
            if handle.type != InteractionType.AUTOCOMPLETE:
                raise DiscordError(400, 40043, "Interaction response type is not allowed")
        elif kind == CallbackType.MODAL:
            if handle.type in (InteractionType.MODAL_SUBMIT, InteractionType.AUTOCOMPLETE):
                raise DiscordError(400, 40043, "Interaction response type is not allowed")
        else:
            raise _invalid_form("type", f"unsupported callback type {kind}")
        handle.callback = CallbackRecord(
            kind, data, record.files, message.id if message else None, record
        )
        self._bump()
        if "with_response" not in request.query:
            return web.Response(status=204)
        interaction: JSON = {
            "id": str(handle.id),
            "type": int(handle.type),
            "response_message_loading": kind == CallbackType.DEFERRED_CHANNEL_MESSAGE,
            "response_message_ephemeral": bool(message and message.ephemeral),
        }
        resource: JSON = {"type": kind}
        if message is not None:
            interaction["response_message_id"] = str(message.id)
            if kind != CallbackType.DEFERRED_UPDATE_MESSAGE:
                resource["message"] = message.to_payload()
        return _json_response({"interaction": interaction, "resource": resource})

    def _webhook_handle(self, request: web.Request) -> InteractionHandle:
        if int(request.match_info["app_id"]) != self.application_id:
            raise _unknown("Webhook", 10015)
        handle = self._tokens.get(request.match_info["token"])
        if handle is None or not handle.token_valid:
            raise DiscordError(self.expired_token_status, 50027, "Invalid Webhook Token")
        return handle

    def _webhook_message(self, request: web.Request, handle: InteractionHandle) -> FakeMessage:
        raw = request.match_info["message_id"]
        if raw == "@original":
            message_id = handle.original_message_id
        else:
            message_id = int(raw)
            if message_id not in (handle.original_message_id, *handle.followup_message_ids):
                message_id = None
        message = self._messages.get(message_id) if message_id is not None else None
        if message is None or message.deleted:
            raise _unknown("Message", 10008)
        return message

    async def _webhook_post(self, request: web.Request) -> web.StreamResponse:
        handle = self._webhook_handle(request)
        record = _CURRENT_RECORD.get()
        callback = handle.callback
        if callback is None or callback.type not in (4, 5, 6, 7):
            raise _unknown("Webhook", 10015)
        data: JSON = record.json if isinstance(record.json, dict) else {}
        original = handle.original_message
        if handle._loading_original and original is not None:
            # The first follow-up after a "thinking" defer becomes the original response,
            # and keeps the defer's visibility.
            has_body = any(data.get(k) for k in ("content", "embeds", "components", "poll"))
            if not (has_body or record.files):
                raise DiscordError(400, 50006, "Cannot send an empty message")
            message = self._edit_message(original, data, record.files, handle.attachment_size_limit)
            message.flags &= ~LOADING
            handle._loading_original = False
        else:
            message = self._create_message(
                channel_id=handle.channel_id,
                guild_id=handle.guild_id,
                data=data,
                files=record.files,
                size_limit=handle.attachment_size_limit,
                interaction=handle,
            )
        handle.followup_message_ids.append(message.id)
        self._bump()
        if request.query.get("wait", "").lower() in ("1", "true"):
            return _json_response(message.to_payload())
        return web.Response(status=204)

    async def _webhook_get(self, request: web.Request) -> web.StreamResponse:
        handle = self._webhook_handle(request)
        return _json_response(self._webhook_message(request, handle).to_payload())

    async def _webhook_patch(self, request: web.Request) -> web.StreamResponse:
        handle = self._webhook_handle(request)
        message = self._webhook_message(request, handle)
        record = _CURRENT_RECORD.get()
        data: JSON = record.json if isinstance(record.json, dict) else {}
        self._edit_message(message, data, record.files, handle.attachment_size_limit)
        if message.id == handle.original_message_id and handle._loading_original:
            message.flags &= ~LOADING
            handle._loading_original = False
        return _json_response(message.to_payload())

    async def _webhook_delete(self, request: web.Request) -> web.StreamResponse:
        handle = self._webhook_handle(request)
        message = self._webhook_message(request, handle)
        message.deleted = True
        if message.id == handle.original_message_id:
            handle._loading_original = False
        self._bump()
        return web.Response(status=204)

    # ---- REST: channels --------------------------------------------------------------------

    async def _create_dm(self, request: web.Request) -> web.StreamResponse:
        self._require_bot(request)
        body = _CURRENT_RECORD.get().json or {}
        user = self._users.get(int(body.get("recipient_id", 0)))
        if user is None:
            raise _unknown("User", 10013)
        return _json_response(self.channel_payload(self.dm_channel(user)))

    async def _get_channel(self, request: web.Request) -> web.StreamResponse:
        self._require_bot(request)
        channel, guild = self._locate_channel(int(request.match_info["channel_id"]))
        return _json_response(self.channel_payload(channel, guild))

    async def _typing(self, request: web.Request) -> web.StreamResponse:
        self._require_bot(request)
        self._locate_channel(int(request.match_info["channel_id"]))
        return web.Response(status=204)

    def _visible_message(self, request: web.Request) -> FakeMessage:
        self._require_bot(request)
        channel_id = int(request.match_info["channel_id"])
        self._locate_channel(channel_id)
        message = self._messages.get(int(request.match_info["message_id"]))
        if (
            message is None
            or message.deleted
            or message.ephemeral
            or message.channel_id != channel_id
        ):
            raise _unknown("Message", 10008)
        return message

    async def _get_history(self, request: web.Request) -> web.StreamResponse:
        self._require_bot(request)
        channel_id = int(request.match_info["channel_id"])
        self._locate_channel(channel_id)
        query = request.query
        found = [m for m in self.messages(channel_id) if not m.ephemeral]
        if "before" in query:
            found = [m for m in found if m.id < int(query["before"])]
        if "after" in query:
            found = [m for m in found if m.id > int(query["after"])]
        limit = int(query.get("limit", 50))
        newest_first = list(reversed(found))[:limit]
        return _json_response([m.to_payload() for m in newest_first])

    async def _post_channel_message(self, request: web.Request) -> web.StreamResponse:
        self._require_bot(request)
        record = _CURRENT_RECORD.get()
        channel, guild = self._locate_channel(int(request.match_info["channel_id"]))
        if guild is not None:
            permissions = self._bot_permissions(guild, channel)
            needed = Permission.VIEW_CHANNEL | (
                Permission.SEND_MESSAGES_IN_THREADS if channel.is_thread else 0
            )
            needed |= Permission.SEND_MESSAGES
            if record.files:
                needed |= Permission.ATTACH_FILES
            if not permissions & Permission.ADMINISTRATOR and permissions & needed != needed:
                raise DiscordError(403, 50013, "Missing Permissions")
        data: JSON = record.json if isinstance(record.json, dict) else {}
        message = self._create_message(
            channel_id=channel.id,
            guild_id=guild.id if guild else None,
            data={**data, "flags": int(data.get("flags") or 0) & ~(EPHEMERAL | LOADING)},
            files=record.files,
            size_limit=self.attachment_size_limit,
        )
        if "message_reference" in data:
            message.type = 19
        return _json_response(message.to_payload())

    async def _get_channel_message(self, request: web.Request) -> web.StreamResponse:
        return _json_response(self._visible_message(request).to_payload())

    async def _patch_channel_message(self, request: web.Request) -> web.StreamResponse:
        message = self._visible_message(request)
        if message.author.id != self.bot_user.id:
            raise DiscordError(403, 50005, "Cannot edit a message authored by another user")
        record = _CURRENT_RECORD.get()
        data: JSON = record.json if isinstance(record.json, dict) else {}
        self._edit_message(message, data, record.files, self.attachment_size_limit)
        return _json_response(message.to_payload())

    async def _delete_channel_message(self, request: web.Request) -> web.StreamResponse:
        message = self._visible_message(request)
        message.deleted = True
        self._bump()
        return web.Response(status=204)

    async def _get_attachment(self, request: web.Request) -> web.StreamResponse:
        attachment = self._uploads.get(int(request.match_info["attachment_id"]))
        if attachment is None or attachment.filename != request.match_info["filename"]:
            return _json_response({"message": "404: Not Found", "code": 0}, status=404)
        return web.Response(
            body=attachment.data,
            headers={"Content-Type": attachment.content_type or "application/octet-stream"},
        )

    # ---- simulated users -------------------------------------------------------------------

    def _resolve_user(self, user: FakeUser | FakeMember | int) -> FakeUser:
        if isinstance(user, FakeMember):
            return user.user
        if isinstance(user, FakeUser):
            self._users.setdefault(user.id, user)
            return user
        try:
            return self._users[user]
        except KeyError:
            raise LookupError(f"unknown user id {user}") from None

    def _guild(self, guild_id: int) -> FakeGuild:
        try:
            return self.guilds[guild_id]
        except KeyError:
            raise LookupError(f"unknown guild id {guild_id}") from None

    async def _send_interaction(
        self,
        kind: InteractionType,
        *,
        guild_id: int | None,
        channel_id: int | None,
        user: FakeUser | FakeMember | int,
        data: JSON,
        message: FakeMessage | None = None,
        locale: str = "en-US",
        created_at: dt.datetime | None = None,
        attachment_size_limit: int | None = None,
    ) -> InteractionHandle:
        who = self._resolve_user(user)
        interaction_id = make_snowflake(created_at)
        payload: JSON = {
            "id": str(interaction_id),
            "application_id": str(self.application_id),
            "type": int(kind),
            "token": f"fake-interaction-token-{interaction_id}-{secrets.token_hex(8)}",
            "version": 1,
            "attachment_size_limit": (
                attachment_size_limit
                if attachment_size_limit is not None
                else self.attachment_size_limit
            ),
            "locale": locale,
            "entitlements": [],
            "entitlement_sku_ids": [],
            "data": data,
        }
        if guild_id is not None:
            guild = self._guild(guild_id)
            if channel_id is None:
                raise ValueError("a guild interaction needs a channel_id")
            channel = guild.channel(channel_id)
            if channel is None:
                raise LookupError(f"guild {guild_id} has no channel {channel_id}")
            member = guild.member(who.id)
            if member is None:
                raise LookupError(f"user {who.username} is not a member of guild {guild_id}")
            member_permissions = guild.permissions_for(member)
            payload.update(
                guild_id=str(guild.id),
                guild={"id": str(guild.id), "locale": guild.locale, "features": []},
                guild_locale=guild.locale,
                channel_id=str(channel.id),
                channel={
                    **self.channel_payload(channel, guild),
                    "permissions": str(member_permissions),
                },
                member={
                    **self._member_payload(guild, member),
                    "permissions": str(member_permissions),
                },
                app_permissions=str(self._bot_permissions(guild, channel)),
                context=0,
                authorizing_integration_owners={"0": str(guild.id)},
            )
        else:
            channel = self._dm_channels.get(channel_id) if channel_id is not None else None
            if channel is None:
                channel = self.dm_channel(who)
            payload.update(
                channel_id=str(channel.id),
                channel={**self.channel_payload(channel), "permissions": str(Permission.ALL)},
                user=who.to_payload(),
                app_permissions=str(Permission.BOT_DEFAULT),
                context=1,
                authorizing_integration_owners={"0": "0"},
            )
        if message is not None:
            payload["message"] = message.to_payload()
        handle = InteractionHandle(
            self,
            payload,
            guild_id=guild_id,
            channel_id=channel.id,
            user=who,
            source_message_id=message.id if message is not None else None,
        )
        self._interactions[handle.id] = handle
        self._tokens[handle.token] = handle
        await self.dispatch("INTERACTION_CREATE", payload)
        return handle

    def _command_data(
        self,
        name: str,
        guild_id: int | None,
        kind: CommandType,
    ) -> JSON:
        command = self.command(name, guild_id, kind)
        data: JSON = {"id": command["id"], "name": command["name"], "type": int(kind)}
        if "guild_id" in command:
            data["guild_id"] = command["guild_id"]
        return data

    async def slash_command(
        self,
        guild_id: int | None,
        channel_id: int | None,
        user: FakeUser | FakeMember | int,
        name: str,
        options: Mapping[str, Any] | None = None,
        subcommand: str | None = None,
        *,
        locale: str = "en-US",
        created_at: dt.datetime | None = None,
        attachment_size_limit: int | None = None,
        validate: bool = True,
    ) -> InteractionHandle:
        """A user runs ``/name [subcommand] options...``.

        ``guild_id=None`` runs it in the user's DM with the bot. ``subcommand`` is
        ``"sub"`` or ``"group sub"``. Option values are converted to the registered option
        types; USER/CHANNEL/ROLE options take a world object or an id, ATTACHMENT options an
        :class:`AttachmentUpload` (served by the fake). With ``validate``, unknown options,
        missing required options and values outside the choices raise ``ValueError`` (the
        Discord client prevents them). ``created_at`` back-dates the interaction id.
        """
        return await self._chat_input(
            InteractionType.APPLICATION_COMMAND,
            guild_id,
            channel_id,
            user,
            name,
            options or {},
            subcommand,
            focused=None,
            locale=locale,
            created_at=created_at,
            attachment_size_limit=attachment_size_limit,
            validate=validate,
        )

    async def autocomplete(
        self,
        guild_id: int | None,
        channel_id: int | None,
        user: FakeUser | FakeMember | int,
        name: str,
        options: Mapping[str, Any],
        focused: str,
        subcommand: str | None = None,
    ) -> InteractionHandle:
        """A user types into option ``focused``; the bot answers with callback type 8."""
        return await self._chat_input(
            InteractionType.AUTOCOMPLETE,
            guild_id,
            channel_id,
            user,
            name,
            options,
            subcommand,
            focused=focused,
            locale="en-US",
            created_at=None,
            attachment_size_limit=None,
            validate=False,
        )

    async def _chat_input(
        self,
        kind: InteractionType,
        guild_id: int | None,
        channel_id: int | None,
        user: FakeUser | FakeMember | int,
        name: str,
        options: Mapping[str, Any],
        subcommand: str | None,
        *,
        focused: str | None,
        locale: str,
        created_at: dt.datetime | None,
        attachment_size_limit: int | None,
        validate: bool,
    ) -> InteractionHandle:
        command = self.command(name, guild_id)
        data = self._command_data(name, guild_id, CommandType.CHAT_INPUT)
        resolved: JSON = {}
        channel_for_uploads = channel_id or 0
        definitions: list[JSON] = command.get("options") or []
        path = subcommand.split() if subcommand else []
        wrappers: list[JSON] = []
        for part in path:
            definition = next(
                (
                    d
                    for d in definitions
                    if d["name"] == part
                    and d["type"] in (OptionType.SUB_COMMAND, OptionType.SUB_COMMAND_GROUP)
                ),
                None,
            )
            if definition is None:
                raise ValueError(f"/{name} has no subcommand {part!r}")
            wrappers.append({"name": part, "type": int(definition["type"]), "options": []})
            definitions = definition.get("options") or []
        built = self._build_options(
            definitions,
            options,
            resolved,
            guild_id,
            channel_for_uploads,
            focused=focused,
            validate=validate,
        )
        if wrappers:
            wrappers[-1]["options"] = built
            for outer, inner in itertools.pairwise(wrappers):
                outer["options"] = [inner]
            data["options"] = [wrappers[0]]
        elif built:
            data["options"] = built
        if resolved:
            data["resolved"] = resolved
        return await self._send_interaction(
            kind,
            guild_id=guild_id,
            channel_id=channel_id,
            user=user,
            data=data,
            locale=locale,
            created_at=created_at,
            attachment_size_limit=attachment_size_limit,
        )

    def _build_options(
        self,
        definitions: Sequence[JSON],
        values: Mapping[str, Any],
        resolved: JSON,
        guild_id: int | None,
        channel_id: int,
        *,
        focused: str | None,
        validate: bool,
    ) -> list[JSON]:
        by_name = {d["name"]: d for d in definitions}
        unknown = sorted(set(values) - set(by_name))
        if unknown:
            raise ValueError(f"unknown options {unknown}; the command has {sorted(by_name)}")
        built: list[JSON] = []
        for definition in definitions:
            option_name = definition["name"]
            if option_name not in values:
                if validate and definition.get("required"):
                    raise ValueError(f"required option {option_name!r} is missing")
                continue
            kind = OptionType(int(definition["type"]))
            value = values[option_name]
            if option_name == focused:
                built.append(
                    {"name": option_name, "type": int(kind), "value": value, "focused": True}
                )
                continue
            converted = self._option_value(kind, value, resolved, guild_id, channel_id)
            choices = definition.get("choices")
            if validate and choices and converted not in [c["value"] for c in choices]:
                raise ValueError(
                    f"{converted!r} is not a choice of {option_name!r}: "
                    f"{[c['value'] for c in choices]}"
                )
            built.append({"name": option_name, "type": int(kind), "value": converted})
        return built

    def _option_value(
        self,
        kind: OptionType,
        value: Any,
        resolved: JSON,
        guild_id: int | None,
        channel_id: int,
    ) -> Any:
        if kind == OptionType.STRING:
            return str(value)
        if kind == OptionType.INTEGER:
            return int(value)
        if kind == OptionType.BOOLEAN:
            return bool(value)
        if kind == OptionType.NUMBER:
            return float(value)
        guild = self.guilds.get(guild_id) if guild_id is not None else None
        if kind == OptionType.ATTACHMENT:
            if not isinstance(value, AttachmentUpload):
                raise TypeError("an ATTACHMENT option takes an AttachmentUpload")
            attachment = self._new_attachment(
                channel_id, value.filename, value.data, content_type=value.content_type
            )
            payload = attachment.to_payload()
            payload["ephemeral"] = True
            resolved.setdefault("attachments", {})[str(attachment.id)] = payload
            return str(attachment.id)
        if kind == OptionType.CHANNEL:
            channel_ref = value.id if isinstance(value, FakeChannel) else int(value)
            channel, channel_guild = self._locate_channel(channel_ref)
            payload = self.channel_payload(channel, channel_guild)
            payload["permissions"] = str(Permission.ALL)
            resolved.setdefault("channels", {})[str(channel.id)] = payload
            return str(channel.id)
        if kind == OptionType.ROLE or (
            kind == OptionType.MENTIONABLE
            and isinstance(value, FakeRole | int)
            and guild is not None
            and guild.role(value if isinstance(value, int) else value.id) is not None
        ):
            if guild is None:
                raise ValueError("role options need a guild")
            role = guild.role(value if isinstance(value, int) else value.id)
            if role is None:
                raise LookupError(f"guild {guild.id} has no role {value!r}")
            resolved.setdefault("roles", {})[str(role.id)] = role.to_payload()
            return str(role.id)
        if kind in (OptionType.USER, OptionType.MENTIONABLE):
            target = self._resolve_user(value)
            resolved.setdefault("users", {})[str(target.id)] = target.to_payload()
            member = guild.member(target.id) if guild is not None else None
            if guild is not None and member is not None:
                member_payload = self._member_payload(guild, member, with_permissions=True)
                del member_payload["user"]
                resolved.setdefault("members", {})[str(target.id)] = member_payload
            return str(target.id)
        raise ValueError(f"unsupported option type {kind!r}")

    def _message_or_id(self, message: FakeMessage | int) -> FakeMessage:
        found = self._messages.get(message if isinstance(message, int) else message.id)
        if found is None or found.deleted:
            raise LookupError(f"no message {message!r}")
        return found

    async def click_button(
        self,
        message: FakeMessage | int,
        custom_id: str,
        user: FakeUser | FakeMember | int,
    ) -> InteractionHandle:
        """A user clicks the button ``custom_id`` on ``message``."""
        target = self._message_or_id(message)
        component = target.component(custom_id)
        if component is None or component.get("type") != 2:
            raise LookupError(
                f"message {target.id} has no button {custom_id!r}: {target.custom_ids}"
            )
        if component.get("disabled"):
            raise ValueError(f"button {custom_id!r} is disabled")
        return await self._send_interaction(
            InteractionType.MESSAGE_COMPONENT,
            guild_id=target.guild_id,
            channel_id=target.channel_id,
            user=user,
            data={"custom_id": custom_id, "component_type": 2},
            message=target,
        )

    async def select(
        self,
        message: FakeMessage | int,
        custom_id: str,
        values: Sequence[str],
        user: FakeUser | FakeMember | int,
    ) -> InteractionHandle:
        """A user picks ``values`` in the select menu ``custom_id`` on ``message``."""
        target = self._message_or_id(message)
        component = target.component(custom_id)
        if component is None or component.get("type") not in (3, 5, 6, 7, 8):
            raise LookupError(f"message {target.id} has no select {custom_id!r}")
        return await self._send_interaction(
            InteractionType.MESSAGE_COMPONENT,
            guild_id=target.guild_id,
            channel_id=target.channel_id,
            user=user,
            data={
                "custom_id": custom_id,
                "component_type": component["type"],
                "values": list(values),
            },
            message=target,
        )

    def _modal_origin(self, custom_id: str, user_id: int) -> InteractionHandle | None:
        for handle in reversed(list(self._interactions.values())):
            callback = handle.callback
            if (
                callback is not None
                and callback.type == CallbackType.MODAL
                and callback.custom_id == custom_id
                and handle.user.id == user_id
            ):
                return handle
        return None

    async def submit_modal(
        self,
        custom_id: str,
        values: Mapping[str, str | Sequence[str]],
        user: FakeUser | FakeMember | int,
        message: FakeMessage | int | None = None,
    ) -> InteractionHandle:
        """A user submits the modal ``custom_id`` that the bot showed them.

        ``values`` maps each input's custom id to its text (or a list, for selects). The
        submission mirrors the modal's layout (action rows or labels). ``message`` defaults
        to the message the modal was opened from, if any.
        """
        who = self._resolve_user(user)
        origin = self._modal_origin(custom_id, who.id)
        if origin is None or origin.callback is None:
            raise LookupError(f"the bot never showed modal {custom_id!r} to {who.username}")
        layout: list[JSON] = origin.callback.data.get("components") or []
        remaining = dict(values)
        components = _modal_submission(layout, remaining)
        if remaining:
            raise ValueError(f"modal {custom_id!r} has no inputs {sorted(remaining)}")
        if message is None and origin.source_message_id is not None:
            message = origin.source_message_id
        return await self._send_interaction(
            InteractionType.MODAL_SUBMIT,
            guild_id=origin.guild_id,
            channel_id=origin.channel_id,
            user=who,
            data={"custom_id": custom_id, "components": components},
            message=self._message_or_id(message) if message is not None else None,
        )

    async def message_context_menu(
        self,
        name: str,
        message: FakeMessage | int,
        user: FakeUser | FakeMember | int,
    ) -> InteractionHandle:
        """A user runs the message command ``name`` (Apps menu) on ``message``."""
        target = self._message_or_id(message)
        data = self._command_data(name, target.guild_id, CommandType.MESSAGE)
        data["target_id"] = str(target.id)
        data["resolved"] = {"messages": {str(target.id): target.to_payload()}}
        return await self._send_interaction(
            InteractionType.APPLICATION_COMMAND,
            guild_id=target.guild_id,
            channel_id=target.channel_id,
            user=user,
            data=data,
        )

    async def user_context_menu(
        self,
        name: str,
        target: FakeUser | FakeMember | int,
        guild_id: int,
        channel_id: int,
        user: FakeUser | FakeMember | int,
    ) -> InteractionHandle:
        """A user runs the user command ``name`` on ``target``."""
        data = self._command_data(name, guild_id, CommandType.USER)
        resolved: JSON = {}
        data["target_id"] = self._option_value(
            OptionType.USER, target, resolved, guild_id, channel_id
        )
        data["resolved"] = resolved
        return await self._send_interaction(
            InteractionType.APPLICATION_COMMAND,
            guild_id=guild_id,
            channel_id=channel_id,
            user=user,
            data=data,
        )

    def seed_message(
        self,
        channel_id: int,
        content: str = "",
        *,
        components: Sequence[JSON] = (),
        embeds: Sequence[JSON] = (),
        author: FakeUser | FakeMember | int | None = None,
        flags: int = 0,
    ) -> FakeMessage:
        """Put a message in the model without sending anything to the bot.

        E.g. a control panel the bot posted before a restart: clicking its buttons tests
        persistent views. The author defaults to the bot.
        """
        channel, guild = self._locate_channel(channel_id)
        return self._store(
            FakeMessage(
                id=make_snowflake(),
                channel_id=channel.id,
                guild_id=guild.id if guild else None,
                author=self.bot_user if author is None else self._resolve_user(author),
                content=content,
                embeds=list(embeds),
                components=list(components),
                flags=flags,
            )
        )

    async def send_user_message(
        self,
        channel_id: int,
        user: FakeUser | FakeMember | int,
        content: str,
        *,
        attachments: Sequence[AttachmentUpload] = (),
    ) -> FakeMessage:
        """A user posts a message: stored, and dispatched as MESSAGE_CREATE."""
        who = self._resolve_user(user)
        channel, guild = self._locate_channel(channel_id)
        message = FakeMessage(
            id=make_snowflake(),
            channel_id=channel.id,
            guild_id=guild.id if guild else None,
            author=who,
            content=content,
        )
        message.attachments = [
            self._new_attachment(channel.id, a.filename, a.data, content_type=a.content_type)
            for a in attachments
        ]
        self._store(message)
        payload = message.to_payload()
        if guild is not None:
            member = guild.member(who.id)
            if member is not None:
                member_payload = self._member_payload(guild, member)
                del member_payload["user"]
                payload["member"] = member_payload
        await self.dispatch("MESSAGE_CREATE", payload)
        return message


_EXTRA_MESSAGE_FIELDS: Final = frozenset(
    {"message_reference", "allowed_mentions", "tts", "nonce", "poll", "sticker_ids"}
)


def _message_type_for(handle: InteractionHandle) -> int:
    if handle.type == InteractionType.APPLICATION_COMMAND:
        command_type = int(handle.payload["data"].get("type", 1))
        return 20 if command_type == CommandType.CHAT_INPUT else 23
    return 0


def _modal_submission(layout: Sequence[JSON], values: dict[str, str | Sequence[str]]) -> list[JSON]:
    """The submitted components of a modal, mirroring its layout; pops used ``values``."""
    submitted: list[JSON] = []
    for component in layout:
        kind = component.get("type")
        if kind == 1:
            submitted.append(
                {
                    "type": 1,
                    "components": _modal_submission(component.get("components") or [], values),
                }
            )
        elif kind == 18 and isinstance(component.get("component"), dict):
            inner = _modal_submission([component["component"]], values)
            submitted.append({"type": 18, "component": inner[0]})
        elif "custom_id" in component:
            custom_id = component["custom_id"]
            if kind == 4:
                value = values.pop(custom_id, component.get("value") or "")
                if not isinstance(value, str):
                    raise TypeError(f"text input {custom_id!r} takes a string")
                submitted.append({"type": 4, "custom_id": custom_id, "value": value})
            else:
                picked = values.pop(custom_id, [])
                submitted.append(
                    {
                        "type": kind,
                        "custom_id": custom_id,
                        "values": [picked] if isinstance(picked, str) else list(picked),
                    }
                )
        else:
            submitted.append({"type": kind})
    return submitted


# --------------------------------------------------------------------------------------------
# Running a client against the fake
# --------------------------------------------------------------------------------------------


@contextlib.asynccontextmanager
async def running_client(
    client: discord.Client,
    fake: FakeDiscord,
    *,
    token: str | None = None,
    ready_timeout: float = 5.0,
) -> AsyncIterator[discord.Client]:
    """Start ``client`` against ``fake`` and wait for ``on_ready``; close it on exit.

    Patches discord.py's REST base and gateway for the whole run. Build the client with a
    small ``guild_ready_timeout`` (e.g. 0.05): discord.py waits that long after the last
    GUILD_CREATE before ``on_ready``.
    """
    with fake.patch_discord():
        task = asyncio.create_task(client.start(token or fake.token), name="fake-discord-client")
        try:
            deadline = time.monotonic() + ready_timeout
            while not client.is_ready():
                if task.done():
                    task.result()  # raises the start-up error
                    raise RuntimeError("the client stopped before it was ready")
                if time.monotonic() > deadline:
                    raise TimeoutError(f"the client was not ready within {ready_timeout}s")
                await asyncio.sleep(0.01)
            yield client
        finally:
            await client.close()
            done, _ = await asyncio.wait({task}, timeout=5.0)
            if not done:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            crash = None if task.cancelled() else task.exception()
        # Reached only when nothing else is propagating: surface a crash of the client.
        if crash is not None:
            raise crash
