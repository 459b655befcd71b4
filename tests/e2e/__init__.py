"""End-to-end tests: the real discord.py client against a local fake Discord.

discord.py imports the standard-library ``audioop`` module (for voice), which warns with a
``DeprecationWarning`` on Python 3.11 and 3.12. pytest runs with ``-W error``, so the first
import of discord would fail collection. Import it once here, with exactly that warning
silenced, so that every later ``import discord`` is served from ``sys.modules``.
"""

from __future__ import annotations

import warnings

with warnings.catch_warnings():
    warnings.filterwarnings(
        "ignore", message="'audioop' is deprecated", category=DeprecationWarning
    )
    import discord  # noqa: F401
