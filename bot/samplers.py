"""The sampler names a request may ask for, and how a typed name is read.

A leaf module (it imports nothing of the project but :mod:`bot.errors`), so both
:mod:`bot.config` (the configured default sampler) and :mod:`bot.request` can use it
without importing each other. The schedulers behind the names are in
:mod:`bot.engine.samplers`.
"""

from __future__ import annotations

from bot.errors import RequestError

SAMPLERS: tuple[str, ...] = (
    "Euler a",
    "Euler",
    "DPM++ 2M Karras",
    "DPM++ SDE Karras",
    "DPM++ 2M SDE Karras",
    "DDIM",
)


def find_sampler(name: str) -> str:
    """The canonical sampler name for ``name`` (case and spacing forgiven)."""
    key = name.strip().lower().replace(" ", "")
    for sampler in SAMPLERS:
        if sampler.lower().replace(" ", "") == key:
            return sampler
    raise RequestError(
        "unknown sampler {name}: choose one of {choices}",
        name=repr(name),
        choices=", ".join(SAMPLERS),
    )
