"""How long the outbox keeps trying by default, and how many attempts that makes (issue 13).

Run from the repository root: ``python benchmarks/bench_outbox.py``. It reads the defaults
of the ``[delivery]`` settings (or a config file: ``--config config.toml``) and prints the
retry schedule the outbox follows after a first attempt that Discord refused: the latest
time each attempt is due (the backoff's ceiling; jitter makes each wait half to all of it,
so in practice there are somewhat more attempts, counted here too from a seeded run), and
the totals. Nothing is sent anywhere.
"""

from __future__ import annotations

import argparse
import importlib.util
import itertools
import random
import sys
from pathlib import Path
from types import SimpleNamespace

if importlib.util.find_spec("bot") is None:  # not installed: run from the checkout
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bot.config import load_settings
from bot.outbox import Outbox


def _fmt(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.2f} h"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", type=Path, help="a config file (default: the defaults)")
    args = parser.parse_args()
    settings = load_settings(args.config, environ={})
    outbox = Outbox(settings, SimpleNamespace(), SimpleNamespace(), SimpleNamespace())  # type: ignore[arg-type]
    d = settings.delivery
    ceilings = outbox.schedule()
    total = d.retry_hours * 3600
    rng = random.Random(0)
    outbox.rng = rng
    at, jittered = 0.0, 0
    while at < total:
        jittered += 1
        at += outbox.backoff(jittered)
    print(
        f"[delivery] retry_hours = {d.retry_hours:g}, retry_first_s = {d.retry_first_s:g}, "
        f"retry_max_s = {d.retry_max_s:g}"
    )
    print(f"Keeps trying for {_fmt(total)} after the first attempt.")
    print(
        f"Attempts: 1 first + {len(ceilings)} retries = {len(ceilings) + 1} at the least "
        f"(every wait at its ceiling); with jitter (seed 0) {jittered + 1}."
    )
    print("First retries due at most (after the first attempt):",
          ", ".join(_fmt(t) for t in ceilings[:10]), "...")  # fmt: skip
    reach = next(n for n in itertools.count(1) if outbox.ceiling(n) >= d.retry_max_s)
    print(f"The wait reaches its cap of {_fmt(d.retry_max_s)} from retry {reach} on.")


if __name__ == "__main__":
    main()
