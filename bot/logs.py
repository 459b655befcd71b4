"""Logging set-up: readable lines, or one JSON object per line for log collectors.

``logging.format = "json"`` writes each record as one JSON object: ``time`` (UTC, ISO 8601),
``level``, ``logger``, ``event``, ``message`` and, when the record concerns a job,
``job_id``, ``guild_id`` and ``channel_id``; ``error`` holds an exception's traceback.

Where the ids come from, first found wins: the record's ``extra`` (``log.info("job
finished", extra={"event": "job.finished", "job_id": 7, ...})``), then the ids bound with
:func:`job_context` for the code running now (a context variable, so every line logged
while a job is handled carries them without repeating them), then nothing.

``event`` is the record's ``extra["event"]`` when given, else the message's template (the
format string before its values are filled in), which stays the same for every record of
the same kind and so can be counted and filtered on.

Whatever the format, everything that looks like a Discord token is redacted from the
message and the traceback (:func:`bot.config.redact_tokens`). Prompts are never logged at
INFO or above: code that logs one does so at DEBUG.
"""

from __future__ import annotations

import contextlib
import json
import logging
import sys
from collections.abc import Iterator
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Final, TextIO

from bot.config import redact_tokens

if TYPE_CHECKING:
    from bot.config import LoggingSettings

TEXT_FORMAT: Final = "%(asctime)s %(levelname)s %(name)s: %(message)s"
ID_FIELDS: Final = ("job_id", "guild_id", "channel_id")

_context: ContextVar[dict[str, int]] = ContextVar("animagine_log_context", default={})  # noqa: B039 - never mutated


@contextlib.contextmanager
def job_context(
    *, job_id: int | None = None, guild_id: int | None = None, channel_id: int | None = None
) -> Iterator[None]:
    """Records logged inside carry these ids (in JSON logs), on top of those bound already."""
    given = {"job_id": job_id, "guild_id": guild_id, "channel_id": channel_id}
    merged = {**_context.get(), **{k: v for k, v in given.items() if v is not None}}
    token = _context.set(merged)
    try:
        yield
    finally:
        _context.reset(token)


def bound_ids() -> dict[str, int]:
    """The ids :func:`job_context` bound for the code running now."""
    return dict(_context.get())


class RedactingFormatter(logging.Formatter):
    """The text format, with anything that looks like a Discord token redacted."""

    def format(self, record: logging.LogRecord) -> str:
        return redact_tokens(super().format(record))


class JsonFormatter(logging.Formatter):
    """One JSON object per record, on one line."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "event": _event(record),
            "message": redact_tokens(record.getMessage()),
        }
        context = _context.get()
        for field in ID_FIELDS:
            value = getattr(record, field, None)
            if value is None:
                value = context.get(field)
            if value is not None:
                out[field] = value
        if record.exc_info:
            out["error"] = redact_tokens(self.formatException(record.exc_info))
        elif record.exc_text:
            out["error"] = redact_tokens(record.exc_text)
        if record.stack_info:
            out["stack"] = record.stack_info
        return json.dumps(out, ensure_ascii=False, default=str)


def _event(record: logging.LogRecord) -> str:
    event = getattr(record, "event", None)
    if isinstance(event, str) and event:
        return event
    return redact_tokens(str(record.msg))


def formatter(settings: LoggingSettings) -> logging.Formatter:
    if settings.format == "json":
        return JsonFormatter()
    return RedactingFormatter(TEXT_FORMAT)


class _Handler(logging.StreamHandler[TextIO]):
    """The handler :func:`setup_logging` installs (so a second call replaces it)."""


def setup_logging(
    settings: LoggingSettings, *, stream: TextIO | None = None, force: bool = False
) -> None:
    """Send every record at ``settings.level`` or above to stderr in the configured format.

    Like :func:`logging.basicConfig`, it leaves a root logger that someone else already
    configured alone (a host application, pytest's capture), unless ``force``; a handler it
    installed before is replaced, so calling it again with another format takes effect.
    """
    root = logging.getLogger()
    ours = [h for h in root.handlers if isinstance(h, _Handler)]
    if not force and len(ours) != len(root.handlers):
        return
    for old in ours if not force else list(root.handlers):
        root.removeHandler(old)
    handler = _Handler(stream or sys.stderr)
    handler.setFormatter(formatter(settings))
    root.addHandler(handler)
    root.setLevel(settings.level)
