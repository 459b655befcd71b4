"""The image's health check (deploy/Dockerfile HEALTHCHECK): exit 0 when healthy, else 1.

It finds the container's ``python -m bot`` process, reads its options and settings as the
CLI does, and asks what that process serves:

* ``run`` (the bot): GET ``/healthz`` on the metrics port with Python's urllib (no curl in
  the image); it answers 200 while the bot's event loop runs.
* ``worker``: a worker serves no HTTP. It is healthy while its heartbeat is in Redis (the key
  ``<queue.redis_prefix>:worker:<name>``, renewed every ``queue.redis_heartbeat_s`` and gone
  three beats after the worker stops beating), the same record ``python -m bot workers``
  lists.

Anything else (a one-off ``db upgrade``), or the bot with ``[metrics]`` off, has nothing to
ask and counts as healthy.
"""

from __future__ import annotations

import os
import socket
import sys
import urllib.request
from collections.abc import Mapping
from pathlib import Path


def processes(proc: Path = Path("/proc")) -> dict[int, list[str]]:
    """pid -> argv of the processes this container sees."""
    out = {}
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            raw = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        if raw:
            out[int(entry.name)] = raw.rstrip(b"\0").decode(errors="replace").split("\0")
    return out


def bot_process(table: Mapping[int, list[str]]) -> tuple[int, list[str]] | None:
    """The lowest pid running ``python -m bot ...`` and the CLI arguments it was given."""
    for pid in sorted(table):
        argv = table[pid]
        for i in range(len(argv) - 1):
            if argv[i] == "-m" and argv[i + 1] == "bot":
                return pid, argv[i + 2 :]
    return None


def check(
    table: Mapping[int, list[str]] | None = None,
    environ: Mapping[str, str] | None = None,
    timeout: float = 4.0,
) -> tuple[bool, str]:
    """(healthy, why) for the bot process in ``table`` (default: this container's)."""
    from bot.cli import build_parser
    from bot.config import load_settings

    environ = os.environ if environ is None else environ
    found = bot_process(processes() if table is None else table)
    if found is None:
        return False, "no `python -m bot` process"
    pid, arguments = found
    args = build_parser().parse_args(arguments)
    settings = load_settings(getattr(args, "config", None), environ=environ)
    if args.command == "run":
        if not settings.metrics.enabled:
            return True, "metrics are off: nothing to ask"
        url = f"http://127.0.0.1:{settings.metrics.port}/healthz"
        try:
            with urllib.request.urlopen(url, timeout=timeout) as answer:
                return answer.status == 200, f"{url}: {answer.status}"
        except OSError as exc:  # URLError and HTTPError are OSErrors
            return False, f"{url}: {exc}"
    if args.command == "worker":
        import redis

        from bot.queue.redis_backend import Keys

        name = args.name or f"{socket.gethostname()}-{pid}"
        key = Keys(settings.queue.redis_prefix).worker(name)
        client = redis.Redis.from_url(
            settings.queue.redis_url, socket_timeout=timeout, socket_connect_timeout=timeout
        )
        try:
            alive = bool(client.exists(key))
        except redis.RedisError as exc:
            return False, f"Redis: {exc}"
        finally:
            client.close()
        return alive, f"heartbeat {key}: {'present' if alive else 'missing'}"
    return True, f"`{args.command}`: nothing to ask"


def main() -> int:
    try:
        healthy, why = check()
    except Exception as exc:
        healthy, why = False, f"cannot check: {type(exc).__name__}: {exc}"
    print(why, file=sys.stderr if not healthy else sys.stdout)
    return 0 if healthy else 1


if __name__ == "__main__":
    sys.exit(main())
