"""From what the user typed to the prompt pair the model gets, in one pure function.

The steps, in order:

1. wildcards are expanded (seeded by the job's seed; the negative has its own stream);
2. :func:`~bot.prompts.tags.clean_tags` tidies both prompts;
3. the rating tags, then the year tag, are appended to the user's tags unless already
   there; they stand after the user's tags and before the style and quality suffixes
   (``1girl, solo, safe, newest, <style...>, masterpiece, ...``);
4. the style preset wraps that, then the quality preset wraps the result, as in the demo
   (a blank prompt stays blank: presets wrap only a non-empty prompt);
5. the negative is the quality preset's, the style preset's, then the user's, joined with
   ``", "``. Every demo preset puts ``nsfw`` there; with ``allow_nsfw`` (age-restricted
   channels) that tag is taken out of the presets' negatives, never out of the user's.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from bot.prompts.presets import (
    DEFAULT_QUALITY,
    DEFAULT_STYLE,
    Preset,
    get_quality_preset,
    get_style_preset,
)
from bot.prompts.tags import (
    add_tags,
    clean_tags,
    rating_tags,
    resolve_rating,
    resolve_year,
    split_tags,
    year_tags,
)
from bot.prompts.wildcards import WildcardSource, expand_wildcards

__all__ = ["BuiltPrompt", "build_prompt"]


@dataclass(frozen=True, slots=True)
class BuiltPrompt:
    """The prompts for the model and the choices that made them (canonical names)."""

    prompt: str
    negative_prompt: str
    quality_preset: str
    style_preset: str
    rating: str | None
    year: str | None
    user_prompt: str  # after wildcards, hygiene and rating/year tags, before presets
    user_negative: str  # after wildcards and hygiene


def _for_channel(preset: Preset, *, allow_nsfw: bool) -> Preset:
    if not allow_nsfw:
        return preset
    kept = [tag.strip() for tag in split_tags(preset.negative) if tag.strip() != "nsfw"]
    return replace(preset, negative=", ".join(kept))


def build_prompt(
    user_prompt: str,
    user_negative: str = "",
    *,
    quality: str = DEFAULT_QUALITY,
    style: str = DEFAULT_STYLE,
    rating: str | None = None,
    year: str | None = None,
    wildcards: WildcardSource | None = None,
    seed: int,
    allow_nsfw: bool = False,
) -> BuiltPrompt:
    """Compose the final prompt and negative (see the module docstring).

    Raises :class:`~bot.prompts.tags.PromptError` subclasses (unknown preset, rating or
    year; wildcard errors), whose messages are meant for the user.
    """
    quality_preset = _for_channel(get_quality_preset(quality), allow_nsfw=allow_nsfw)
    style_preset = _for_channel(get_style_preset(style), allow_nsfw=allow_nsfw)
    rating_name = None if rating is None else resolve_rating(rating)
    year_name = None if year is None else resolve_year(year)

    positive = clean_tags(expand_wildcards(user_prompt, wildcards, seed=seed, stream="prompt"))
    positive = add_tags(positive, rating_tags(rating_name) + year_tags(year_name))
    negative = clean_tags(expand_wildcards(user_negative, wildcards, seed=seed, stream="negative"))

    return BuiltPrompt(
        prompt=quality_preset.apply(style_preset.apply(positive)),
        negative_prompt=quality_preset.apply_negative(style_preset.apply_negative(negative)),
        quality_preset=quality_preset.name,
        style_preset=style_preset.name,
        rating=rating_name,
        year=year_name,
        user_prompt=positive,
        user_negative=negative,
    )
