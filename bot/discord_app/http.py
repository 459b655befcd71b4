"""Discord's REST API for the bot: timeouts on every request, and patience at start-up.

**Timeouts.** discord.py sends every REST request through one aiohttp session that
``HTTPClient.static_login`` creates at login: its own requests (``HTTPClient.request``)
and, directly on that session, the interaction callbacks, webhook follow-ups and edits
(``discord.webhook.async_``, ``discord.interactions``). It sets no timeout, so aiohttp's
default applies: five minutes in all and none for the answer, and a connection that never
answers fails after five minutes with an empty message. discord.py offers no option for it
(``Client`` takes a connector, a proxy and a trace config; none carries timeouts), so
:class:`RestClient`, a subclass of discord.py's ``HTTPClient``:

* passes aiohttp's per-request ``timeout`` (an argument of ``ClientSession.request`` that
  ``HTTPClient.request`` forwards) to every request of its own: 10 s to connect, 30 s for
  the answer (aiohttp's ``sock_read``, counted once the request is sent, so a slow upload
  is not cut short), 30 s in all, 120 s in all for a request with files;
* makes the upload limits the session's default the first time it sees the session, right
  after ``static_login`` created it and before the login request, so that the requests
  discord.py sends on the session directly (which may carry files) have them too. This is
  the one place that touches private names: the session as ``_HTTPClient__session`` (the
  name discord.py's own webhook and interaction code reads it by) and aiohttp's
  ``ClientSession._timeout``. Without them (another discord.py or aiohttp) those requests
  keep aiohttp's default and a warning says so.

The bot's ``HTTPClient`` becomes a :class:`RestClient` through :meth:`RestClient.adopt`,
which changes its class: ``Client`` has no parameter for its HTTP client, and its
connection state and command tree already hold that object. The subclass adds attributes
and overrides ``request`` only. The gateway's websocket is left alone: its connect sets
its own timeouts, and aiohttp drops the answer timeout once the connection is upgraded.

**Patience at start-up.** Until :meth:`RestClient.started`, the requests that bring the bot
up (:data:`START_ROUTES`: the login's ``GET /users/@me``, ``GET /oauth2/applications/@me``,
``GET /gateway/bot``, the command sync) are checked as they come back (aiohttp's
per-request ``raise_for_status`` hook). A 5xx answer, an answer that is not JSON (a proxy's
HTML page, whatever its status), no answer in time or no connection is one warning line
naming Discord, the URL and what came back, never a traceback; the request is sent again
after an exponential backoff with jitter (1 s doubling to 60 s), for as long as it takes:
a bot started during a Discord incident comes up when Discord does. The check also stops
discord.py's own loop for 500, 502, 504 and 524 (five tries with sleeps of 1, 3, 5, 7 and
9 s, then an exception whose traceback quotes the whole page) so that each attempt is one
line. A 4xx answer that is JSON is Discord's and is not retried (a 401 is a bad token:
discord.py raises ``LoginFailure``). Once the bot is ready these routes fail like any other
request; the runner ends start-up through :func:`when_ready`.

Other requests are not retried here: a timeout or a 5xx reaches the caller as an exception
(``TimeoutError``, ``aiohttp.ClientError``, ``discord.DiscordServerError``) for its own retry
policy (the delivery's outbox).

**Metrics.** :func:`rest_trace` is an aiohttp trace config for the session (discord.py's
``http_trace``): every answer from the REST API is timed by method and route template, and
every 429 counted by its scope. The route is discord.py's ``Route.path`` for the requests
:class:`RestClient` sends (passed along as aiohttp's ``trace_request_ctx``); for those sent
on the session directly (interaction callbacks, webhook edits) it is rebuilt from the URL
by :func:`route_template`. Either way ids and tokens become ``{placeholders}``.
"""

from __future__ import annotations

import asyncio
import logging
import random
import re
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any, Final, Protocol, Self, runtime_checkable

import aiohttp
from discord.file import File
from discord.http import HTTPClient, Route

log = logging.getLogger(__name__)

START_ROUTES: Final = frozenset(
    {
        ("GET", "/users/@me"),
        ("GET", "/oauth2/applications/@me"),
        ("GET", "/applications/@me"),
        ("GET", "/gateway"),
        ("GET", "/gateway/bot"),
        ("GET", "/applications/{application_id}/commands"),
        ("PUT", "/applications/{application_id}/commands"),
        ("GET", "/applications/{application_id}/guilds/{guild_id}/commands"),
        ("PUT", "/applications/{application_id}/guilds/{guild_id}/commands"),
    }
)
"""``(method, route template)`` of the requests that start the bot."""

JSON_TYPE: Final = "application/json"
"""The only Content-Type discord.py reads as JSON (anything else is returned as text)."""
SNIPPET: Final = 100
"""Characters of an unexpected body quoted in the log (whitespace collapsed)."""
_SECRET_PATH: Final = re.compile(r"/(webhooks|interactions)/(\d+)/[^/?]+")


@dataclass(frozen=True)
class RestTimeouts:
    """Seconds for one REST request: to connect, for the answer once the request is sent,
    and in all (longer for requests that upload files)."""

    connect: float = 10.0
    answer: float = 30.0
    total: float = 30.0
    upload_total: float = 120.0

    def plain(self) -> aiohttp.ClientTimeout:
        return aiohttp.ClientTimeout(
            total=self.total, connect=self.connect, sock_connect=self.connect, sock_read=self.answer
        )

    def upload(self) -> aiohttp.ClientTimeout:
        return aiohttp.ClientTimeout(
            total=self.upload_total,
            connect=self.connect,
            sock_connect=self.connect,
            sock_read=self.answer,
        )


@dataclass(frozen=True)
class Backoff:
    """Exponential backoff with jitter: attempt *n* waits between half and all of
    ``min(cap, first * 2 ** (n - 1))`` seconds."""

    first: float = 1.0
    cap: float = 60.0

    def delay(self, attempt: int, rng: Callable[[], float] = random.random) -> float:
        ceiling = min(self.cap, self.first * 2.0 ** max(0, attempt - 1))
        return ceiling * (0.5 + rng() / 2)


@dataclass(frozen=True)
class RestPolicy:
    """How the bot talks to Discord's REST API (tests pass small values)."""

    timeouts: RestTimeouts = field(default_factory=RestTimeouts)
    backoff: Backoff = field(default_factory=Backoff)


class DiscordUnavailable(Exception):
    """Discord (or a proxy before it) gave an answer that is not the API's: a 5xx or a body
    that is not JSON. ``what`` says what came back, in one line."""

    def __init__(self, method: str, url: str, what: str) -> None:
        super().__init__(f"{method} {url}: {what}")
        self.method = method
        self.url = url
        self.what = what


def safe_url(url: object) -> str:
    """``url`` with interaction and webhook tokens replaced by ``***`` (the bot token is
    never in a URL)."""
    return _SECRET_PATH.sub(r"/\1/\2/***", str(url))


def snippet(text: str, limit: int = SNIPPET) -> str:
    """The first ``limit`` characters of ``text`` with whitespace collapsed."""
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


def describe_failure(exc: BaseException, timeout: aiohttp.ClientTimeout | None = None) -> str:
    """One line for a request that got no usable answer (never empty, never a traceback)."""
    if isinstance(exc, DiscordUnavailable):
        return exc.what
    if isinstance(exc, aiohttp.ConnectionTimeoutError):
        seconds = timeout.sock_connect if timeout is not None else None
        return f"no connection in {seconds:g} s" if seconds else "no connection in time"
    if isinstance(exc, aiohttp.ServerTimeoutError):
        seconds = timeout.sock_read if timeout is not None else None
        return f"no answer in {seconds:g} s" if seconds else "no answer in time"
    if isinstance(exc, TimeoutError):
        seconds = timeout.total if timeout is not None else None
        return f"no answer in {seconds:g} s" if seconds else "no answer in time"
    if isinstance(exc, aiohttp.ClientConnectorError):
        reason = exc.os_error.strerror or str(exc.os_error) or type(exc.os_error).__name__
        return f"no connection ({reason})"
    text = str(exc).strip()
    return f"{type(exc).__name__}: {snippet(text)}" if text else type(exc).__name__


async def _answer_of(response: aiohttp.ClientResponse) -> str | None:
    """What is wrong with an answer at start-up, or ``None`` when it is the API's."""
    content_type = response.headers.get("Content-Type", "")
    if response.status < 500 and (content_type == JSON_TYPE or response.status == 204):
        return None
    body = await response.read()
    if response.status < 500 and not body:
        return None
    text = snippet(body.decode("utf-8", "replace")) or "(empty body)"
    label = f"{response.status} {response.reason or ''}".strip()
    if response.status < 500:
        return f"answered {label} with {content_type or 'no Content-Type'}, not JSON: {text}"
    return f"answered {label}: {text}"


class RestClient(HTTPClient):
    """discord.py's ``HTTPClient`` with timeouts and patience at start-up (module doc)."""

    policy: RestPolicy
    starting: bool
    _session_timeout_set: bool

    @classmethod
    def adopt(cls, http: HTTPClient, policy: RestPolicy | None = None) -> Self:
        """Make the client's own ``HTTPClient`` a :class:`RestClient` (before login)."""
        http.__class__ = cls
        if not isinstance(http, cls):  # pragma: no cover - the assignment above
            raise TypeError(type(http).__name__)
        http.policy = policy or RestPolicy()
        http.starting = True
        http._session_timeout_set = False
        return http

    def started(self) -> None:
        """Start-up is over: the start-up routes now fail like any other request."""
        self.starting = False

    def _set_session_timeout(self) -> None:
        if self._session_timeout_set:
            return
        session = getattr(self, "_HTTPClient__session", None)
        if isinstance(session, aiohttp.ClientSession) and isinstance(
            getattr(session, "_timeout", None), aiohttp.ClientTimeout
        ):
            session._timeout = self.policy.timeouts.upload()  # see the module doc
            self._session_timeout_set = True
        elif self.token is not None:  # pragma: no cover - logged in, yet no session known
            self._session_timeout_set = True
            log.warning("cannot set timeouts on discord.py's session: webhook requests have none")

    async def request(
        self,
        route: Route,
        *,
        files: Sequence[File] | None = None,
        form: Iterable[dict[str, Any]] | None = None,
        **kwargs: Any,
    ) -> Any:
        self._set_session_timeout()
        timeouts = self.policy.timeouts
        timeout = timeouts.upload() if files or form else timeouts.plain()
        kwargs.setdefault("timeout", timeout)
        kwargs.setdefault("trace_request_ctx", {"route": route.path})
        if not (self.starting and (route.method, route.path) in START_ROUTES):
            return await super().request(route, files=files, form=form, **kwargs)
        return await self._patiently(route, files, form, kwargs)

    async def _patiently(
        self,
        route: Route,
        files: Sequence[File] | None,
        form: Iterable[dict[str, Any]] | None,
        kwargs: dict[str, Any],
    ) -> Any:
        url = safe_url(route.url)

        async def check(response: aiohttp.ClientResponse) -> None:
            problem = await _answer_of(response)
            if problem is not None:
                raise DiscordUnavailable(route.method, url, problem)

        kwargs["raise_for_status"] = check
        attempt = 0
        while True:
            try:
                data = await super().request(route, files=files, form=form, **kwargs)
            except (DiscordUnavailable, aiohttp.ClientError, OSError) as exc:
                # OSError covers TimeoutError; 4xx answers raise HTTPException: not retried.
                attempt += 1
                delay = self.policy.backoff.delay(attempt)
                log.warning(
                    "Discord REST API: %s %s: %s; trying again in %.1f s (attempt %d)",
                    route.method,
                    url,
                    describe_failure(exc, kwargs.get("timeout")),
                    delay,
                    attempt,
                )
                await asyncio.sleep(delay)
                for file in files or ():
                    file.reset(seek=True)
                continue
            if attempt:
                log.info("Discord REST API answers again: %s %s", route.method, url)
            return data


async def when_ready(ready: Awaitable[None], rest: RestClient) -> None:
    """End ``rest``'s start-up once ``ready`` (the client's ``wait_until_ready()``) returns."""
    await ready
    rest.started()


# ---------------------------------------------------------------------------- metrics
@runtime_checkable
class RestObserver(Protocol):
    """Where :func:`rest_trace` reports (:class:`bot.observability.metrics.Metrics`)."""

    def rest_answered(self, method: str, route: str, seconds: float) -> None: ...

    def rate_limited(self, scope: str) -> None: ...


_ID_NAMES: Final = {
    "applications": "{application_id}",
    "channels": "{channel_id}",
    "commands": "{command_id}",
    "guilds": "{guild_id}",
    "interactions": "{interaction_id}",
    "members": "{user_id}",
    "messages": "{message_id}",
    "reactions": "{emoji}",
    "recipients": "{user_id}",
    "roles": "{role_id}",
    "stickers": "{sticker_id}",
    "threads": "{thread_id}",
    "users": "{user_id}",
    "webhooks": "{webhook_id}",
}
_TOKEN_AFTER: Final = {"interactions": "{interaction_token}", "webhooks": "{webhook_token}"}
_LITERAL: Final = re.compile(r"@?[a-z][a-z-]*(?:_[a-z-]+)*")
_MAX_SEGMENTS: Final = 8
RATE_LIMIT_SCOPES: Final = frozenset({"user", "shared", "global"})


def route_template(path: str, base_path: str = "") -> str:
    """discord.py's route template for a request path: ``/api/v10/channels/1/messages`` ->
    ``/channels/{channel_id}/messages`` (``base_path`` is the API's prefix, ``/api/v10``).

    A segment that is not a lowercase word (an id, a token, an emoji) becomes a placeholder
    named after the segment before it; so the result is one of a bounded set however many
    channels, messages and interactions there are.
    """
    if base_path and path.startswith(base_path):
        path = path[len(base_path) :]
    parts = [p for p in path.split("/") if p][:_MAX_SEGMENTS]
    out: list[str] = []
    for index, part in enumerate(parts):
        before = parts[index - 1] if index else ""
        two_before = parts[index - 2] if index > 1 else ""
        if two_before in _TOKEN_AFTER and before.isdigit():
            out.append(_TOKEN_AFTER[two_before])  # /webhooks/{id}/{token}
        elif _LITERAL.fullmatch(part) and before != "reactions":
            out.append(part)
        else:
            out.append(_ID_NAMES.get(before, "{id}"))
    return "/" + "/".join(out)


def rate_limit_scope(headers: Any) -> str:
    """A 429's scope: Discord's ``X-RateLimit-Scope`` (user, shared, global), else
    ``global`` when ``X-RateLimit-Global`` says so, else ``route``."""
    scope = str(headers.get("X-RateLimit-Scope", "")).lower()
    if scope in RATE_LIMIT_SCOPES:
        return scope
    if str(headers.get("X-RateLimit-Global", "")).lower() == "true":
        return "global"
    return "route"


def rest_trace(observer: RestObserver) -> aiohttp.TraceConfig:
    """An aiohttp trace config timing every answer from Discord's REST API (module doc).

    Requests to anything but ``Route.BASE`` (the gateway's websocket, an attachment's CDN
    URL) are not counted.
    """
    trace = aiohttp.TraceConfig()

    async def on_start(
        _: aiohttp.ClientSession, context: SimpleNamespace, __: aiohttp.TraceRequestStartParams
    ) -> None:
        context.started = time.perf_counter()

    async def on_end(
        _: aiohttp.ClientSession, context: SimpleNamespace, params: aiohttp.TraceRequestEndParams
    ) -> None:
        seconds = time.perf_counter() - getattr(context, "started", time.perf_counter())
        url = str(params.url)
        base = Route.BASE
        if not url.startswith(base):
            return
        given = getattr(context, "trace_request_ctx", None)
        route = given.get("route") if isinstance(given, dict) else None
        if not isinstance(route, str):
            route = route_template(params.url.path, _path_of(base))
        observer.rest_answered(params.method, route, seconds)
        if params.response.status == 429:
            observer.rate_limited(rate_limit_scope(params.response.headers))

    trace.on_request_start.append(on_start)
    trace.on_request_end.append(on_end)
    trace.freeze()
    return trace


def _path_of(base: str) -> str:
    after_scheme = base.split("://", 1)[-1]
    slash = after_scheme.find("/")
    return after_scheme[slash:].rstrip("/") if slash >= 0 else ""
