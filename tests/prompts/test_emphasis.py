"""parse_emphasis must give A1111's parse_prompt_attention runs, quirks included."""

from __future__ import annotations

import itertools
import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bot.prompts import PromptError, parse_emphasis
from bot.prompts.emphasis import (
    BREAK_MARKER,
    MAX_WEIGHT,
    MIN_WEIGHT,
    WeightOutOfRange,
    check_weights,
)

UP = 1.1
DOWN = 1 / 1.1

# Expected weights are written as the products A1111 computes, in its order, so that the
# comparison can be exact.
CASES: list[tuple[str, list[tuple[str, float]]]] = [
    # The examples of A1111's docstring.
    ("normal text", [("normal text", 1.0)]),
    ("an (important) word", [("an ", 1.0), ("important", 1.1), (" word", 1.0)]),
    ("(unbalanced", [("unbalanced", 1.1)]),
    ("\\(literal\\]", [("(literal]", 1.0)]),
    ("(unnecessary)(parens)", [("unnecessaryparens", 1.1)]),
    (
        "a (((house:1.3)) [on] a (hill:0.5), sun, (((sky))).",
        [
            ("a ", 1.0),
            ("house", 1.5730000000000004),
            (" ", 1.1),
            ("on", 1.0),
            (" a ", 1.1),
            ("hill", 0.55),
            (", sun, ", 1.1),
            ("sky", 1.4641000000000006),
            (".", 1.1),
        ],
    ),
    # Plain text and empty input.
    ("", [("", 1.0)]),
    ("1girl, solo, long hair", [("1girl, solo, long hair", 1.0)]),
    ("a:b", [("a:b", 1.0)]),
    ("()", [("", 1.0)]),
    ("(:1.2)", [("", 1.0)]),
    # Nesting multiplies.
    ("((x))", [("x", 1.0 * UP * UP)]),
    ("(((x)))", [("x", 1.0 * UP * UP * UP)]),
    ("[x]", [("x", 1.0 * DOWN)]),
    ("[[x]]", [("x", 1.0 * DOWN * DOWN)]),
    ("([x])", [("x", 1.0 * DOWN * UP)]),
    ("(a) b (c)", [("a", 1.1), (" b ", 1.0), ("c", 1.1)]),
    ("(a [b] c)", [("a ", 1.1), ("b", 1.0 * DOWN * UP), (" c", 1.1)]),
    # Explicit weights.
    ("(x:1.3)", [("x", 1.3)]),
    ("(a, b:0.8)", [("a, b", 0.8)]),
    ("( x : 1.5 )", [(" x ", 1.5)]),
    ("(x:.5)", [("x", 0.5)]),
    ("(x:+2)", [("x", 2.0)]),
    ("(x:-1)", [("x", -1.0)]),
    ("(x:0)", [("x", 0.0)]),
    ("((x:1.5))", [("x", 1.0 * 1.5 * UP)]),
    ("(a (b:2) c:0.5)", [("a ", 0.5), ("b", 1.0 * 2.0 * 0.5), (" c", 0.5)]),
    ("(x:1e5)", [("x:1e5", 1.1)]),  # not a number to the regex: text, then ")"
    ("x:1.2)", [("x:1.2)", 1.0)]),  # nothing open: all text
    ("(a [b:1.5) c]", [("a ", 1.5), ("b", 1.0 * 1.5 * DOWN), (" c", 1.0 * DOWN)]),
    # The one deviation: A1111 raises ValueError here.
    ("(x:1.2.3)", [("x:1.2.3", 1.1)]),
    ("(x:.)", [("x:.", 1.1)]),
    # Escapes.
    ("\\\\", [("\\", 1.0)]),
    ("\\[x\\]", [("[x]", 1.0)]),
    ("a\\b", [("ab", 1.0)]),  # a lone backslash vanishes
    ("end\\", [("end", 1.0)]),
    ("ganyu \\(genshin impact\\)", [("ganyu (genshin impact)", 1.0)]),
    ("(ganyu \\(genshin impact\\):1.2)", [("ganyu (genshin impact)", 1.2)]),
    ("\\(a:1.2\\)", [("(a:1.2)", 1.0)]),
    # Unbalanced brackets.
    ("a) b]", [("a) b]", 1.0)]),
    ("(a", [("a", 1.1)]),
    ("[a (b", [("a ", 1.0 * DOWN), ("b", 1.0 * UP * DOWN)]),
    ("((a) b", [("a", 1.0 * UP * UP), (" b", 1.1)]),
    ("(a] b)", [("a] b", 1.1)]),
    # BREAK.
    ("a BREAK b", [("a", 1.0), BREAK_MARKER, ("b", 1.0)]),
    ("a\nBREAK\nb", [("a", 1.0), BREAK_MARKER, ("b", 1.0)]),
    ("BREAK", [("", 1.0), BREAK_MARKER, ("", 1.0)]),
    ("a, BREAK, b", [("a,", 1.0), BREAK_MARKER, (", b", 1.0)]),
    ("aBREAK b, BREAKING", [("aBREAK b, BREAKING", 1.0)]),
    ("a BREAK BREAK b", [("a", 1.0), BREAK_MARKER, ("", 1.0), BREAK_MARKER, ("b", 1.0)]),
    ("(a) BREAK (b)", [("a", 1.1), ("", 1.0), BREAK_MARKER, ("", 1.0), ("b", 1.1)]),
    ("(a BREAK b)", [("a", 1.1), ("BREAK", -1.0 * UP), ("b", 1.1)]),
    ("(a BREAK b:0)", [("aBREAKb", 0.0)]),  # -0.0 == 0.0, so the marker is merged away
]


@pytest.mark.parametrize(("text", "expected"), CASES)
def test_matches_a1111(text: str, expected: list[tuple[str, float]]) -> None:
    assert parse_emphasis(text) == expected


def test_weights_are_exact_floats() -> None:
    runs = parse_emphasis("a (((house:1.3)) [on]")
    assert [weight for _, weight in runs] == [1.0, 1.5730000000000004, 1.1, 1.0]
    assert all(type(weight) is float for _, weight in runs)


# -- properties ---------------------------------------------------------------------------

_WEIGHT_END = re.compile(r":\s*([+-]?[.\d]+)\s*\)")
_KEYWORD = re.compile(r"\s*\bBREAK\b\s*")


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def strip_markup(text: str) -> str:
    """The text A1111's syntax leaves once brackets, weights, escapes and BREAKs are gone.

    A character scanner, independent of the parser: open brackets always vanish, a closer
    vanishes when it closes something, ``:num)`` vanishes when it closes a ``(``. BREAK
    (with its whitespace) is removed within stretches of text between vanishing markup.
    """
    out: list[str] = []
    stretch: list[str] = []
    rounds = squares = 0

    def flush() -> None:
        out.append(_KEYWORD.sub("", "".join(stretch)))
        stretch.clear()

    i = 0
    while i < len(text):
        char = text[i]
        weight = _WEIGHT_END.match(text, i) if char == ":" else None
        if char == "\\":
            if text[i + 1 : i + 2] and text[i + 1] in "()[]\\":
                stretch.append(text[i + 1])
                i += 2
            else:
                flush()
                i += 1
        elif char in "([":
            flush()
            if char == "(":
                rounds += 1
            else:
                squares += 1
            i += 1
        elif weight is not None and rounds:
            if not _is_number(weight.group(1)):
                stretch.append(weight.group(0)[:-1])
            flush()
            rounds -= 1
            i = weight.end()
        elif weight is not None:
            stretch.append(weight.group(0))
            i = weight.end()
        elif char == ")" and rounds:
            flush()
            rounds -= 1
            i += 1
        elif char == "]" and squares:
            flush()
            squares -= 1
            i += 1
        else:
            stretch.append(char)
            i += 1
    flush()
    return "".join(out)


# Weights here are all positive, so a run ("BREAK", negative) can only be a marker.
_PIECES = [
    "(", ")", "[", "]", "\\", "\\(", "\\)", "\\[", "\\]", "\\\\", ":", ":1.2)", ": 0.5 )",
    ":2)", ":.5)", ":1.2.3)", ":.)", "1.2", ".", "a", "b c", " ", "  ", ",", "\n", "_",
    "BREAK", " BREAK ", "xBREAK", "BREAKy", "\u0663", "\u00e9",
]  # fmt: skip
prompts = st.one_of(
    st.text(),
    st.lists(st.sampled_from(_PIECES), max_size=40).map("".join),
)


def _text_of(runs: list[tuple[str, float]]) -> str:
    return "".join(text for text, weight in runs if not (text == "BREAK" and weight < 0))


@given(prompts)
def test_never_raises_and_returns_runs(text: str) -> None:
    runs = parse_emphasis(text)
    assert runs
    assert all(isinstance(chunk, str) and isinstance(weight, float) for chunk, weight in runs)


@given(prompts)
def test_runs_spell_the_text_without_markup(text: str) -> None:
    assert _text_of(parse_emphasis(text)) == strip_markup(text)


@given(prompts)
def test_adjacent_runs_differ_in_weight(text: str) -> None:
    runs = parse_emphasis(text)
    assert all(a[1] != b[1] for a, b in itertools.pairwise(runs))


@pytest.mark.parametrize(
    ("text", "stripped"),
    [
        ("a (b:1.2) [c] \\(d\\)", "a b c (d)"),
        ("x BREAK y", "xy"),
        ("(a:1.2.3)", "a:1.2.3"),
        ("a) :1.2)", "a) :1.2)"),
        ("a \\ BREAK", "a "),
    ],
)
def test_strip_markup_itself(text: str, stripped: str) -> None:
    assert strip_markup(text) == stripped


# --- bounds ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        "1girl, (smile:1.2), [blush], ((long hair))",
        "(1girl:0), (solo:3)",
        "(1girl:3.0)",
        "((x:2))",  # 2.2 after nesting
        "a BREAK b",
        "(a BREAK b:2)",  # a marker inside brackets is not a weight
        "(:5)",  # no text to weight
        "(a:1.2.3)",  # literal text, 1.1
        "",
    ],
)
def test_weights_within_bounds_pass(text: str) -> None:
    check_weights(text)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("(1girl:" + "9" * 400 + ")", "weights '1girl' by a number too large to use"),
        ("(1girl:1" + "0" * 309 + ")", "weights '1girl' by a number too large to use"),
        ("(1girl:1" + "0" * 308 + ")", "weights '1girl' by 1e+308"),
        ("(1girl:70000)", "weights '1girl' by 7e+04 (after nesting)"),
        ("(1girl:3.01)", "weights '1girl' by 3.01"),
        ("((((((((((((x))))))))))))", "weights 'x' by 3.138"),  # 1.1 ** 12
        ("((x:2.8))", "weights 'x' by 3.08"),
        ("(x:-0.5)", "weights 'x' by -0.5"),
        ("(" + "a" * 60 + ":9)", "weights '" + "a" * 39 + "…' by 9"),
    ],
)
def test_weights_out_of_bounds_are_refused_naming_text_and_weight(text: str, message: str) -> None:
    with pytest.raises(WeightOutOfRange) as info:
        check_weights(text, "prompt")
    assert message in str(info.value)
    assert str(info.value).startswith("the prompt weights")
    assert "weights must be between 0 and 3" in str(info.value)
    assert isinstance(info.value, PromptError)


def test_the_bounds_are_documented_numbers() -> None:
    assert (MIN_WEIGHT, MAX_WEIGHT) == (0.0, 3.0)
    with pytest.raises(WeightOutOfRange, match="the negative prompt weights"):
        check_weights("(bad:4)", "negative prompt")
