"""Prompt building for Animagine XL 3.1: presets, tags, wildcards and emphasis (no torch).

The token encoder lives in :mod:`bot.prompts.encoder` and is not imported here, so that
this package stays importable without torch.
"""

from bot.prompts.build import BuiltPrompt, build_prompt
from bot.prompts.emphasis import parse_emphasis
from bot.prompts.presets import (
    DEFAULT_QUALITY,
    DEFAULT_STYLE,
    NO_PRESET,
    QUALITY_PRESETS,
    STYLE_PRESETS,
    Preset,
    UnknownPresetError,
    get_quality_preset,
    get_style_preset,
)
from bot.prompts.tags import (
    RATING_ALIASES,
    RATINGS,
    YEAR_RANGES,
    YEARS,
    PromptError,
    UnknownTagOptionError,
    add_tags,
    clean_tags,
    rating_tags,
    resolve_rating,
    resolve_year,
    year_tags,
)
from bot.prompts.wildcards import (
    EmptyWildcardError,
    InvalidWildcardNameError,
    UnknownWildcardError,
    WildcardError,
    WildcardFolder,
    WildcardLimitError,
    WildcardsNotConfiguredError,
    WildcardSource,
    expand_wildcards,
)

__all__ = [
    "DEFAULT_QUALITY",
    "DEFAULT_STYLE",
    "NO_PRESET",
    "QUALITY_PRESETS",
    "RATINGS",
    "RATING_ALIASES",
    "STYLE_PRESETS",
    "YEARS",
    "YEAR_RANGES",
    "BuiltPrompt",
    "EmptyWildcardError",
    "InvalidWildcardNameError",
    "Preset",
    "PromptError",
    "UnknownPresetError",
    "UnknownTagOptionError",
    "UnknownWildcardError",
    "WildcardError",
    "WildcardFolder",
    "WildcardLimitError",
    "WildcardSource",
    "WildcardsNotConfiguredError",
    "add_tags",
    "build_prompt",
    "clean_tags",
    "expand_wildcards",
    "get_quality_preset",
    "get_style_preset",
    "parse_emphasis",
    "rating_tags",
    "resolve_rating",
    "resolve_year",
    "year_tags",
]
