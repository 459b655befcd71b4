"""The ``[moderation]`` settings section: bot-wide defaults of the moderation policy.

Servers override most of these through ``/settings`` (see
:func:`bot.moderation.guild_policy.validate_overrides`); the hard block (sexual content combined
with terms about minors) has no setting at all. This module imports nothing from
:mod:`bot.config`, so that the settings module can import it without a cycle.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt, StrictStr, field_validator

from bot.moderation.matching import tag_key

__all__ = ["ClassifierSettings", "ImageHardBlockSettings", "ModerationSettings", "SpoilerPolicy"]

SpoilerPolicy = Literal["never", "flagged", "always"]
"""How images are posted in age-restricted channels: never as spoilers, as spoilers when the
classifier rates them over a threshold (or could not rate them), or always."""

Fraction = Annotated[float, Field(ge=0.0, le=1.0, allow_inf_nan=False)]
TagText = Annotated[StrictStr, Field(min_length=1, max_length=200)]


def check_tags(tags: list[str]) -> list[str]:
    """Trim tags; refuse ones with no letter or digit (they could never match anything)."""
    out: list[str] = []
    for tag in tags:
        if not tag_key(tag):
            raise ValueError(f"{tag!r} is not a tag: it has no letter or digit")
        out.append(tag.strip())
    return out


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, validate_default=True)


HardBlockFraction = Annotated[float, Field(ge=0.05, le=0.6, allow_inf_nan=False)]
"""A hard-block threshold: bounded above so that no setting can switch the hard block off."""


def check_tag_names(tags: list[str]) -> list[str]:
    """Tagger tag names, trimmed (``aged down`` and ``aged_down`` are the same tag)."""
    out: list[str] = []
    for tag in tags:
        name = tag.strip().replace(" ", "_").casefold()
        if not name:
            raise ValueError(f"{tag!r} is not a tag name")
        out.append(name)
    return out


class ImageHardBlockSettings(_Section):
    """The image side of the hard block: which tagger scores make an image sexual, which
    show a minor (see :mod:`bot.moderation.classifier` for the built-in tag lists).

    An image with both signals is never posted nor forwarded, in every channel. The
    thresholds are capped at 0.6 and the built-in tags cannot be removed: owners can make
    the check stricter (lower thresholds, more tags), never switch it off.
    """

    minor_threshold: HardBlockFraction = Field(
        0.35,
        description="A minor-related tag (loli, shota, child, ...) scored above this means "
        "the image shows a minor",
    )
    sexual_tag_threshold: HardBlockFraction = Field(
        0.35,
        description="A sexual tag (nude, nipples, pussy, sex, ...) scored above this is a "
        "sexual signal",
    )
    questionable_threshold: HardBlockFraction = Field(
        0.3,
        description="A 'questionable' rating score above this is a sexual signal for the "
        "hard block (lower than the withhold thresholds: with a minor, less is enough)",
    )
    explicit_threshold: HardBlockFraction = Field(
        0.2,
        description="An 'explicit' rating score above this is a sexual signal for the hard block",
    )
    extra_minor_tags: list[TagText] = Field(
        default_factory=list,
        description="Tags of the tagger's list added to the built-in minor-related tags",
    )
    extra_sexual_tags: list[TagText] = Field(
        default_factory=list,
        description="Tags of the tagger's list added to the built-in sexual tags",
    )

    @field_validator("extra_minor_tags", "extra_sexual_tags")
    @classmethod
    def _names(cls, tags: list[str]) -> list[str]:
        return check_tag_names(tags)


class ClassifierSettings(_Section):
    """The image classifier: a WD14-style tagger run through onnxruntime."""

    source: StrictStr = Field(
        "SmilingWolf/wd-vit-tagger-v3",
        description="Hugging Face repo id, or a local folder holding model.onnx and "
        "selected_tags.csv; '' for no classifier (then fail_closed decides)",
    )
    revision: StrictStr = Field("", description="Hub revision (branch, tag or commit)")
    cache_dir: StrictStr = Field("", description="Hugging Face cache folder; '' for default")
    offline: StrictBool = Field(False, description="Never reach the hub; use the cache only")
    device: Literal["cpu", "cuda", "auto"] = Field(
        "cpu",
        description="Where the classifier runs: cpu keeps it off the GPU the engine uses; "
        "cuda needs onnxruntime-gpu; auto takes cuda when available",
    )
    threads: Annotated[StrictInt, Field(ge=1, le=64)] = Field(
        2, description="CPU threads of the classifier, kept small so it does not starve the engine"
    )
    hard_block: ImageHardBlockSettings = Field(
        default_factory=ImageHardBlockSettings,
        description="The image side of the hard block (sexual content with a minor)",
    )


class ModerationSettings(_Section):
    """Bot-wide moderation defaults; servers override most of them with ``/settings``."""

    classifier: ClassifierSettings = Field(default_factory=ClassifierSettings)
    questionable_threshold: Fraction = Field(
        0.5,
        description="Outside age-restricted channels, images whose 'questionable' score is "
        "above this are withheld",
    )
    explicit_threshold: Fraction = Field(
        0.3,
        description="Outside age-restricted channels, images whose 'explicit' score is "
        "above this are withheld",
    )
    fail_closed: StrictBool = Field(
        True,
        description="Withhold images outside age-restricted channels when the classifier "
        "cannot run",
    )
    dm_allowed: StrictBool = Field(
        False,
        description="Serve requests in direct messages (treated as not age-restricted)",
    )
    extra_negatives: list[TagText] = Field(
        default_factory=lambda: ["explicit"],
        description="Tags added to the negative prompt outside age-restricted channels, "
        "besides nsfw (which is always there)",
    )
    spoiler: SpoilerPolicy = Field(
        "flagged",
        description="Spoilers in age-restricted channels: never, flagged (rated over a "
        "threshold or not rated) or always",
    )
    forward_withheld: StrictBool = Field(
        False,
        description="Send withheld images, as spoilers, to the server's moderation log channel",
    )
    blocked_tags: list[TagText] = Field(
        default_factory=list,
        description="Tags refused outside age-restricted channels, added to the built-in "
        "list (or replacing it, see blocked_tags_mode)",
    )
    blocked_tags_mode: Literal["extend", "replace"] = Field(
        "extend",
        description="extend: the built-in list of explicit Danbooru tags plus blocked_tags; "
        "replace: blocked_tags only (the nsfw and explicit rating tags stay refused)",
    )
    sexual_terms: list[TagText] = Field(
        default_factory=list,
        description="More sexual terms (any language) for the hard block and for plain "
        "channels, added to the built-in and LDNOOBW lists (which cannot be removed)",
    )
    minor_terms: list[TagText] = Field(
        default_factory=list,
        description="More terms about minors (any language) for the hard block, added to "
        "the built-in list (which cannot be removed)",
    )

    @field_validator("extra_negatives", "blocked_tags", "sexual_terms", "minor_terms")
    @classmethod
    def _tags(cls, tags: list[str]) -> list[str]:
        return check_tags(tags)
