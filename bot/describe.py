"""``/describe``: an image's WD14 tags as an Animagine XL 3.1 prompt. No Discord here.

**The order** is the one the model card says Animagine was trained on, ``1girl/1boy,
character name, from what series, everything else``, with the rating tag last:

1. the *people* tags: the counts ``1girl`` ... ``6+girls``, ``multiple girls``, then the
   same for boys and others (girls before boys before others; within a kind, highest score
   first). ``solo`` is not one of them: the model card's own example writes
   ``1girl, souryuu asuka langley, neon genesis evangelion, solo, ...``;
2. the character tags (over ``describe.character_threshold``), highest first;
3. the series: the tagger's copyright tags where its tag list has them (category 3; the
   SmilingWolf v3 lists do not), then the series read from the character tags. Danbooru
   qualifies an ambiguous character name with its series in brackets
   (``ganyu_(genshin_impact)``, ``artoria_pendragon_(lancer)_(fate)``): the last bracketed
   part is taken as the series (``genshin impact``, ``fate``), except ``cosplay``. A
   character tag without one (``hatsune_miku``) gives no series: the tagger does not know it,
   and a guessed series would be a wrong tag. The character tag itself keeps its qualifier,
   as Danbooru and the model write it;
4. the general tags (over ``describe.general_threshold``), highest score first, at most
   ``describe.max_tags``;
5. the rating, the highest of the tagger's four, in Animagine's words: general ``safe``,
   sensitive ``sensitive``, questionable ``nsfw``, explicit ``explicit, nsfw``.

**Hygiene**: each tag goes through :func:`bot.prompts.clean_tags` on its own (underscores to
spaces, emoticons such as ``^_^`` kept), then its brackets and backslashes are escaped
(``ganyu \\(genshin impact\\)``): unescaped, A1111's syntax would read them as emphasis.
A tag seen twice (a series that is also a general tag) is kept once, where it comes first;
a rating word among the general tags is dropped (the rating comes last, from the scores).

**What may be shown where** (:func:`visibility`): describing reads an image, it posts none;
but the answer is text, so it follows the image check's rules (:mod:`bot.moderation.
image_check`). In every channel an image the tagger sees as sexual and as showing a minor
(or as sexual when it cannot check for minors) gets no tags at all. Outside age-restricted
channels (and in direct messages, where the bot serves them), an image rated questionable
or explicit (the highest rating, or a score over the server's thresholds) or carrying a
sexual signal gets no tags either: the member is told why, and that an age-restricted
channel would show them. Whatever is shown, the tags of the tagger's sexual list are left out
outside age-restricted channels. Answers are ephemeral (the adapter's part).

**Attachments** (:func:`load_image`) go through the same bounds as an image prompt's
(:mod:`bot.attachments`): the byte count, PNG, JPEG or WebP by their first bytes (never by
name or declared type), the pixel count read from the header, PIL's decompression-bomb check
turned into an error, only the first frame decoded.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Collection, Iterable
from dataclasses import dataclass
from typing import Final, Protocol, runtime_checkable

from PIL import Image

from bot.attachments import AttachmentRefused, check_bytes, decode, header_size, sniff
from bot.errors import ReadableError, Text, words
from bot.moderation.channels import ChannelContext
from bot.moderation.classifier import TagScores
from bot.moderation.guild_policy import GuildPolicy
from bot.moderation.image_check import RatingScores
from bot.prompts.tags import RATINGS, clean_tags

__all__ = [
    "RATING_PROMPT",
    "Description",
    "ImageRejected",
    "TagReader",
    "Visibility",
    "describe_bytes",
    "describe_image",
    "load_image",
    "order_tags",
    "visibility",
]

RATING_PROMPT: Final = {
    "general": "safe",
    "sensitive": "sensitive",
    "questionable": "nsfw",
    "explicit": "explicit",
}
"""The tagger's rating names to Animagine's rating options (see :data:`bot.prompts.RATINGS`)."""
_RATINGS_BY_SEVERITY: Final = ("explicit", "questionable", "sensitive", "general")
_PEOPLE: Final = re.compile(r"(?:(?P<count>[1-9])\+?|multiple)_?(?P<kind>girl|boy|other)s?")
_KINDS: Final = ("girl", "boy", "other")
_QUALIFIER: Final = re.compile(r"_?\(([^()]+)\)\s*$")
_BETWEEN_QUALIFIERS: Final = re.compile(r"\)_\((?=[^()]{2,}\))")
_NOT_SERIES: Final = frozenset({"cosplay"})
_ESCAPE: Final = re.compile(r"([\\()\[\]])")
_FORMATS: Final = ("PNG", "JPEG", "WEBP")


class ImageRejected(ReadableError, ValueError):
    """An attachment that is not described; the message is for the member."""


@runtime_checkable
class TagReader(Protocol):
    """What describing needs of the tagger (:class:`bot.moderation.classifier.Tagger`)."""

    def tag_scores(
        self, image: Image.Image, *, general_threshold: float, character_threshold: float
    ) -> TagScores: ...

    @property
    def sexual_tags(self) -> tuple[str, ...]: ...


@dataclass(frozen=True, slots=True)
class Description:
    """An image's tags in Animagine's order, groups kept apart (hygiene applied)."""

    people: tuple[str, ...]
    characters: tuple[str, ...]
    series: tuple[str, ...]
    general: tuple[str, ...]
    rating: str  # the tagger's name: general, sensitive, questionable, explicit
    scores: RatingScores

    @property
    def rating_tags(self) -> tuple[str, ...]:
        return RATINGS[RATING_PROMPT[self.rating]]

    @property
    def tags(self) -> tuple[str, ...]:
        return (*self.people, *self.characters, *self.series, *self.general, *self.rating_tags)

    @property
    def prompt(self) -> str:
        return ", ".join(self.tags)

    def without(self, names: Collection[str]) -> Description:
        """The description less the tags ``names`` (tagger spelling or prompt spelling)."""
        drop = {_tidy(name).casefold() for name in names}

        def keep(tags: tuple[str, ...]) -> tuple[str, ...]:
            return tuple(tag for tag in tags if tag.casefold() not in drop)

        return Description(
            keep(self.people),
            keep(self.characters),
            keep(self.series),
            keep(self.general),
            self.rating,
            self.scores,
        )


def _tidy(name: str) -> str:
    """One tagger tag as a prompt tag: hygiene, then brackets escaped."""
    # Two bracketed qualifiers (``_(lancer)_(fate)``): the underscore between them is a space
    # (clean_tags keeps a lone ``_`` between brackets, as in the emoticon ``(o)_(o)``).
    cleaned = clean_tags(_BETWEEN_QUALIFIERS.sub(") (", name.replace(",", " ")))
    return _ESCAPE.sub(r"\\\1", cleaned)


def _series_of(character: str) -> str | None:
    match = _QUALIFIER.search(character)
    if match is None:
        return None
    series = match.group(1).strip("_ ")
    return None if not series or series.casefold() in _NOT_SERIES else series


def _rating(scores: RatingScores) -> str:
    values = {name: getattr(scores, name) for name in _RATINGS_BY_SEVERITY}
    # Ties go to the more severe rating.
    return max(_RATINGS_BY_SEVERITY, key=lambda name: values[name])


def order_tags(found: TagScores, *, max_tags: int) -> Description:
    """The tags of ``found`` in Animagine's order (see the module docstring)."""
    people: list[tuple[int, float, str]] = []
    general: list[str] = []
    for name, score in found.general:
        match = _PEOPLE.fullmatch(name.strip().casefold().replace(" ", "_"))
        if match is not None:
            people.append((_KINDS.index(match["kind"]), -score, name))
        else:
            general.append(name)
    people.sort()
    series_names = [name for name, _ in found.copyright]
    series_names += [s for name, _ in found.character if (s := _series_of(name)) is not None]

    seen: set[str] = set()

    def group(names: Iterable[str], limit: int | None = None) -> tuple[str, ...]:
        out: list[str] = []
        for name in names:
            tag = _tidy(name)
            if not tag or tag.casefold() in seen:
                continue
            if limit is not None and len(out) >= limit:
                break
            seen.add(tag.casefold())
            out.append(tag)
        return tuple(out)

    rating = _rating(found.ratings)
    # The rating comes last, from the rating scores: no rating word among the other tags.
    seen.update(tag.casefold() for tags in RATINGS.values() for tag in tags)
    return Description(
        people=group(name for _, _, name in people),
        characters=group(name for name, _ in found.character),
        series=group(series_names),
        general=group(general, max_tags),
        rating=rating,
        scores=found.ratings,
    )


# ------------------------------------------------------------------------------ who sees it


@dataclass(frozen=True, slots=True)
class Visibility:
    """What the member is shown: the description (possibly less some tags), or why not."""

    description: Description | None
    reason: Text  # for the member (str(): the English)
    code: str  # "shown", "hard_block", "sexual_unchecked", "direct_message", "rated", "sexual"
    left_out: tuple[str, ...] = ()

    @property
    def shown(self) -> bool:
        return self.description is not None


def visibility(
    description: Description,
    channel: ChannelContext,
    policy: GuildPolicy,
    *,
    sexual_tags: Collection[str] = (),
) -> Visibility:
    """Whether ``description`` may be shown in ``channel`` (see the module docstring)."""
    scores = description.scores
    if scores.hard_block:
        return Visibility(
            None,
            words(
                "the image check sees sexual content and a minor in this image: it is not "
                "described, in any channel"
            ),
            "hard_block",
        )
    if scores.sexual and not scores.minors_checked:
        return Visibility(
            None,
            words(
                "the image looks sexual and the image check cannot tell whether it shows a "
                "minor: it is not described, in any channel"
            ),
            "sexual_unchecked",
        )
    if channel.is_dm and not policy.dm_allowed:
        return Visibility(None, words("the bot does not describe images in direct messages"), "dm")
    if not channel.age_restricted:
        over = scores.over(policy.thresholds)
        if over or description.rating in ("questionable", "explicit"):
            worst = over[0] if over else description.rating
            return Visibility(
                None,
                words(
                    "the image is rated {rating} ({score}); its tags are only shown in "
                    "age-restricted channels",
                    rating=worst,
                    score=f"{getattr(scores, worst):.2f}",
                ),
                "rated",
            )
        if scores.sexual:
            return Visibility(
                None,
                words(
                    "the image check sees sexual content in this image; its tags are only "
                    "shown in age-restricted channels"
                ),
                "sexual",
            )
        plain = description.without(sexual_tags)
        left_out = tuple(t for t in description.tags if t not in plain.tags)
        reason = words("not age-restricted: sexual tags left out")
        return Visibility(plain, reason, "shown", left_out)
    return Visibility(description, words("age-restricted channel"), "shown")


# ------------------------------------------------------------------------------ images


def load_image(data: bytes, *, max_bytes: int, max_pixels: int) -> Image.Image:
    """Decode ``data`` within bounds, with the same checks as an image prompt's
    (:mod:`bot.attachments`: bytes, format by content, header pixels, Pillow's bomb check,
    then decode to RGB); blocking (a thread). Raises :class:`ImageRejected` saying why."""
    try:
        check_bytes(len(data), max_bytes)
        kind = sniff(data)
        header_size(data, kind, max_pixels)
        return decode(data, kind)
    except AttachmentRefused as exc:
        raise ImageRejected(exc.text) from None


def describe_image(
    tagger: TagReader,
    image: Image.Image,
    *,
    general_threshold: float,
    character_threshold: float,
    max_tags: int,
) -> Description:
    """Tag ``image`` and order the tags; blocking (the tagger runs here)."""
    found = tagger.tag_scores(
        image, general_threshold=general_threshold, character_threshold=character_threshold
    )
    return order_tags(found, max_tags=max_tags)


async def describe_bytes(
    tagger: TagReader,
    data: bytes,
    *,
    general_threshold: float,
    character_threshold: float,
    max_tags: int,
    max_bytes: int,
    max_pixels: int,
) -> Description:
    """:func:`load_image` then :func:`describe_image`, in a worker thread (never on the
    event loop). Raises :class:`ImageRejected`, or the tagger's
    :class:`~bot.moderation.classifier.ClassifierUnavailable`."""

    def work() -> Description:
        image = load_image(data, max_bytes=max_bytes, max_pixels=max_pixels)
        return describe_image(
            tagger,
            image,
            general_threshold=general_threshold,
            character_threshold=character_threshold,
            max_tags=max_tags,
        )

    return await asyncio.to_thread(work)
