"""The fixed choices of command options: the card's sizes, presets, ratings, years, samplers."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Final

from discord import app_commands

from bot.moderation.guild_policy import OVERRIDE_KEYS
from bot.prompts import QUALITY_PRESETS, RATINGS, STYLE_PRESETS, YEAR_RANGES
from bot.request import ASPECTS, SAMPLERS

Choice = app_commands.Choice


def named(values: Iterable[str]) -> list[Choice[str]]:
    return [Choice(name=v, value=v) for v in values]


ASPECT: Final = [Choice(name=f"{a.label} ({a.size})", value=a.size) for a in ASPECTS]
"""The nine resolutions of the model card, e.g. "Portrait 13:19 (832x1216)"."""
QUALITY: Final = named(QUALITY_PRESETS)
STYLE: Final = named(STYLE_PRESETS)
RATING: Final = named(RATINGS)
YEAR: Final = [Choice(name=f"{name} ({span})", value=name) for name, span in YEAR_RANGES.items()]
SAMPLER: Final = named(SAMPLERS)
SPOILER: Final = named(("never", "flagged", "always"))
"""Spoilers in age-restricted channels: never, when rated over a threshold, or always."""
MODERATION_KEY: Final = [Choice(name="everything", value="*"), *named(OVERRIDE_KEYS)]
"""A server moderation setting to put back to the bot's default (or all of them)."""
