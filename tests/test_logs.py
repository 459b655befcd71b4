"""``bot.logs``: the text and JSON log formats an operator's collector reads."""

from __future__ import annotations

import io
import json
import logging
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from bot.config import LoggingSettings
from bot.logs import JsonFormatter, job_context, setup_logging

TOKEN = "MTA4NjY5NzQ1MTk2MjEwNjk3Ng.GhT1x9.abcdefghijklmnopqrstuvwxyz012345678"


@pytest.fixture
def json_log() -> Iterator[tuple[logging.Logger, io.StringIO]]:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    logger = logging.getLogger("tests.logs")
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    logger.propagate = False
    try:
        yield logger, stream
    finally:
        logger.removeHandler(handler)
        logger.propagate = True


def _login() -> None:
    raise RuntimeError(f"login with {TOKEN} failed")


def _lines(stream: io.StringIO) -> list[dict[str, object]]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def test_json_lines_carry_event_ids_and_message(
    json_log: tuple[logging.Logger, io.StringIO],
) -> None:
    log, stream = json_log
    log.info(
        "job %d finished in %.1f s",
        7,
        1.5,
        extra={"event": "job.finished", "job_id": 7, "guild_id": 11, "channel_id": 12},
    )
    log.warning("job %s: could not post its queue message (%s)", 8, 503)
    first, second = _lines(stream)
    assert first["event"] == "job.finished"
    assert first["message"] == "job 7 finished in 1.5 s"
    assert (first["job_id"], first["guild_id"], first["channel_id"]) == (7, 11, 12)
    assert first["level"] == "INFO"
    assert first["logger"] == "tests.logs"
    assert str(first["time"]).endswith("+00:00")
    # Without an explicit event, the template names it: the same for every such record.
    assert second["event"] == "job %s: could not post its queue message (%s)"
    assert "job_id" not in second


def test_ids_bound_by_job_context_reach_every_line_inside_it(
    json_log: tuple[logging.Logger, io.StringIO],
) -> None:
    log, stream = json_log
    with job_context(job_id=3, guild_id=4, channel_id=5):
        log.info("progress edit skipped")
        with job_context(channel_id=6):  # a DM fallback: same job, another channel
            log.info("posted in the DM")
        log.info("explicit wins", extra={"job_id": 9})
    log.info("outside")
    inside, nested, explicit, outside = _lines(stream)
    assert (inside["job_id"], inside["guild_id"], inside["channel_id"]) == (3, 4, 5)
    assert (nested["job_id"], nested["channel_id"]) == (3, 6)
    assert explicit["job_id"] == 9
    assert "job_id" not in outside


def test_tokens_are_redacted_in_messages_and_tracebacks(
    json_log: tuple[logging.Logger, io.StringIO],
) -> None:
    log, stream = json_log
    try:
        _login()
    except RuntimeError:
        log.exception("token %s was refused", TOKEN)
    text = stream.getvalue()
    assert TOKEN not in text
    (line,) = _lines(stream)
    assert "redacted" in str(line["message"])
    assert "RuntimeError" in str(line["error"])


def test_setup_logging_switches_format_and_replaces_its_own_handler() -> None:
    root = logging.getLogger()
    saved = list(root.handlers), root.level
    for handler in saved[0]:
        root.removeHandler(handler)
    try:
        first, second = io.StringIO(), io.StringIO()
        setup_logging(LoggingSettings(format="text"), stream=first)
        setup_logging(LoggingSettings(format="json", level="WARNING"), stream=second)
        assert len(root.handlers) == 1
        logging.getLogger("tests.setup_logging").info("dropped: below WARNING")
        logging.getLogger("tests.setup_logging").warning("kept %s", TOKEN)
        assert first.getvalue() == ""
        (line,) = _lines(second)
        assert line["level"] == "WARNING"
        assert TOKEN not in second.getvalue()
    finally:
        for handler in list(root.handlers):
            root.removeHandler(handler)
        for handler in saved[0]:
            root.addHandler(handler)
        root.setLevel(saved[1])


def test_the_cli_logs_json_when_configured(tmp_path: Path) -> None:
    """A real process: every stderr line is one JSON object; the config picks the format."""
    config = tmp_path / "config.toml"
    config.write_text(
        '[logging]\nformat = "json"\nlevel = "DEBUG"\n'
        f'[database]\nurl = "sqlite:///{tmp_path / "bot.db"}"\n'
    )
    done = subprocess.run(
        [sys.executable, "-m", "bot", "--config", str(config), "db", "upgrade"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    lines = [json.loads(line) for line in done.stderr.splitlines() if line.strip()]
    assert lines, "the upgrade logs what it does"
    assert all({"time", "level", "logger", "event", "message"} <= line.keys() for line in lines)
