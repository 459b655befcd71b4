"""``python -m bot run``: settings -> database -> engine -> bot and service; signals; exit.

SIGINT and SIGTERM stop the bot gracefully: no new jobs are accepted, the running job
finishes (or, past the grace period, is kept in the database and resumes at the next
start), deliveries in flight complete, then the bot disconnects. The token is never
logged, only where it came from.

Every REST request has connect and answer timeouts, and the requests that start the bot
are retried with backoff while Discord (or a proxy before it) answers 5xx, HTML or nothing:
one warning line per attempt, and the bot comes up when Discord does
(:mod:`bot.discord_app.http`). Failures that end the run are one error line each.

With ``metrics.enabled``, the operations server (:mod:`bot.observability.server`:
``/metrics``, ``/healthz``, ``/readyz``) listens before the model loads and stops last; one
line says where. An address already in use ends the run with one error line: probes and
dashboards silently left without their server are worse than a bot that does not start.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
from collections.abc import Iterator, Mapping
from typing import Any, Final

import aiohttp
import discord
import yarl
from discord.gateway import DiscordWebSocket
from discord.http import Route

from bot.config import TOKEN_ENV, DiscordSettings, Settings
from bot.discord_app.client import AnimagineBot, create_bot
from bot.discord_app.http import (
    Backoff,
    DiscordUnavailable,
    RestClient,
    RestPolicy,
    describe_failure,
    safe_url,
    snippet,
    when_ready,
)
from bot.discord_app.ops import BotProbes
from bot.engine import DeviceError, Engine, ModelLoadError
from bot.engine.front import PromptFront
from bot.logs import setup_logging
from bot.observability.metrics import Metrics
from bot.observability.server import OpsServer, PortInUse
from bot.observability.telemetry import Telemetry
from bot.queue.output import Classifier
from bot.storage import Database, DatabaseError, prepare_database

log = logging.getLogger(__name__)

EXIT_OK: Final = 0
EXIT_FAILURE: Final = 1
EXIT_CONFIG: Final = 2
DEFAULTS: Final = DiscordSettings()


def token_source(settings: Settings, environ: Mapping[str, str] | None = None) -> str:
    """Where the token came from, for the log (never the token itself)."""
    env = os.environ if environ is None else environ
    if env.get(TOKEN_ENV, "").strip():
        return TOKEN_ENV
    if settings.discord.token_file:
        return f"token file {settings.discord.token_file}"
    return "the settings"


@contextlib.contextmanager
def endpoints(config: DiscordSettings) -> Iterator[None]:
    """Point discord.py at the configured REST API and gateway (a proxy), then restore.

    Both are process-global class attributes; only values that differ from Discord's own
    are set.
    """
    old_base, old_gateway = Route.BASE, DiscordWebSocket.DEFAULT_GATEWAY
    if config.rest_url != DEFAULTS.rest_url:
        Route.BASE = config.rest_url.rstrip("/")
        log.info("REST API at %s", Route.BASE)
    if config.gateway_url != DEFAULTS.gateway_url:
        DiscordWebSocket.DEFAULT_GATEWAY = yarl.URL(config.gateway_url)
        log.info("gateway at %s", config.gateway_url)
    try:
        yield
    finally:
        Route.BASE, DiscordWebSocket.DEFAULT_GATEWAY = old_base, old_gateway


class GatewayRetryLines(logging.Filter):
    """One line for each failed gateway connection instead of discord.py's traceback.

    discord.py retries a gateway it cannot reach (with its own backoff) and logs every
    failure as ``Attempting a reconnect in N s`` with the exception's traceback; this
    filter, on the ``discord.client`` logger, makes that a warning naming Discord's gateway
    and what came back. Before the first connection it drops the record: :func:`_start`
    says it then.
    """

    def __init__(self, gateway_url: str, client: discord.Client) -> None:
        super().__init__()
        self.gateway_url = gateway_url
        self.client = client

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if exc is None or not str(record.msg).startswith("Attempting a reconnect"):
            return True
        if getattr(self.client, "ws", None) is None:
            return False
        delay = record.args[0] if isinstance(record.args, tuple) and record.args else 0.0
        record.msg = "Discord gateway %s: %s; reconnecting in %.1f s"
        record.args = (self.gateway_url, _gateway_failure(exc), delay)
        record.exc_info = record.exc_text = None
        record.levelno, record.levelname = logging.WARNING, "WARNING"
        return True


def _gateway_failure(exc: BaseException) -> str:
    if isinstance(exc, aiohttp.WSServerHandshakeError):
        return f"answered {exc.status} ({exc.message or 'no upgrade'})"
    if isinstance(exc, discord.ConnectionClosed):
        return f"connection closed (code {exc.code})"
    return describe_failure(exc)


def _install_signals(loop: asyncio.AbstractEventLoop, stop: asyncio.Event) -> list[int]:
    def on_signal(signum: int) -> None:
        if stop.is_set():
            log.warning("already stopping; waiting for the running job")
            return
        log.info("%s received: stopping after the running job", signal.Signals(signum).name)
        stop.set()

    installed: list[int] = []
    for signum in (signal.SIGINT, signal.SIGTERM):
        try:
            loop.add_signal_handler(signum, on_signal, signum)
        except (NotImplementedError, RuntimeError, ValueError):  # not the main thread; Windows
            continue
        installed.append(signum)
    return installed


async def serve(
    settings: Settings,
    *,
    stop: asyncio.Event | None = None,
    rest: RestPolicy | None = None,
    **bot_options: Any,
) -> int:
    """Run the bot until ``stop`` is set (or SIGINT/SIGTERM); returns the exit status.

    ``rest`` sets the REST timeouts and the start-up backoff (tests make them short).
    """
    token = settings.discord.token
    if token is None:
        log.error("no Discord token: set %s or discord.token_file in the config", TOKEN_ENV)
        return EXIT_CONFIG
    log.info("token from %s", token_source(settings))
    stop = stop or asyncio.Event()
    with endpoints(settings.discord):
        try:
            db = await asyncio.to_thread(prepare_database, settings)
        except DatabaseError as exc:
            log.error("%s", exc)  # noqa: TRY400 - the message says it all
            return EXIT_FAILURE
        try:
            return await _serve(
                settings,
                db,
                token.get_secret_value(),
                stop,
                bot_options,
                policy=rest or RestPolicy(),
            )
        finally:
            await asyncio.to_thread(db.close)


async def load_classifier(settings: Settings) -> tuple[Classifier | None, str | None]:
    """The image classifier of the moderation policy, loaded off the event loop.

    ``(None, reason)`` when there is none or it cannot load: images then count as
    unchecked, and ``moderation.fail_closed`` decides whether they are posted.
    """
    config = settings.moderation.classifier
    if not config.source:
        return None, None
    from bot.moderation.classifier import ClassifierUnavailable, Tagger

    try:
        tagger = await asyncio.to_thread(Tagger.from_settings, config)
    except ClassifierUnavailable as exc:
        log.error(  # noqa: TRY400 - the message says it all
            "%s; images count as unchecked and the image-side hard block cannot run", exc
        )
        return None, str(exc)
    if tagger.problem is not None:
        # Loud: the bot still serves, but sexual images are withheld everywhere.
        log.error(
            "image classifier %s: the hard block is incomplete: %s", config.source, tagger.problem
        )
    else:
        log.info(
            "image classifier %s loaded; hard block watches %d minor and %d sexual tags",
            config.source,
            len(tagger.minor_tags),
            len(tagger.sexual_tags),
        )
    return tagger, None


async def _serve(
    settings: Settings,
    db: Database,
    token: str,
    stop: asyncio.Event,
    options: dict[str, Any],
    *,
    policy: RestPolicy,
) -> int:
    ops: OpsServer | None = None
    telemetry = Telemetry()
    probes: BotProbes | None = None
    if settings.metrics.enabled:
        metrics = Metrics()
        telemetry = Telemetry(metrics)
        probes = BotProbes(db, metrics)
        config = settings.metrics
        ops = OpsServer(config.host, config.port, metrics=metrics, checks=probes.checks)
        try:
            await ops.start()
        except OSError as exc:
            what = "is in use" if isinstance(exc, PortInUse) else f"cannot be used ({exc})"
            log.error(  # noqa: TRY400 - one line is the point
                "metrics: %s:%d %s; set metrics.port (or metrics.enabled = false)",
                config.host,
                config.port,
                what,
            )
            return EXIT_FAILURE
        log.info("metrics, /healthz and /readyz on %s", ops.url)
    try:
        return await _serve_bot(
            settings, db, token, stop, options, policy=policy, telemetry=telemetry, probes=probes
        )
    finally:
        if ops is not None:
            await ops.stop()


async def _serve_bot(
    settings: Settings,
    db: Database,
    token: str,
    stop: asyncio.Event,
    options: dict[str, Any],
    *,
    policy: RestPolicy,
    telemetry: Telemetry,
    probes: BotProbes | None,
) -> int:
    engine: Engine | PromptFront
    try:
        if settings.queue.backend == "redis":  # the workers render: the tokenizer is enough
            log.info("loading the tokenizer of %s (jobs render on workers)", settings.model.source)
            engine = await asyncio.to_thread(PromptFront.load, settings)
        else:
            log.info("loading the model from %s", settings.model.source)
            engine = await asyncio.to_thread(Engine.load, settings)
    except (ModelLoadError, DeviceError) as exc:
        log.error("cannot load the model: %s", exc)  # noqa: TRY400
        return EXIT_FAILURE
    classifier, classifier_error = await load_classifier(settings)
    loop = asyncio.get_running_loop()
    installed = _install_signals(loop, stop)
    bot = create_bot(
        settings,
        db,
        engine,
        classifier=classifier,
        classifier_error=classifier_error,
        telemetry=telemetry,
        **options,
    )
    if probes is not None:
        probes.attach(bot)
    rest = RestClient.adopt(bot.http, policy)
    gateway_lines = GatewayRetryLines(settings.discord.gateway_url, bot)
    logging.getLogger("discord.client").addFilter(gateway_lines)
    try:
        async with bot:
            await _run_client(bot, rest, token, stop, settings.discord.gateway_url)
    except discord.LoginFailure:
        log.error("Discord rejected the token (from %s)", token_source(settings))  # noqa: TRY400
        return EXIT_FAILURE
    except discord.PrivilegedIntentsRequired:
        log.error("Discord refused the gateway intents")  # noqa: TRY400
        return EXIT_FAILURE
    except discord.ConnectionClosed as exc:
        reason = f": {snippet(exc.reason)}" if exc.reason else ""
        log.error("Discord closed the gateway connection (code %s%s)", exc.code, reason)  # noqa: TRY400
        return EXIT_FAILURE
    except discord.HTTPException as exc:
        log.error(  # noqa: TRY400 - one line is the point
            "Discord refused %s %s: %s %s",
            getattr(exc.response, "method", "a request to"),
            safe_url(getattr(exc.response, "url", "")),
            exc.status,
            snippet(exc.text) or "(no message)",
        )
        return EXIT_FAILURE
    except (DiscordUnavailable, aiohttp.ClientError, OSError) as exc:
        log.error(  # noqa: TRY400 - one line is the point
            "cannot reach Discord (REST %s, gateway %s): %s",
            settings.discord.rest_url,
            settings.discord.gateway_url,
            describe_failure(exc),
        )
        return EXIT_FAILURE
    finally:
        logging.getLogger("discord.client").removeFilter(gateway_lines)
        for signum in installed:
            loop.remove_signal_handler(signum)
    log.info("stopped")
    return EXIT_OK


async def _start(bot: AnimagineBot, token: str, backoff: Backoff, gateway_url: str) -> None:
    """``bot.start(token)``, but a gateway that is down at start-up is waited for.

    discord.py 2.7 retries a gateway it cannot reach, but after the first failure its
    reconnect loop reads the previous connection's sequence from ``Client.ws``, which is
    ``None`` until a first connection: the client dies with an ``AttributeError``. While no
    connection was ever made, that failure is caught here: one line says what the gateway
    answered (the ``AttributeError``'s context), and ``connect`` is called again after
    ``backoff`` (on top of the short wait discord.py has already made).
    """
    await bot.login(token)
    attempt = 0
    while True:
        try:
            await bot.connect(reconnect=True)
        except AttributeError as exc:
            cause = exc.__context__
            if getattr(bot, "ws", None) is not None or bot.is_closed() or cause is None:
                raise
            attempt += 1
            delay = backoff.delay(attempt)
            log.warning(
                "Discord gateway %s: %s; trying again in %.1f s (attempt %d)",
                gateway_url,
                _gateway_failure(cause),
                delay,
                attempt,
            )
            await asyncio.sleep(delay)
            continue
        return


async def _run_client(
    bot: AnimagineBot, rest: RestClient, token: str, stop: asyncio.Event, gateway_url: str
) -> None:
    """Run the client until it ends or ``stop`` is set; its failure is raised."""
    start = _start(bot, token, rest.policy.backoff, gateway_url)
    running = asyncio.create_task(start, name="discord-client")
    stopping = asyncio.create_task(stop.wait(), name="stop-signal")
    ready = asyncio.create_task(when_ready(bot.wait_until_ready(), rest), name="discord-ready")
    try:
        await asyncio.wait({running, stopping}, return_when=asyncio.FIRST_COMPLETED)
        if not running.done():
            await bot.close()
            if rest.starting:  # stopped while waiting for Discord to come up: stop waiting
                running.cancel()
    except BaseException:  # cancelled from outside: the client goes too
        running.cancel()
        raise
    finally:
        for task in (stopping, ready):
            task.cancel()
        await asyncio.wait({running, stopping, ready})
    if not running.cancelled():
        running.result()


def run(settings: Settings) -> int:
    """The ``run`` subcommand: blocks until the bot stops; returns the exit status."""
    setup_logging(settings.logging)
    return asyncio.run(serve(settings))
