"""Image verdicts: which rendered images may be posted where.

**Images** (:func:`image_verdict`): outside age-restricted channels an image whose
questionable or explicit score is above the server's threshold is withheld, and so is every
image when the classifier could not run, unless ``fail_closed`` is off. In age-restricted
channels images are posted, as spoilers per the server's spoiler policy, except when the
prompt mentions minors (:attr:`PromptDecision.minors`): then the plain-channel rules apply.
First of all, in every channel: an image the classifier sees as sexual and as showing a
minor is a hard block, never posted nor forwarded (see :func:`image_verdict`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Final

from bot.errors import Text, words
from bot.moderation.channels import ChannelContext
from bot.moderation.guild_policy import (
    GuildPolicy,
    Thresholds,
)

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


WITHHOLD_CODES: Final = (
    "hard_block",
    "sexual_unchecked",
    "direct_message",
    "check_failed",
    "rated_explicit",
    "rated_questionable",
)
"""What :attr:`Verdict.code` of a withheld image may be."""


class Action(StrEnum):
    POST = "post"
    SPOILER = "spoiler"
    WITHHOLD = "withhold"


@dataclass(frozen=True, slots=True)
class Verdict:
    """What to do with one output image, and why (the reason is shown to the member)."""

    action: Action
    reason: Text  # for the member (str(): the English)
    flagged: bool = False  # rated over a threshold
    hard_block: bool = False  # sexual content and a minor, to the image classifier
    quarantined: bool = False  # never leaves the bot: not even to the moderation log
    # Why, in one word from WITHHOLD_CODES for a withheld image (metrics, logs); not stored.
    code: str = ""

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

    def as_row(self) -> dict[str, Any]:
        """For ``Image.verdict``: what was decided, to deliver the same again later."""
        return {
            "action": self.action.value,
            "reason": str(self.reason),
            "reason_text": self.reason.as_data(),
            "flagged": self.flagged,
            "hard_block": self.hard_block,
            "quarantined": self.quarantined,
        }

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> Verdict:
        return cls(
            Action(str(row["action"])),
            Text.from_data(row.get("reason_text"), str(row.get("reason", ""))),
            flagged=bool(row.get("flagged", False)),
            hard_block=bool(row.get("hard_block", False)),
            quarantined=bool(row.get("quarantined", False)),
        )

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
            words(
                "hard block: the image check sees sexual content ({sexual}) and a minor "
                "({minor}); sexual images of minors are never posted, in any channel, and "
                "this is logged for moderators",
                sexual=_signals(scores.sexual),
                minor=_signals(scores.minors),
            ),
            flagged=True,
            hard_block=True,
            quarantined=True,
            code="hard_block",
        )
    if scores is not None and not scores.minors_checked and scores.sexual:
        return Verdict(
            Action.WITHHOLD,
            words(
                "withheld: the image looks sexual ({sexual}) and the image classifier cannot "
                "check it for minors (its tag list lacks the tags the hard block needs)",
                sexual=_signals(scores.sexual),
            ),
            flagged=True,
            quarantined=True,
            code="sexual_unchecked",
        )
    if channel.is_dm and not policy.dm_allowed:
        return Verdict(
            Action.WITHHOLD,
            words("the bot does not post images in direct messages"),
            code="direct_message",
        )
    strict = not channel.age_restricted or bool(minors)
    over = () if scores is None else scores.over(policy.thresholds)
    if scores is None:
        if error:
            why = words("the image check could not run ({error})", error=error)
        else:
            why = words("the image check did not run")
        if strict and policy.fail_closed:
            return Verdict(Action.WITHHOLD, words("withheld: {why}", why=why), code="check_failed")
        if channel.age_restricted:
            action = Action.POST if policy.spoiler == "never" else Action.SPOILER
            return Verdict(action, why)
        return Verdict(Action.POST, words("posted unchecked: {why}", why=why))
    if over:
        worst = over[0]
        rated = words(
            "rated {rating} ({score}, above {limit})",
            rating=worst,
            score=f"{getattr(scores, worst):.2f}",
            limit=f"{getattr(policy.thresholds, worst):.2f}",
        )
        if strict:
            if channel.age_restricted:
                reason = words("withheld: {why}; not allowed for a prompt about minors", why=rated)
            else:
                reason = words("withheld: {why}; not allowed in this channel", why=rated)
            return Verdict(Action.WITHHOLD, reason, flagged=True, code=f"rated_{worst}")
        action = Action.POST if policy.spoiler == "never" else Action.SPOILER
        return Verdict(action, rated, flagged=True)
    if channel.age_restricted and policy.spoiler == "always":
        return Verdict(
            Action.SPOILER,
            words("rated {rating}; spoilers always on here", rating=scores.rating),
        )
    return Verdict(Action.POST, words("rated {rating}", rating=scores.rating))


def preview_shown(verdict: Verdict) -> bool:
    """Whether a live preview with ``verdict`` may be shown while its job renders: only
    when the finished image would be posted as it is (not withheld, not behind a spoiler,
    no hard block)."""
    return verdict.posted and not verdict.spoiler and not verdict.hard_block


def input_refusal(
    scores: RatingScores | None,
    channel: ChannelContext,
    policy: GuildPolicy,
    *,
    error: str | None = None,
) -> Verdict | None:
    """The verdict that refuses an input image (an ``/imagine`` attachment for img2img),
    or None when it may be used: the rules of :func:`image_verdict` for a result in the
    same channel. An input that a plain channel would withhold is refused there; the hard
    block refuses an input in every channel, age-restricted ones included; an input the
    classifier could not rate is refused where ``fail_closed`` would withhold a result."""
    verdict = image_verdict(scores, channel, policy, error=error)
    return None if verdict.posted else verdict
