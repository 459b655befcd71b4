"""Channel policy: which prompts may run where, and which images may be posted where.

Everything here is Discord-free: the adapter passes plain booleans and ids.

**Channels.** A channel is age-restricted when Discord flags it ``nsfw``; a thread follows
its parent; a direct message is never age-restricted and is served only when
``moderation.dm_allowed`` is on (:func:`channel_context`).

**Prompts** (:func:`check_prompt`, :func:`check_built`), in this order:

1. *hard block*, in every channel and unaffected by any setting: a prompt holding a sexual
   term (or asking for the ``nsfw``/``explicit`` rating) together with a term about minors
   or a stated age under 18, or a term that sexualises minors by itself (``lolicon``), is
   refused, and the decision says to log it for moderators;
2. direct messages while ``dm_allowed`` is off are refused;
3. outside age-restricted channels: the ``nsfw`` and ``explicit`` ratings, the rating tags
   themselves and the server's blocked tags are refused, and the returned negative prompt
   holds ``nsfw`` and the extra negatives (added at the front when missing, never twice);
4. otherwise the prompt is allowed (rating tags included, in age-restricted channels).

Check the prompt the model will get, not what the member typed: wildcards expanded, rating
tags and presets applied (:func:`check_built` takes a :class:`~bot.prompts.BuiltPrompt`).
A wildcard may expand differently for another seed, so check again for every build: on
``/imagine``, on the Edit modal and on Re-roll. The engine must use the returned
:attr:`PromptDecision.negative_prompt`.

**Images** (:func:`image_verdict`): outside age-restricted channels an image whose
questionable or explicit score is above the server's threshold is withheld, and so is every
image when the classifier could not run, unless ``fail_closed`` is off. In age-restricted
channels images are posted, as spoilers per the server's spoiler policy, except when the
prompt mentions minors (:attr:`PromptDecision.minors`): then the plain-channel rules apply.
First of all, in every channel: an image the classifier sees as sexual and as showing a
minor is a hard block, never posted nor forwarded (see :func:`image_verdict`).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
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
    CHILD_SEXUAL_TERMS,
    DEFAULT_BLOCKED_TAGS,
    MINOR_TERMS,
    RATING_TERMS,
    SEXUAL_TERMS,
    TERM_CONTEXTS,
    TERM_EXCEPTIONS,
)
from bot.moderation.matching import ScannedPrompt, TermSet, minor_age_terms, scan, tag_key
from bot.moderation.settings import (
    Fraction,
    ModerationSettings,
    SpoilerPolicy,
    TagText,
    check_tags,
)
from bot.prompts import (
    DEFAULT_QUALITY,
    DEFAULT_STYLE,
    BuiltPrompt,
    PromptError,
    WildcardSource,
    build_prompt,
    rating_tags,
    resolve_rating,
)
from bot.prompts.tags import leaf_tags

__all__ = [
    "NSFW_RATINGS",
    "OVERRIDE_KEYS",
    "Action",
    "ChannelContext",
    "ChannelKind",
    "Decision",
    "GuildOverrides",
    "GuildPolicy",
    "PolicySettingsError",
    "PromptDecision",
    "RatingScores",
    "Thresholds",
    "Verdict",
    "channel_context",
    "check_built",
    "check_prompt",
    "ensure_negatives",
    "image_verdict",
    "merge_overrides",
    "policy_check_lines",
    "validate_overrides",
]

NSFW_RATINGS: Final = frozenset({"nsfw", "explicit"})
ALWAYS_NEGATIVE: Final = "nsfw"

_T = TypeVar("_T")

_RATING_TERMS: Final = TermSet(RATING_TERMS)
_SEXUAL_TERMS: Final = TermSet(SEXUAL_TERMS, TERM_EXCEPTIONS, TERM_CONTEXTS)
_MINOR_TERMS: Final = TermSet(MINOR_TERMS, TERM_EXCEPTIONS)
_CHILD_SEXUAL_TERMS: Final = TermSet(CHILD_SEXUAL_TERMS, TERM_EXCEPTIONS)


# --- channels -------------------------------------------------------------------------


class ChannelKind(StrEnum):
    PLAIN = "plain"
    AGE_RESTRICTED = "age-restricted"
    DM = "dm"


@dataclass(frozen=True, slots=True)
class ChannelContext:
    """Where a request was made, as the policy needs it."""

    age_restricted: bool
    is_dm: bool = False
    is_thread: bool = False

    @property
    def kind(self) -> ChannelKind:
        if self.is_dm:
            return ChannelKind.DM
        return ChannelKind.AGE_RESTRICTED if self.age_restricted else ChannelKind.PLAIN

    @classmethod
    def of_kind(cls, kind: str | ChannelKind) -> ChannelContext:
        """``plain``, ``age-restricted`` or ``dm`` (what ``policy check --channel`` takes)."""
        try:
            named = ChannelKind(kind)
        except ValueError:
            choices = ", ".join(k.value for k in ChannelKind)
            raise ValueError(f"unknown channel kind {kind!r}: choose one of {choices}") from None
        return channel_context(named is ChannelKind.AGE_RESTRICTED, is_dm=named is ChannelKind.DM)


def channel_context(
    nsfw_flag: bool, parent_nsfw: bool | None = None, *, is_dm: bool = False
) -> ChannelContext:
    """The context of a channel from Discord's flags.

    ``nsfw_flag`` is the channel's own ``nsfw``; for a thread pass its parent's flag as
    ``parent_nsfw`` (a thread follows its parent, whatever its own flag says). A direct
    message is never age-restricted.
    """
    if is_dm:
        return ChannelContext(age_restricted=False, is_dm=True)
    if parent_nsfw is not None:
        return ChannelContext(age_restricted=parent_nsfw, is_thread=True)
    return ChannelContext(age_restricted=nsfw_flag)


# --- per-server policy ------------------------------------------------------------------


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

        Raises :class:`PolicySettingsError` when the overrides are not valid.
        """
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


# --- prompts ----------------------------------------------------------------------------


class Decision(StrEnum):
    ALLOW = "allow"
    REFUSE = "refuse"
    HARD_BLOCK = "hard-block"


@dataclass(frozen=True, slots=True)
class PromptDecision:
    """What the policy says about a prompt, and the negative prompt the engine must use."""

    decision: Decision
    reason: str
    matched: tuple[str, ...]
    negative_prompt: str
    minors: tuple[str, ...] = ()  # terms about minors found, also in allowed prompts

    @property
    def allowed(self) -> bool:
        return self.decision is Decision.ALLOW

    @property
    def event_kind(self) -> str | None:
        """The ``ModerationEvent.kind`` to record, or None when nothing needs recording."""
        if self.decision is Decision.HARD_BLOCK:
            return "prompt_hard_blocked"
        return "prompt_blocked" if self.decision is Decision.REFUSE else None

    def as_dict(self) -> dict[str, Any]:
        return {
            "decision": self.decision.value,
            "reason": self.reason,
            "matched": list(self.matched),
            "negative_prompt": self.negative_prompt,
        }


def ensure_negatives(negative: str, tags: Iterable[str]) -> str:
    """``negative`` with each of ``tags`` it lacks added at the front (any case or weight
    counts as present: ``(NSFW:1.2)`` holds ``nsfw``)."""
    held = {tag_key(leaf) for leaf in leaf_tags(negative)}
    missing: list[str] = []
    for tag in tags:
        key = tag_key(tag)
        if key and key not in held:
            held.add(key)
            missing.append(tag.strip())
    return ", ".join(part for part in (", ".join(missing), negative.strip()) if part)


def _unique(*groups: Iterable[str]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(item for group in groups for item in group))


def _minor_signals(
    scanned: ScannedPrompt, policy: GuildPolicy, tokenizer: object | None, *, strict: bool
) -> tuple[str, ...]:
    """Terms about minors and stated ages under 18 (leetspeak read only where evident)."""
    return _unique(
        _MINOR_TERMS.find(scanned, tokenizer=tokenizer, careful=True, strict=strict),
        minor_age_terms(scanned, strict=strict),
        policy.extra_minor.find(scanned, tokenizer=tokenizer, careful=True, strict=strict),
    )


def _sexual_signals(
    scanned: ScannedPrompt, policy: GuildPolicy, tokenizer: object | None, *, strict: bool
) -> tuple[str, ...]:
    return _unique(
        _SEXUAL_TERMS.find(scanned, tokenizer=tokenizer, strict=strict),
        policy.extra_sexual.find(scanned, tokenizer=tokenizer, strict=strict),
    )


def _in_one_tag(
    scanned: ScannedPrompt, policy: GuildPolicy, tokenizer: object | None
) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """The sexual and minor signals of the first tag that holds both in the strict
    reading, or two empty tuples."""
    if not _sexual_signals(scanned, policy, tokenizer, strict=True):
        return (), ()
    if not _minor_signals(scanned, policy, tokenizer, strict=True):
        return (), ()
    for tag in scanned.tags:
        one = scan(tag)
        sexual = _sexual_signals(one, policy, tokenizer, strict=True)
        minors = _minor_signals(one, policy, tokenizer, strict=True) if sexual else ()
        if sexual and minors:
            return sexual, minors
    return (), ()


def check_prompt(
    prompt: str,
    negative: str,
    rating: str | None,
    channel: ChannelContext,
    policy: GuildPolicy,
    *,
    expand: Callable[[str], str] | None = None,
    tokenizer: object | None = None,
) -> PromptDecision:
    """Decide on ``prompt`` (see the module docstring for the rules and their order).

    ``prompt`` should be the final prompt (:attr:`BuiltPrompt.prompt`: wildcards expanded,
    rating tags and presets applied); ``expand``, when given, is applied to it first (for
    callers holding unexpanded text). ``negative`` is the final negative prompt. ``rating``
    is the request's rating option (any spelling :func:`~bot.prompts.resolve_rating` takes).
    ``tokenizer`` is the loaded model's CLIP tokenizer: terms are also read in its pieces,
    as the model reads them (``1girlnude``); without one the shipped CLIP tokenizer is used
    (:mod:`bot.moderation.tokens`). Raises :class:`~bot.prompts.PromptError` for an
    unknown rating.
    """
    text = expand(prompt) if expand is not None else prompt
    scanned = scan(text)
    blocked = policy.blocked
    rating_name = None if rating is None else resolve_rating(rating)
    nsfw_rating = rating_name in NSFW_RATINGS
    if channel.age_restricted:
        final_negative = negative
    else:
        final_negative = ensure_negatives(negative, (ALWAYS_NEGATIVE, *policy.extra_negatives))

    minors = _minor_signals(scanned, policy, tokenizer, strict=False)
    sexual = _unique(
        rating_tags(rating_name) if nsfw_rating else (),
        _sexual_signals(scanned, policy, tokenizer, strict=False),
    )
    child_sexual = _CHILD_SEXUAL_TERMS.find(
        scanned, tokenizer=tokenizer, careful=True, strict=True, one_side=True
    )
    hard_minors = minors
    if not child_sexual:
        # One signal plainly present: the other is read strictly (a harmless prompt carries
        # neither, so the stricter reading costs nothing there). Neither present: both are
        # read strictly, and only count when one tag holds both (littl-eboyf.e.l.l.a.t.i.o).
        if minors and not sexual:
            sexual = _sexual_signals(scanned, policy, tokenizer, strict=True)
        elif sexual and not minors:
            hard_minors = _minor_signals(scanned, policy, tokenizer, strict=True)
        elif not minors and not sexual:
            sexual, hard_minors = _in_one_tag(scanned, policy, tokenizer)
    if child_sexual or (hard_minors and sexual):
        matched = _unique(child_sexual, sexual if hard_minors else (), hard_minors)
        if child_sexual:
            why = f"terms that sexualise minors: {', '.join(child_sexual)}"
        else:
            why = f"sexual: {', '.join(sexual)}; minor: {', '.join(hard_minors)}"
        return PromptDecision(
            Decision.HARD_BLOCK,
            "sexual content involving minors is never allowed, in any channel; the attempt "
            f"is logged for moderators ({why})",
            matched,
            final_negative,
            minors,
        )
    if channel.is_dm and not policy.dm_allowed:
        return PromptDecision(
            Decision.REFUSE,
            "the bot does not make images in direct messages",
            (),
            final_negative,
            minors,
        )
    if not channel.age_restricted:
        matched = _unique(
            rating_tags(rating_name) if nsfw_rating else (),
            _RATING_TERMS.find(scanned, tokenizer=tokenizer),
            blocked.find(scanned, tokenizer=tokenizer),
        )
        if nsfw_rating:
            reason = f"the {rating_name} rating is only allowed in age-restricted channels"
            return PromptDecision(Decision.REFUSE, reason, matched, final_negative, minors)
        if matched:
            reason = f"not allowed outside age-restricted channels: {', '.join(matched)}"
            return PromptDecision(Decision.REFUSE, reason, matched, final_negative, minors)
        return PromptDecision(Decision.ALLOW, "no blocked tags", (), final_negative, minors)
    return PromptDecision(
        Decision.ALLOW, "age-restricted channel: rating tags allowed", (), final_negative, minors
    )


def check_built(
    built: BuiltPrompt,
    channel: ChannelContext,
    policy: GuildPolicy,
    *,
    tokenizer: object | None = None,
) -> PromptDecision:
    """:func:`check_prompt` on a built prompt: its final prompt, negative and rating, read
    also in ``tokenizer``'s pieces (the loaded model's; None: the shipped CLIP tokenizer)."""
    return check_prompt(
        built.prompt, built.negative_prompt, built.rating, channel, policy, tokenizer=tokenizer
    )


# --- images -----------------------------------------------------------------------------


MINOR_KEY: Final = "minor:"
SEXUAL_KEY: Final = "sexual:"


@dataclass(frozen=True, slots=True)
class RatingScores:
    """The classifier's four rating scores (0-1), stored with each image, and what it saw
    of the image-side hard block.

    ``minors`` are the minor-related tags the tagger scored over its threshold, ``sexual``
    the sexual signals over theirs (sexual tags, and ``rating:questionable`` /
    ``rating:explicit`` when a rating passes the hard block's own rating threshold), each
    with its score (see :mod:`bot.moderation.classifier`). ``minors_checked`` is False when
    the tagger lacks the minor tags it needs: then nobody can tell whether a sexual image
    shows a minor, and :func:`image_verdict` withholds sexual images everywhere.
    """

    general: float
    sensitive: float
    questionable: float
    explicit: float
    minors: Mapping[str, float] = field(default_factory=dict)
    sexual: Mapping[str, float] = field(default_factory=dict)
    minors_checked: bool = True

    @property
    def hard_block(self) -> bool:
        """The image shows, to the tagger, both a minor and sexual content."""
        return bool(self.minors) and bool(self.sexual)

    def as_dict(self) -> dict[str, float]:
        """For ``Image.moderation_scores`` (hard-block signals as ``minor:x``/``sexual:x``)."""
        out = {
            "general": self.general,
            "sensitive": self.sensitive,
            "questionable": self.questionable,
            "explicit": self.explicit,
        }
        out.update({f"{MINOR_KEY}{tag}": score for tag, score in self.minors.items()})
        out.update({f"{SEXUAL_KEY}{tag}": score for tag, score in self.sexual.items()})
        return out

    @classmethod
    def from_dict(cls, scores: Mapping[str, float]) -> RatingScores:
        return cls(
            general=float(scores["general"]),
            sensitive=float(scores["sensitive"]),
            questionable=float(scores["questionable"]),
            explicit=float(scores["explicit"]),
            minors={
                k.removeprefix(MINOR_KEY): float(v)
                for k, v in scores.items()
                if k.startswith(MINOR_KEY)
            },
            sexual={
                k.removeprefix(SEXUAL_KEY): float(v)
                for k, v in scores.items()
                if k.startswith(SEXUAL_KEY)
            },
        )

    @property
    def rating(self) -> str:
        """The rating with the highest score."""
        scores = self.as_dict()
        return max(scores, key=scores.__getitem__)

    def over(self, thresholds: Thresholds) -> tuple[str, ...]:
        """The ratings whose scores are above their thresholds (explicit first)."""
        out: list[str] = []
        if self.explicit > thresholds.explicit:
            out.append("explicit")
        if self.questionable > thresholds.questionable:
            out.append("questionable")
        return tuple(out)


class Action(StrEnum):
    POST = "post"
    SPOILER = "spoiler"
    WITHHOLD = "withhold"


@dataclass(frozen=True, slots=True)
class Verdict:
    """What to do with one output image, and why (the reason is shown to the member)."""

    action: Action
    reason: str
    flagged: bool = False  # rated over a threshold
    hard_block: bool = False  # sexual content and a minor, to the image classifier
    quarantined: bool = False  # never leaves the bot: not even to the moderation log

    @property
    def posted(self) -> bool:
        return self.action is not Action.WITHHOLD

    @property
    def spoiler(self) -> bool:
        return self.action is Action.SPOILER

    @property
    def forwardable(self) -> bool:
        """A withheld image that may go to the moderation log channel (never a hard
        block, nor a sexual image nobody could check for minors)."""
        return not self.posted and not self.quarantined

    @property
    def event_kind(self) -> str | None:
        """The ``ModerationEvent.kind`` to record, or None."""
        if self.hard_block:
            return "image_hard_blocked"
        return "image_withheld" if self.action is Action.WITHHOLD else None


def _signals(found: Mapping[str, float]) -> str:
    return ", ".join(f"{tag} {score:.2f}" for tag, score in found.items())


def image_verdict(
    scores: RatingScores | None,
    channel: ChannelContext,
    policy: GuildPolicy,
    *,
    error: str | None = None,
    minors: Sequence[str] = (),
) -> Verdict:
    """Decide whether an image is posted (see the module docstring).

    ``scores`` is None when the classifier could not run; ``error`` then says why. Pass the
    prompt decision's ``minors``: an image whose prompt mentions minors is held to the rules
    of a plain channel even in an age-restricted one (the model can make NSFW images
    unprompted, and sexual images of minors are never posted).

    Before anything else, in every channel and whatever the settings: an image the
    classifier sees as sexual and as showing a minor (:attr:`RatingScores.hard_block`) is
    a hard block: withheld, quarantined (forwarded to nobody) and logged as
    ``image_hard_blocked``. When the classifier cannot check for minors
    (:attr:`RatingScores.minors_checked` is False), an image with a sexual signal is
    withheld and quarantined in every channel, age-restricted ones included.
    """
    if scores is not None and scores.hard_block:
        return Verdict(
            Action.WITHHOLD,
            f"hard block: the image check sees sexual content ({_signals(scores.sexual)}) "
            f"and a minor ({_signals(scores.minors)}); sexual images of minors are never "
            "posted, in any channel, and this is logged for moderators",
            flagged=True,
            hard_block=True,
            quarantined=True,
        )
    if scores is not None and not scores.minors_checked and scores.sexual:
        return Verdict(
            Action.WITHHOLD,
            f"withheld: the image looks sexual ({_signals(scores.sexual)}) and the image "
            "classifier cannot check it for minors (its tag list lacks the tags the hard "
            "block needs)",
            flagged=True,
            quarantined=True,
        )
    if channel.is_dm and not policy.dm_allowed:
        return Verdict(Action.WITHHOLD, "the bot does not post images in direct messages")
    strict = not channel.age_restricted or bool(minors)
    where = "in this channel" if not channel.age_restricted else "for a prompt about minors"
    over = () if scores is None else scores.over(policy.thresholds)
    if scores is None:
        why = f"the image check could not run ({error})" if error else "the image check did not run"
        if strict and policy.fail_closed:
            return Verdict(Action.WITHHOLD, f"withheld: {why}")
        if channel.age_restricted:
            action = Action.POST if policy.spoiler == "never" else Action.SPOILER
            return Verdict(action, why)
        return Verdict(Action.POST, f"posted unchecked: {why}")
    if over:
        worst = over[0]
        score = getattr(scores, worst)
        limit = getattr(policy.thresholds, worst)
        why = f"rated {worst} ({score:.2f}, above {limit:.2f})"
        if strict:
            return Verdict(Action.WITHHOLD, f"withheld: {why}; not allowed {where}", flagged=True)
        action = Action.POST if policy.spoiler == "never" else Action.SPOILER
        return Verdict(action, why, flagged=True)
    if channel.age_restricted and policy.spoiler == "always":
        return Verdict(Action.SPOILER, f"rated {scores.rating}; spoilers always on here")
    return Verdict(Action.POST, f"rated {scores.rating}")


# --- the `policy check` command ---------------------------------------------------------


def policy_check_lines(
    prompts: Iterable[str],
    channel: str | ChannelKind | ChannelContext,
    settings: ModerationSettings,
    *,
    overrides: Mapping[str, Any] | None = None,
    negative: str = "",
    rating: str | None = None,
    quality: str = DEFAULT_QUALITY,
    style: str = DEFAULT_STYLE,
    wildcards: WildcardSource | None = None,
    seed: int = 0,
) -> Iterator[dict[str, Any]]:
    """One JSON-ready object per prompt for ``python -m bot policy check``.

    Each prompt is built as ``/imagine`` would build it (presets, wildcards drawn with
    ``seed``) and checked; blank prompts are skipped. A prompt that cannot be built (an
    unknown wildcard) is refused with the build error as its reason, unless its own words
    already hard-block it. Raises ``ValueError`` for an unknown channel kind and
    :class:`PolicySettingsError` for bad overrides.
    """
    where = channel if isinstance(channel, ChannelContext) else ChannelContext.of_kind(channel)
    policy = GuildPolicy.from_settings(settings, overrides)
    for raw in prompts:
        prompt = raw.strip()
        if not prompt:
            continue
        try:
            built = build_prompt(
                prompt,
                negative,
                quality=quality,
                style=style,
                rating=rating,
                wildcards=wildcards,
                seed=seed,
                allow_nsfw=where.age_restricted,
            )
            decision = check_built(built, where, policy)
        except PromptError as exc:
            decision = check_prompt(prompt, negative, None, where, policy)
            if decision.decision is not Decision.HARD_BLOCK:
                decision = PromptDecision(Decision.REFUSE, str(exc), (), decision.negative_prompt)
        yield {"prompt": prompt, **decision.as_dict()}
