"""Per-server policy: the bot-wide moderation settings with one server's overrides.

:class:`GuildOverrides` validates what moderators set with ``/settings``;
:class:`GuildPolicy` is what the prompt and image checks read.
"""

from __future__ import annotations

import functools
import json
import weakref
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Annotated, Any, Final, TypeVar

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StrictInt,
    ValidationError,
    field_validator,
)

from bot.moderation.lists import (
    DEFAULT_BLOCKED_TAGS,
    TERM_CONTEXTS,
    TERM_EXCEPTIONS,
)
from bot.moderation.matching import TermSet, tag_key
from bot.moderation.settings import (
    Fraction,
    ModerationSettings,
    SpoilerPolicy,
    TagText,
    check_tags,
)

_T = TypeVar("_T")


class PolicySettingsError(ValueError):
    """Per-server moderation settings that cannot be used; the message names the key."""


@dataclass(frozen=True, slots=True)
class Thresholds:
    """Scores above these are flagged (withheld outside age-restricted channels)."""

    questionable: float = 0.5
    explicit: float = 0.3


class GuildOverrides(BaseModel):
    """What a server may store to override the bot-wide defaults (all keys optional)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    blocked_tags_add: list[TagText] | None = Field(
        None, description="Tags this server refuses outside age-restricted channels"
    )
    blocked_tags_remove: list[TagText] | None = Field(
        None,
        description="Default blocked tags this server allows (the nsfw and explicit rating "
        "tags and the hard block cannot be removed)",
    )
    extra_negatives: list[TagText] | None = Field(
        None,
        description="Tags added to the negative prompt outside age-restricted channels "
        "(replaces the bot's list; nsfw is always added)",
    )
    questionable_threshold: Fraction | None = Field(
        None, description="Withhold images whose questionable score is above this (0-1)"
    )
    explicit_threshold: Fraction | None = Field(
        None, description="Withhold images whose explicit score is above this (0-1)"
    )
    spoiler: SpoilerPolicy | None = Field(
        None, description="Spoilers in age-restricted channels: never, flagged or always"
    )
    fail_closed: StrictBool | None = Field(
        None, description="Withhold images when the classifier cannot run"
    )
    forward_withheld: StrictBool | None = Field(
        None, description="Send withheld images, as spoilers, to the log channel"
    )
    log_channel_id: Annotated[StrictInt, Field(gt=0)] | None = Field(
        None, description="Channel that receives refusals, withheld images and bans"
    )

    @field_validator("blocked_tags_add", "blocked_tags_remove", "extra_negatives")
    @classmethod
    def _tags(cls, tags: list[str] | None) -> list[str] | None:
        return None if tags is None else _dedupe(check_tags(tags))


OVERRIDE_KEYS: Final = tuple(GuildOverrides.model_fields)


def _dedupe(tags: Iterable[str]) -> list[str]:
    seen: set[str] = set()
    out: list[str] = []
    for tag in tags:
        key = tag_key(tag)
        if key and key not in seen:
            seen.add(key)
            out.append(tag.strip())
    return out


def _describe(error: Mapping[str, Any]) -> str:
    loc = ".".join(str(part) for part in error["loc"])
    if error["type"] == "extra_forbidden":
        return f"{loc}: unknown setting (known: {', '.join(OVERRIDE_KEYS)})"
    message = str(error["msg"]).removeprefix("Value error, ")
    return f"{loc}: {message} (got {error.get('input')!r})"


def validate_overrides(overrides: Mapping[str, Any] | None) -> dict[str, Any]:
    """Check a server's overrides; return them in the form to store (unset keys dropped).

    Raises :class:`PolicySettingsError` naming every bad key, e.g.
    ``explicit_threshold: Input should be less than or equal to 1 (got 1.5)``.
    """
    if overrides is not None and not isinstance(overrides, Mapping):
        raise PolicySettingsError("moderation settings must be a mapping of key to value")
    try:
        parsed = GuildOverrides.model_validate(dict(overrides or {}))
    except ValidationError as exc:
        raise PolicySettingsError("; ".join(_describe(e) for e in exc.errors())) from None
    return parsed.model_dump(exclude_none=True)


def merge_overrides(
    current: Mapping[str, Any] | None, changes: Mapping[str, Any]
) -> dict[str, Any]:
    """``current`` updated by ``changes`` (a ``None`` value resets that key), validated."""
    merged = dict(current or {})
    for key, value in changes.items():
        if value is None:
            merged.pop(key, None)
        else:
            merged[key] = value
    return validate_overrides(merged)


# id(settings) -> (the settings, weakly; overrides as JSON -> policy). Settings objects are
# frozen, so one object always gives the same policies; keyed by identity, as they are
# neither hashable nor cheap to compare.
_POLICIES: dict[int, tuple[weakref.ref[ModerationSettings], dict[str, GuildPolicy]]] = {}
_POLICIES_KEPT = 4096


def _policies_of(settings: ModerationSettings) -> dict[str, GuildPolicy]:
    held = _POLICIES.get(id(settings))
    if held is not None and held[0]() is settings:
        return held[1]
    number = id(settings)
    ref = weakref.ref(settings, lambda _ref: _POLICIES.pop(number, None))
    known: dict[str, GuildPolicy] = {}
    _POLICIES[number] = (ref, known)
    return known


@functools.lru_cache(maxsize=128)
def _compile(tags: tuple[str, ...]) -> TermSet:
    return TermSet(tags, TERM_EXCEPTIONS, TERM_CONTEXTS)


@dataclass(frozen=True, slots=True)
class GuildPolicy:
    """The moderation policy in force for one server (or for direct messages)."""

    blocked_tags: tuple[str, ...] = DEFAULT_BLOCKED_TAGS
    extra_negatives: tuple[str, ...] = ("explicit",)
    thresholds: Thresholds = field(default_factory=Thresholds)
    spoiler: SpoilerPolicy = "flagged"
    fail_closed: bool = True
    forward_withheld: bool = False
    log_channel_id: int | None = None
    dm_allowed: bool = False
    sexual_terms: tuple[str, ...] = ()  # the owner's additions to the hard block
    minor_terms: tuple[str, ...] = ()

    @property
    def blocked(self) -> TermSet:
        """The blocked tags (with the owner's sexual terms), compiled for matching
        (compiled lists are cached)."""
        return _compile((*self.blocked_tags, *self.sexual_terms))

    @property
    def extra_sexual(self) -> TermSet:
        return _compile(self.sexual_terms)

    @property
    def extra_minor(self) -> TermSet:
        return _compile(self.minor_terms)

    @classmethod
    def from_settings(
        cls, settings: ModerationSettings, overrides: Mapping[str, Any] | None = None
    ) -> GuildPolicy:
        """The bot-wide defaults with a server's stored overrides applied.

        Raises :class:`PolicySettingsError` when the overrides are not valid. Policies are
        cached by settings and overrides (a policy is immutable): building one reads every
        tag list, and each job asks for its server's policy when accepted and dispatched.
        """
        key = json.dumps(overrides or {}, sort_keys=True, default=str)
        known = _policies_of(settings)
        policy = known.get(key)
        if policy is None:
            policy = cls._build(settings, overrides)
            if len(known) >= _POLICIES_KEPT:
                known.clear()
            known[key] = policy
        return policy

    @classmethod
    def _build(
        cls, settings: ModerationSettings, overrides: Mapping[str, Any] | None
    ) -> GuildPolicy:
        over = GuildOverrides.model_validate(validate_overrides(overrides))
        base = list(settings.blocked_tags)
        if settings.blocked_tags_mode == "extend":
            base = [*DEFAULT_BLOCKED_TAGS, *base]
        removed = {form for tag in over.blocked_tags_remove or () for form in _forms(tag)}
        blocked = [
            tag for tag in [*base, *(over.blocked_tags_add or ())] if tag_key(tag) not in removed
        ]
        negatives = (
            settings.extra_negatives if over.extra_negatives is None else over.extra_negatives
        )
        return cls(
            blocked_tags=tuple(_dedupe(blocked)),
            extra_negatives=tuple(_dedupe(negatives)),
            thresholds=Thresholds(
                questionable=_pick(over.questionable_threshold, settings.questionable_threshold),
                explicit=_pick(over.explicit_threshold, settings.explicit_threshold),
            ),
            spoiler=_pick(over.spoiler, settings.spoiler),
            fail_closed=_pick(over.fail_closed, settings.fail_closed),
            forward_withheld=_pick(over.forward_withheld, settings.forward_withheld),
            log_channel_id=over.log_channel_id,
            dm_allowed=settings.dm_allowed,
            sexual_terms=tuple(_dedupe(settings.sexual_terms)),
            minor_terms=tuple(_dedupe(settings.minor_terms)),
        )


def _forms(tag: str) -> set[str]:
    """A tag's key with its plural, or singular, forms: removing ``nipples`` removes
    ``nipple`` too."""
    key = tag_key(tag)
    forms = {key, f"{key}s", f"{key}es"}
    if key.endswith("ies"):
        forms.add(f"{key[:-3]}y")
    if key.endswith("y"):
        forms.add(f"{key[:-1]}ies")
    forms.update(key[: -len(end)] for end in ("s", "es") if key.endswith(end))
    return {form for form in forms if form}


def _pick(override: _T | None, default: _T) -> _T:
    return default if override is None else override
