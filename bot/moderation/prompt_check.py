"""Prompt checks: which prompts may run where, judged on what the model reads.

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

:func:`policy_check_lines` is the ``policy check`` command's report.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Final

from bot.errors import Text, words
from bot.moderation.channels import ChannelContext, ChannelKind
from bot.moderation.guild_policy import (
    GuildPolicy,
)
from bot.moderation.lists import (
    CHILD_SEXUAL_TERMS,
    MINOR_TERMS,
    RATING_TERMS,
    SEXUAL_TERMS,
    TERM_CONTEXTS,
    TERM_EXCEPTIONS,
)
from bot.moderation.matching import ScannedPrompt, TermSet, minor_age_terms, scan, tag_key
from bot.moderation.settings import (
    ModerationSettings,
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

_CHILD_SEXUAL_TERMS: Final = TermSet(CHILD_SEXUAL_TERMS, TERM_EXCEPTIONS)

_MINOR_TERMS: Final = TermSet(MINOR_TERMS, TERM_EXCEPTIONS)

_SEXUAL_TERMS: Final = TermSet(SEXUAL_TERMS, TERM_EXCEPTIONS, TERM_CONTEXTS)

_RATING_TERMS: Final = TermSet(RATING_TERMS)

ALWAYS_NEGATIVE: Final = "nsfw"


NSFW_RATINGS: Final = frozenset({"nsfw", "explicit"})


REFUSAL_CODES: Final = ("hard_block", "direct_message", "rating", "blocked_tags", "invalid")
"""What :attr:`PromptDecision.code` of a refused prompt may be (``allowed`` otherwise)."""


class Decision(StrEnum):
    ALLOW = "allow"
    REFUSE = "refuse"
    HARD_BLOCK = "hard-block"


@dataclass(frozen=True, slots=True)
class PromptDecision:
    """What the policy says about a prompt, and the negative prompt the engine must use."""

    decision: Decision
    reason: Text  # for the member (str(): the English)
    matched: tuple[str, ...]
    negative_prompt: str
    minors: tuple[str, ...] = ()  # terms about minors found, also in allowed prompts
    # Why, in one word from REFUSAL_CODES (metrics, logs): never the prompt's words.
    code: str = "allowed"

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
            "reason": str(self.reason),
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
            why = words("terms that sexualise minors: {terms}", terms=", ".join(child_sexual))
        else:
            why = words(
                "sexual: {sexual}; minor: {minor}",
                sexual=", ".join(sexual),
                minor=", ".join(hard_minors),
            )
        return PromptDecision(
            Decision.HARD_BLOCK,
            words(
                "sexual content involving minors is never allowed, in any channel; the "
                "attempt is logged for moderators ({why})",
                why=why,
            ),
            matched,
            final_negative,
            minors,
            code="hard_block",
        )
    if channel.is_dm and not policy.dm_allowed:
        return PromptDecision(
            Decision.REFUSE,
            words("the bot does not make images in direct messages"),
            (),
            final_negative,
            minors,
            code="direct_message",
        )
    if not channel.age_restricted:
        matched = _unique(
            rating_tags(rating_name) if nsfw_rating else (),
            _RATING_TERMS.find(scanned, tokenizer=tokenizer),
            blocked.find(scanned, tokenizer=tokenizer),
        )
        if nsfw_rating:
            reason = words(
                "the {rating} rating is only allowed in age-restricted channels", rating=rating_name
            )
            return PromptDecision(
                Decision.REFUSE, reason, matched, final_negative, minors, code="rating"
            )
        if matched:
            reason = words(
                "not allowed outside age-restricted channels: {tags}", tags=", ".join(matched)
            )
            return PromptDecision(
                Decision.REFUSE, reason, matched, final_negative, minors, code="blocked_tags"
            )
        return PromptDecision(Decision.ALLOW, words("no blocked tags"), (), final_negative, minors)
    return PromptDecision(
        Decision.ALLOW,
        words("age-restricted channel: rating tags allowed"),
        (),
        final_negative,
        minors,
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
                decision = PromptDecision(
                    Decision.REFUSE, exc.text, (), decision.negative_prompt, code="invalid"
                )
        yield {"prompt": prompt, **decision.as_dict()}


def warm_up(policy: GuildPolicy, tokenizer: object | None = None) -> None:
    """Load and compile now what the first prompt check would (the term lists, the English
    dictionary, the CLIP pieces), so the first member's request does not wait for it."""
    for channel in (ChannelContext(age_restricted=False), ChannelContext(age_restricted=True)):
        check_prompt("1girl, solo, smile", "lowres", None, channel, policy, tokenizer=tokenizer)
