"""A1111 emphasis syntax: split a prompt into runs of text and their attention weights.

:func:`parse_emphasis` returns exactly what AUTOMATIC1111's ``parse_prompt_attention``
(``modules/prompt_parser.py``, stable-diffusion-webui 1.6 and later, where ``(x: 1.2 )``
may have spaces around the number) returns for the same input, quirks included:

* ``(x)`` multiplies by 1.1, ``[x]`` divides by 1.1, nesting multiplies, ``(x:1.3)`` and
  ``(a, b:0.8)`` set an explicit multiplier;
* ``\\(``, ``\\)``, ``\\[``, ``\\]`` and ``\\\\`` are the literal characters; a backslash
  before any other character (or at the end) vanishes;
* a ``)`` or ``]`` with nothing to close is plain text, and so is ``:1.2)`` outside
  parentheses; brackets still open at the end apply their multiplier to everything after
  them (round ones first, then square ones);
* the keyword ``BREAK`` (a whole word, with the whitespace around it) becomes the marker
  ``("BREAK", -1.0)``; inside brackets the marker is multiplied like any run, so only a
  marker outside all brackets has the weight -1.0 that encoders look for;
* adjacent runs of equal weight are merged, and empty input gives ``[("", 1.0)]``.

The one deviation: A1111 raises ``ValueError`` when the number of an explicit weight is
not a number (``(a:1.2.3)``, ``(a:.)``); here that text stays literal and the ``)`` closes
the parenthesis with the usual 1.1, as if the ``:`` had been any other character. The
parser never raises.

**Bounds.** The parser returns any weight, as A1111 does, but the bot renders only weights
from :data:`MIN_WEIGHT` to :data:`MAX_WEIGHT` (0 to 3, after nesting: ``((x:2))`` is 2.2):
:func:`check_weights` refuses anything else with :class:`WeightOutOfRange`, naming the text
and its weight, and refuses weights that are not finite (``(x:999...9)`` parses to
infinity). Nothing is clamped: a weight of 70000 does not draw a tag "very strongly", it
overflows half precision and draws a black or NaN image, so the member is told to fix the
prompt instead. The ``BREAK`` marker is not a weight and is never checked.
"""

from __future__ import annotations

import math
import re
from typing import Final

from bot.prompts.tags import PromptError, prompt_word

__all__ = [
    "BREAK_MARKER",
    "MAX_WEIGHT",
    "MIN_WEIGHT",
    "ROUND_MULTIPLIER",
    "SQUARE_MULTIPLIER",
    "WeightOutOfRange",
    "check_weights",
    "parse_emphasis",
]

MIN_WEIGHT: Final = 0.0
MAX_WEIGHT: Final = 3.0
"""A1111 users weight tags from about 0.5 to 1.6; 3 leaves room and keeps fp16 finite."""

ROUND_MULTIPLIER: Final = 1.1
SQUARE_MULTIPLIER: Final = 1 / 1.1
BREAK_MARKER: Final = ("BREAK", -1.0)

# One token per match, tried in this order at each position (the order matters only where
# two alternatives can start at the same character: an escape before a lone backslash,
# an explicit weight before a lone colon).
_TOKEN: Final = re.compile(
    r"(?P<escape>\\[()\[\]\\]?)"  # \( \) \[ \] \\ or a lone backslash
    r"|(?P<open>[(\[])"
    r"|:\s*(?P<weight>[+-]?[.\d]+)\s*\)"  # the end of (text:1.2)
    r"|(?P<close>[)\]])"
    r"|[^\\()\[\]:]+"  # plain text
    r"|:"
)
_BREAK: Final = re.compile(r"\s*\bBREAK\b\s*")


def parse_emphasis(text: str) -> list[tuple[str, float]]:
    """Split ``text`` into ``(text, weight)`` runs exactly as A1111 does (see the module)."""
    texts: list[str] = []
    weights: list[float] = []  # weights[i] belongs to texts[i]; scaled in place like A1111's
    open_round: list[int] = []  # index into texts/weights where each open bracket began
    open_square: list[int] = []

    def scale_from(start: int, multiplier: float) -> None:
        for i in range(start, len(weights)):
            weights[i] *= multiplier

    def add_text(chunk: str) -> None:
        for i, part in enumerate(_BREAK.split(chunk)):
            if i > 0:
                texts.append(BREAK_MARKER[0])
                weights.append(BREAK_MARKER[1])
            texts.append(part)
            weights.append(1.0)

    for match in _TOKEN.finditer(text):
        piece = match.group(0)
        if match.group("escape") is not None:
            texts.append(piece[1:])
            weights.append(1.0)
        elif match.group("open") is not None:
            (open_round if piece == "(" else open_square).append(len(texts))
        elif (number := match.group("weight")) is not None and open_round:
            try:
                multiplier = float(number)
            except ValueError:  # A1111 raises here; read it as ":" text, then ")"
                add_text(piece[:-1])
                multiplier = ROUND_MULTIPLIER
            scale_from(open_round.pop(), multiplier)
        elif piece == ")" and open_round:
            scale_from(open_round.pop(), ROUND_MULTIPLIER)
        elif piece == "]" and open_square:
            scale_from(open_square.pop(), SQUARE_MULTIPLIER)
        else:
            add_text(piece)

    for start in open_round:
        scale_from(start, ROUND_MULTIPLIER)
    for start in open_square:
        scale_from(start, SQUARE_MULTIPLIER)

    merged: list[tuple[str, float]] = []
    for chunk, weight in zip(texts, weights, strict=True):
        if merged and merged[-1][1] == weight:
            merged[-1] = (merged[-1][0] + chunk, merged[-1][1])
        else:
            merged.append((chunk, weight))
    return merged or [("", 1.0)]


class WeightOutOfRange(PromptError):
    """An emphasis weight the bot does not render; the message names the text and weight."""


def _shown(fragment: str) -> str:
    text = " ".join(fragment.split())
    return text if len(text) <= 40 else f"{text[:39]}…"


def check_weights(text: str, what: str = "prompt") -> None:
    """Refuse ``text`` when a run of it has a weight outside ``MIN_WEIGHT..MAX_WEIGHT`` or
    one that is not finite (weights are the products of nesting, as the encoder uses them).

    Raises :class:`WeightOutOfRange`, e.g. ``the prompt weights '1girl' by 999 (after
    nesting); weights must be between 0 and 3``.
    """
    for fragment, weight in parse_emphasis(text):
        if (fragment == BREAK_MARKER[0] and weight < 0) or not fragment.strip():
            continue
        if not math.isfinite(weight):
            raise WeightOutOfRange(
                "the {what} weights {text} by a number too large to use (not finite); "
                "weights must be between {low} and {high}",
                what=prompt_word(what),
                text=repr(_shown(fragment)),
                low=f"{MIN_WEIGHT:g}",
                high=f"{MAX_WEIGHT:g}",
            )
        if not MIN_WEIGHT <= weight <= MAX_WEIGHT:
            raise WeightOutOfRange(
                "the {what} weights {text} by {weight} (after nesting); weights must be "
                "between {low} and {high}, e.g. ({example}:1.2)",
                what=prompt_word(what),
                text=repr(_shown(fragment)),
                weight=f"{weight:.4g}",
                low=f"{MIN_WEIGHT:g}",
                high=f"{MAX_WEIGHT:g}",
                example=_shown(fragment),
            )
