"""Prompt matching that sees through the usual evasions, without flagging innocent tags.

A prompt is reduced to word sequences, one per tag (a tag is the text between commas), and
a term matches when its words appear as a contiguous run of whole words in one of them.
``sex`` therefore matches ``sex``, ``group sex`` and ``(sex:1.3)`` but never ``sextant``,
``Sussex`` or ``1girl``. Before that, the text goes through these steps:

1. characters: compatibility forms folded (NFKD then NFKC: fullwidth ``ｎｓｆｗ``, circled or
   mathematical letters), accents, zero-width and other format characters (Unicode
   category Cf) removed, common Cyrillic, Greek and small-capital look-alikes mapped to
   Latin letters (``nѕfw`` with a Cyrillic ``ѕ``), case folded;
2. A1111 markup: explicit weights (``:1.4)``) dropped, brackets read two ways (as word
   breaks, and as nothing, so that ``n(s)fw`` is caught too), escapes removed the way A1111
   reads them (``\\(`` is a literal paren, a backslash before anything else vanishes);
3. words: underscores, punctuation and spaces all separate words (``n_s_f_w``, ``n.s.f.w``);
4. extra views of each tag: runs of single letters joined (``N S F W``, ``s e x``), and
   leetspeak decoded (``0``->o, ``1``->i or l, ``3``->e, ``4``->a, ``5``->s, ``7``->t,
   ``@``->a, ``$``->s, ``!``->i) in words that hold a letter. Each view is only an extra
   chance to match a listed term: ``1girl`` reads ``igirl`` in the leet view, which matches
   nothing, so digits in innocent tags are safe.

A term matches its plural too (``nude`` matches ``nudes``; ``panty`` would match
``panties``), and a multi-word term matches its words run together (``butt plug`` matches
``buttplug``). Terms in CJK scripts match inside words, since those scripts do not put
spaces between words. Exceptions name innocent tags that contain a term (``gothic lolita``):
a match that lies inside one of them does not count.

Stated ages under 18 (``12 years old``, ``12-year-old``, ``12yo``, ``aged 12``,
``twelve years old``) are found by :func:`minor_age_terms`.
"""

from __future__ import annotations

import functools
import itertools
import re
import unicodedata
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Final

from bot.moderation.sources import confusable_letters, dictionary_words, romanize
from bot.moderation.tokens import LetterRuns, PieceReader, letter_runs, piece_reader

__all__ = [
    "ScannedPrompt",
    "TermSet",
    "harmless_words",
    "minor_age_terms",
    "normalize_text",
    "scan",
    "tag_key",
]

_HOMOGLYPHS: Final[Mapping[str, str]] = {
    # Cyrillic capitals and small letters that look like Latin ones
    **dict(zip("АВЕКМНОРСТУХЅІЈԀҮԚԜҺ", "ABEKMHOPCTYXSIJDYQWH", strict=True)),
    **dict(zip("авекмнорстухѕіјԁүһԛԝӏ", "abekmhopctyxsijdyhqwl", strict=True)),
    # Greek capitals and small letters
    **dict(zip("ΑΒΕΖΗΙΚΜΝΟΡΤΥΧ", "ABEZHIKMNOPTYX", strict=True)),
    **dict(zip("αεικνορτυχω", "aeikvoptuxw", strict=True)),
    # Latin look-alikes: dotless i, script g, small capitals
    **dict(zip("ıȷɑɡɩ", "ijagi", strict=True)),
    **dict(zip("ᴀʙᴄᴅᴇғɢʜɪᴊᴋʟᴍɴᴏᴘʀꜱᴛᴜᴠᴡʏᴢ", "abcdefghijklmnoprstuvwyz", strict=True)),
}
_HOMOGLYPH_TABLE: Final = str.maketrans({**confusable_letters(), **_HOMOGLYPHS})
_KANA_VOICING: Final = frozenset("\u3099\u309a")  # dakuten, handakuten: keep them

_LEET_MARKS: Final = "@$!"
_LEET_I: Final = str.maketrans("013457@$!", "oieastasi")
_LEET_L: Final = str.maketrans("013457@$!", "oleastasi")
_LEET_SPLIT: Final = re.compile(r"[@$!]+")
_LEET_MARKS_ONLY: Final = str.maketrans("@$!", "asi")

# ":1.4" before a closing bracket (or the end): an A1111 weight, not text.
_WEIGHT: Final = re.compile(r":\s*[+-]?(?:\d+(?:\.\d*)?|\.\d+)\s*(?=[)\]]|$)")
_SEGMENT_BREAK: Final = re.compile(r"[,、;\n\r|]+")
_ESCAPABLE: Final = frozenset("()[]\\")

_NUMBER_WORDS: Final[Mapping[str, int]] = {
    word: value
    for value, word in enumerate(
        [
            "zero",
            "one",
            "two",
            "three",
            "four",
            "five",
            "six",
            "seven",
            "eight",
            "nine",
            "ten",
            "eleven",
            "twelve",
            "thirteen",
            "fourteen",
            "fifteen",
            "sixteen",
            "seventeen",
        ]
    )
}
_MORE_NUMBER_WORDS: Final[Mapping[str, int]] = {
    word: value
    for words in (
        # Spanish, Portuguese, French, German, Italian and Russian (as transliterated), 1-17
        "uno dos tres cuatro cinco seis siete ocho nueve diez once doce trece catorce quince "
        "dieciseis diecisiete",
        "um dois tres quatro cinco seis sete oito nove dez onze doze treze catorze quinze "
        "dezesseis dezessete",
        "un deux trois quatre cinq six sept huit neuf dix onze douze treize quatorze quinze "
        "seize dixsept",
        "eins zwei drei vier funf sechs sieben acht neun zehn elf zwolf dreizehn vierzehn "
        "funfzehn sechzehn siebzehn",
        "uno due tre quattro cinque sei sette otto nove dieci undici dodici tredici "
        "quattordici quindici sedici diciassette",
        "odin dva tri chetyre pyat shest sem vosem devyat desyat odinnadtsat dvenadtsat "
        "trinadtsat chetyrnadtsat pyatnadtsat shestnadtsat semnadtsat",
    )
    for value, word in enumerate(words.split(), start=1)
}
_AGE_WORD: Final = re.compile(r"(\d{1,2})(?:yo|yr|yrs|yearold|yearsold)")
_AGE_GLUED: Final = frozenset({"yo", "yr", "yrs", "yearold", "yearsold"})
_NUMBER_PATTERN: Final = "|".join(
    ["\\d{1,2}", *sorted({*_NUMBER_WORDS, *_MORE_NUMBER_WORDS}, key=len, reverse=True)]
)
_GLUED_AGE: Final = re.compile(
    f"(?<!\\d)(?P<number>{_NUMBER_PATTERN})(?:years?old|yrs?old|jahre|anos|anni|ans|sai|yo|let)"
    f"|aged?(?P<aged>\\d{{1,2}})"
)
_SPELLED_AGE: Final = re.compile(
    "(" + "|".join(sorted(_NUMBER_WORDS, key=len, reverse=True)) + ")(?:yearsold|yearold|yo)"
)
_YEAR_WORDS: Final = frozenset({"year", "years", "yr", "yrs"})
# Units that state an age by themselves after a number, in the bot's languages (as
# transliterated: 歳/岁 read "sui", 才 "cai", 살 "sal", 세 "se", лет "let", года "goda").
_AGE_UNITS: Final = frozenset(
    {
        "sai",
        "sui",
        "cai",
        "sal",
        "se",
        "anos",
        "ano",
        "ans",
        "anni",
        "jahre",
        "jahrig",
        "jaehrig",
        "let",
        "goda",
    }
)
_KANJI_DIGITS: Final = {c: i for i, c in enumerate("〇一二三四五六七八九")}
_CJK_AGE: Final = re.compile(r"([0-9]{1,3}|[〇一二三四五六七八九十]{1,3})\s*(?:歳|才|岁|살|세)")
ADULT_AGE: Final = 18


def normalize_text(text: str) -> str:
    """Step 1 of the module docstring: fold look-alikes, marks, format characters, case."""
    decomposed = unicodedata.normalize("NFKD", text)
    kept = "".join(
        ch
        for ch in decomposed
        if ch in _KANA_VOICING or unicodedata.category(ch) not in ("Mn", "Me", "Cf")
    )
    folded = kept.translate(_HOMOGLYPH_TABLE).casefold().translate(_HOMOGLYPH_TABLE)
    return unicodedata.normalize("NFKC", folded)


def _demarkup(text: str, *, glue: bool) -> str:
    """Step 2: weights dropped, escapes read as A1111 does, brackets as breaks or nothing."""
    text = _WEIGHT.sub("", text)
    out: list[str] = []
    i = 0
    while i < len(text):
        ch = text[i]
        if ch == "\\":
            following = text[i + 1 : i + 2]
            if following and following in _ESCAPABLE:
                out.append(" ")  # a literal bracket or backslash: punctuation
                i += 2
            else:
                i += 1  # a backslash before anything else vanishes
            continue
        out.append(("" if glue else " ") if ch in "()[]" else ch)
        i += 1
    return "".join(out)


def _words(segment: str) -> list[str]:
    """Step 3: words of letters and digits (and leet marks, sorted out per view)."""
    chars = [ch if ch.isalnum() or ch in _LEET_MARKS else " " for ch in segment]
    return "".join(chars).split()


def _collapse(words: list[str], *, digits: bool) -> list[str]:
    """Join runs of two or more one-character words (``n s f w`` -> ``nsfw``); with
    ``digits`` false a one-digit word ends a run (``n s f w 1 3`` -> ``nsfw 13``)."""
    out: list[str] = []
    run: list[str] = []
    for word in [*words, ""]:
        if len(word) == 1 and run and (digits or word.isdigit() == run[-1].isdigit()):
            run.append(word)
            continue
        if len(run) >= 2:
            out.append("".join(run))
        else:
            out.extend(run)
        run = [word] if len(word) == 1 else []
        if len(word) > 1:
            out.append(word)
    return out


def _literal(words: list[str]) -> tuple[str, ...]:
    return tuple(part for word in words for part in _LEET_SPLIT.split(word) if part)


def _leet(words: list[str], table: Mapping[int, int]) -> tuple[str, ...]:
    out: list[str] = []
    for word in words:
        if any(ch.isalpha() or ch in _LEET_MARKS for ch in word):
            out.append(word.translate(table))
        else:
            out.extend(part for part in _LEET_SPLIT.split(word) if part)
    return tuple(out)


_LETTERS_DIGITS: Final = re.compile(r"\d+|[^\d]+")
_BREAK: Final = re.compile(r"\bBREAK\b")


def _split_digits(words: tuple[str, ...]) -> tuple[str, ...]:
    """Letters and digits apart, as CLIP's tokenizer splits them: ``loli1`` -> ``loli 1``."""
    return tuple(part for word in words for part in _LETTERS_DIGITS.findall(word))


_INTERIOR_DIGIT: Final = re.compile(r"[^\W\d_][0-9]+[^\W\d_]")


def _evident_leet(word: str) -> bool:
    """A word written in leetspeak on purpose: a leet mark (``$h0ta``) or digits between
    letters (``l0li``). Digits only before or after letters are a count glued to a tag
    (``2girls``, ``pantyshot4``), not letters."""
    return any(ch in _LEET_MARKS for ch in word) or bool(_INTERIOR_DIGIT.search(word))


def _careful_leet(words: list[str], table: Mapping[int, int]) -> tuple[str, ...]:
    """Leetspeak decoded only in words that are evidently leet; elsewhere digits split off."""
    out: list[str] = []
    evident = any(_evident_leet(word) for word in words)  # the tag is written in leet
    for word in words:
        if evident and any(ch.isalpha() or ch in _LEET_MARKS for ch in word):
            out.append(word.translate(table))
        else:
            out.extend(_split_digits(tuple(p for p in _LEET_SPLIT.split(word) if p)))
    return tuple(out)


# Whitespace and underscores (Danbooru's spaces) part the words of the strict view; any
# other punctuation inside a word is read as nothing (``pen-is``, ``f.e.l.l.a.t.i.o``).
_STRICT_GAP: Final = re.compile(r"[\s_]+")
_NOT_KEPT: Final = re.compile(r"[^\w@$!]|_")
_UNDECODED_DIGIT: Final = re.compile(r"[0-9]")
_NUMBER_LOOKALIKE: Final = re.compile(r"[0-9oli]{2}")
_LETTER_DIGITS: Final = str.maketrans("oli", "011")
_LONE_DIGIT: Final = re.compile(r"(?<=[a-z])[0-9](?=[a-z])")
_TRAILING_ZERO: Final = re.compile(r"(?<=[0-9][a-z])0(?![0-9])|(?<=[0-9][a-z]{2})0(?![0-9])")
# An age glued to the words around it (``11yonsfw``, ``redeyes11yosexo``), for
# :func:`_apart_ages`.
_AGE_IN_WORD: Final = re.compile(
    r"(?<![0-9])([0-9]{1,2}(?:years?old|yrs?old|jahre|anos|anni|ans|sai|\$41|yo|y0))"
    r"(?=([a-z]+))"
)


def _apart_ages(chunk: str) -> str:
    """``chunk`` with an age glued to the words after it set apart when those are words or
    terms (``10anoscum`` -> ``10anos cum``), so that they are read as words of their own."""

    def apart(match: re.Match[str]) -> str:
        return f" {match.group(1)} " if _segmentable(match.group(2)) else match.group(1)

    return _AGE_IN_WORD.sub(apart, chunk)


def _strict_views(segment: str) -> list[str]:
    """The strict view of one tag (see :meth:`TermSet.find`): its words with punctuation
    inside them removed, and digits either dropped (``cumonbody0`` -> ``cumonbody``,
    ``tet1as`` -> ``tetas``) or, in evidently leet words and in numbers of two digits or
    more, decoded (``nu3night`` -> ``nuenight``, ``73773`` -> ``tette``)."""
    chunks = [_NOT_KEPT.sub("", chunk) for chunk in _STRICT_GAP.split(segment)]
    chunks = [part for chunk in chunks for part in _apart_ages(chunk).split()]
    dropped = " ".join(_UNDECODED_DIGIT.sub("", _LEET_SPLIT.sub("", c)) for c in chunks)
    views = [dropped]
    evident = any(_evident_leet(c) for c in chunks)  # the tag is written in leet: m3n0r d3
    for table in (_LEET_I, _LEET_L):
        decoded = [
            _UNDECODED_DIGIT.sub("", c.translate(table))
            if (evident and not c.isdigit()) or (c.isdigit() and len(c) >= 2)
            else _UNDECODED_DIGIT.sub("", _LEET_SPLIT.sub("", c))
            for c in chunks
        ]
        views.append(" ".join(decoded))
    return views


def _strict_age_views(segment: str) -> list[str]:
    """Views of one tag for reading ages strictly: punctuation inside words removed, a
    word's leading number kept and the rest decoded (``11y0`` -> ``11yo``, ``$41`` ->
    ``sai``) or stripped of digits (``nineyear1sold`` -> ``nineyearsold``)."""
    chunks = [_NOT_KEPT.sub("", chunk) for chunk in _STRICT_GAP.split(segment)]
    # porn8yosweat; a zero after letters and no other digit is a letter: ponytail11y0
    views = [
        " ".join(_TRAILING_ZERO.sub("o", chunk.translate(_LEET_MARKS_ONLY)) for chunk in chunks)
    ]
    for table in (_LEET_I, None):
        out: list[str] = []
        for written in chunks:
            chunk = written
            if _NUMBER_LOOKALIKE.fullmatch(chunk) and any(c.isdigit() for c in chunk):
                chunk = chunk.translate(_LETTER_DIGITS)  # 1o -> 10
            lead = re.match(r"[0-9]*", chunk)
            number = lead.group(0) if lead else ""
            if len(number) > 2 and table is not None and number[2] in "01345":
                number = number[:2]  # no age: leetspeak after one (``104nn1`` is 10 anni)
            elif number == "0" and table is not None:
                number = ""  # no age either: 0ld
            rest = chunk[len(number) :]
            if table is not None:
                rest = _UNDECODED_DIGIT.sub("", rest.translate(table))
            else:  # a lone digit between letters is a mark: nineyear1sold
                rest = _LONE_DIGIT.sub("", _LEET_SPLIT.sub("", rest))
            out.append(number + rest)
        views.append(" ".join(part for part in out if part))
    return views


def _kanji_number(text: str) -> int:
    if text.isdigit():
        return int(text)
    tens, _, ones = text.partition("十")
    if "十" not in text:
        return int("".join(str(_KANJI_DIGITS[c]) for c in text))
    return (_KANJI_DIGITS.get(tens, 1) if tens else 1) * 10 + (
        _KANJI_DIGITS.get(ones, 0) if ones else 0
    )


@dataclass(frozen=True, slots=True)
class ScannedPrompt:
    """Every view of every tag of a prompt, as word tuples (see the module docstring)."""

    sequences: tuple[tuple[str, ...], ...]
    plain: tuple[tuple[str, ...], ...]  # the views without leetspeak (digits kept)
    segments: tuple[str, ...] = ()  # each tag, normalised, for the tokenizer's view
    cjk_ages: tuple[int, ...] = ()  # ages stated as 10歳, 十歳, 10살
    plain_segments: tuple[str, ...] = ()  # the segments without leetspeak
    words: frozenset[str] = field(default_factory=frozenset)  # every word of every view
    # leetspeak decoded only in evidently leet words (``l0li``, not ``pantyshot4``)
    careful_sequences: tuple[tuple[str, ...], ...] = ()
    careful_segments: tuple[str, ...] = ()
    strict_segments: tuple[str, ...] = ()  # the strict view of each tag (TermSet.find)
    strict_age_segments: tuple[str, ...] = ()  # the strict views for stated ages
    tags: tuple[str, ...] = ()  # the tags as written (between commas, BREAK removed)
    _runs: dict[tuple[int, str], tuple[LetterRuns, ...]] = field(
        default_factory=dict, compare=False
    )

    def letter_runs(self, read: PieceReader, view: str = "segments") -> tuple[LetterRuns, ...]:
        """The tokenizer's view of each tag (computed once per reader); ``view`` names the
        field of segments read (``segments``, ``careful_segments``, ``strict_segments``)."""
        key = (id(read), view)
        runs = self._runs.get(key)
        if runs is None:
            runs = tuple(letter_runs(segment, read) for segment in getattr(self, view))
            self._runs[key] = runs
        return runs


def scan(text: str) -> ScannedPrompt:
    """Reduce ``text`` to the word sequences that terms are matched against."""
    text = _BREAK.sub(" ", text)  # A1111's chunk break: not a word the model reads
    normalized = normalize_text(text)
    sequences: dict[tuple[str, ...], None] = {}
    plain: dict[tuple[str, ...], None] = {}
    segments: dict[str, None] = {}
    plain_segments: dict[str, None] = {}
    careful: dict[tuple[str, ...], None] = {}
    careful_segments: dict[str, None] = {}
    strict: dict[str, None] = {}
    strict_ages: dict[str, None] = {}
    romanized = romanize(unicodedata.normalize("NFKC", text).casefold())
    sources = [normalized] if romanized is None else [normalized, normalize_text(romanized)]
    for source in sources:
        for glue in (False, True):
            for segment in _SEGMENT_BREAK.split(_demarkup(source, glue=glue)):
                words = _words(segment)
                if not words:
                    continue
                segments[segment] = None
                plain_segments[segment] = None
                for table in (_LEET_I, _LEET_L):  # leetspeak glued to tags: v1br470rnight
                    segments[" ".join(_leet(words, table))] = None
                    careful_segments[" ".join(_careful_leet(words, table))] = None
                careful_segments[segment] = None
                strict.update(dict.fromkeys(_strict_views(segment)))
                strict_ages.update(dict.fromkeys(_strict_age_views(segment)))
                for view in (
                    words,
                    _collapse(words, digits=True),
                    _collapse(words, digits=False),
                ):
                    literal = _literal(view)
                    split = _split_digits(literal)
                    plain[literal] = None
                    plain[split] = None
                    sequences[literal] = None
                    sequences[split] = None
                    sequences[_leet(view, _LEET_I)] = None
                    sequences[_leet(view, _LEET_L)] = None
                    careful[literal] = None
                    careful[split] = None
                    careful[_careful_leet(view, _LEET_I)] = None
                    careful[_careful_leet(view, _LEET_L)] = None
    ages = tuple(_kanji_number(m.group(1)) for m in _CJK_AGE.finditer(normalized))
    return ScannedPrompt(
        sequences=tuple(seq for seq in sequences if seq),
        plain=tuple(seq for seq in plain if seq),
        segments=tuple(segments),
        cjk_ages=ages,
        plain_segments=tuple(plain_segments),
        words=frozenset(word for seq in sequences for word in seq),
        careful_sequences=tuple(seq for seq in careful if seq),
        careful_segments=tuple(careful_segments),
        strict_segments=tuple(segment for segment in strict if segment),
        strict_age_segments=tuple(segment for segment in strict_ages if segment),
        tags=tuple(tag for tag in _SEGMENT_BREAK.split(text) if tag.strip()),
    )


@functools.lru_cache(maxsize=1 << 16)
def tag_key(tag: str) -> str:
    """A tag's comparable form: ``(Long_Hair:1.2)`` and ``long hair`` give ``long hair``."""
    normalized = normalize_text(tag)
    return " ".join(_literal(_words(_demarkup(normalized, glue=False))))


def _is_cjk(text: str) -> bool:
    return any(ord(ch) >= 0x2E80 for ch in text)


def _plurals(words: tuple[str, ...]) -> list[tuple[str, ...]]:
    *head, last = words
    forms = [last, f"{last}s", f"{last}es"]
    if last.endswith("y") and len(last) > 2:
        forms.append(f"{last[:-1]}ies")
    return [(*head, form) for form in forms]


def _contains(seq: tuple[str, ...], part: tuple[str, ...]) -> list[int]:
    n = len(part)
    return [i for i in range(len(seq) - n + 1) if seq[i : i + n] == part]


_KNOWN_TERMS: set[str] = set()  # the letters of every compiled term (for glued runs)
_STOPWORDS: Final = frozenset(
    {
        "a",
        "an",
        "the",
        "of",
        "in",
        "on",
        "at",
        "to",
        "by",
        "is",
        "as",
        "it",
        "be",
        "or",
        "and",
        "i",
        "no",
        "my",
        "de",
        "la",
        "le",
        "el",
        "en",
        "un",
        "al",
    }
)
_SHORT_TERM: Final = 3


@functools.cache
def harmless_words() -> frozenset[str]:
    """Dictionary words and :data:`~bot.moderation.lists.HARMLESS_WORDS`: a glued run of
    letters that is one of them is read as that word (``cocktail``, ``middlesex``)."""
    from bot.moderation.lists import HARMLESS_WORDS

    return dictionary_words() | {tag_key(word).replace(" ", "") for word in HARMLESS_WORDS}


@functools.lru_cache(maxsize=8192)
def _segmentable(text: str, *, terms_only: bool = False) -> bool:
    """``text`` is a run of words: dictionary words and terms of 3 letters or more, and
    short words such as ``on`` (only terms with ``terms_only``)."""
    if not text:
        return True
    words: frozenset[str] = frozenset() if terms_only else harmless_words()
    for end in range(len(text), 1, -1):
        head = text[:end]
        if end > 2:
            known = head in words or head in _KNOWN_TERMS
        else:
            known = not terms_only and head in _STOPWORDS
        if known and _segmentable(text[end:], terms_only=terms_only):
            return True
    return False


def _real_word(part: str) -> bool:
    return part in _STOPWORDS or (len(part) >= _SHORT_TERM and part in harmless_words())


def _without(text: str, innocent: tuple[str, ...]) -> str:
    for phrase in innocent:
        text = text.replace(phrase, "\0")
    return text


def _glued_match(runs: LetterRuns, key: str, start: int, inner: frozenset[int]) -> bool:
    """Whether the model reads ``key`` at ``start`` in a tag's letters (module docstring of
    :mod:`bot.moderation.tokens`). ``inner`` holds the offsets, inside ``key``, where its
    own words meet (``little|girl``).

    * inside one word: the word is no dictionary word, and the term lies on piece
      boundaries or between other words or terms (``1girlnude``, ``lolinude``); a term of
      three letters needs both, or terms around it;
    * across words: the words inside are not all real words (``nu de``, ``uncen.sored``,
      not ``pen is``), or they are the term's own words; letters glued on either side are
      other words (``outdoorswithout clothes``).
    """
    end = start + len(key)
    letters = runs.letters
    word_start = max((b for b in runs.word_ends if b <= start), default=0)
    word_end = min((b for b in runs.word_ends if b >= end), default=len(letters))
    words_inside = sorted(b for b in runs.word_ends if start < b < end)
    prefix, suffix = letters[word_start:start], letters[end:word_end]
    if not words_inside:
        word = letters[word_start:word_end]
        if (word_start, word_end) == (start, end):
            return True
        harmless = harmless_words()
        if word in harmless or (word.endswith("s") and word[:-1] in harmless):
            return False
        if _covered(word, start - word_start, end - word_start):  # cocktaildress
            return False
        aligned = runs.aligned(start, end)
        if len(key) <= _SHORT_TERM:
            terms_around = _segmentable(prefix, terms_only=True) and _segmentable(
                suffix, terms_only=True
            )
            return terms_around or (aligned and _segmentable(prefix) and _segmentable(suffix))
        return aligned or (_segmentable(prefix) and _segmentable(suffix))
    if not (_segmentable(prefix) and _segmentable(suffix)):
        return False
    own_words = {start + offset for offset in inner}
    if set(words_inside) <= own_words:
        return True
    bounds = [start, *words_inside, end]
    parts = [letters[a:b] for a, b in itertools.pairwise(bounds)]
    return not all(_real_word(part) for part in parts)


def _covered(word: str, start: int, end: int) -> bool:
    """Whether a longer dictionary or harmless word of ``word`` holds ``word[start:end]``
    in a reading of ``word`` as words and terms (``cock`` in ``cocktail|dress``, not
    ``sex`` in ``redey|essex``); a term's own plural, or a word that is itself a term, does
    not count."""
    key = word[start:end]
    harmless = harmless_words()
    for a in range(start, -1, -1):
        for b in range(end, len(word) + 1):
            if (a, b) == (start, end) or b - a < _SHORT_TERM + 1:
                continue
            candidate = word[a:b]
            if (
                candidate in harmless
                and candidate not in _KNOWN_TERMS
                and candidate not in (f"{key}s", f"{key}es")
                and _segmentable(word[:a])
                and _segmentable(word[b:])
            ):
                return True
    return False


def _strict_match(runs: LetterRuns, key: str, start: int, *, one_side: bool = False) -> bool:
    """The strict reading of :meth:`TermSet.find`: ``key`` read at ``start`` of a tag's
    strict view whatever the word breaks inside it (``pen is``, ``tet as``), unless a
    longer harmless word holds it; on each side the term starts or ends a word, or the
    letters beside it are words or terms (``cumonbody``), or, for terms of four letters or
    more, a CLIP piece starts or ends there."""
    end = start + len(key)
    letters = runs.letters
    word_start = max((b for b in runs.word_ends if b <= start), default=0)
    word_end = min((b for b in runs.word_ends if b >= end), default=len(letters))
    if (word_start, word_end) == (start, end):
        return True
    if _covered(letters[word_start:word_end], start - word_start, end - word_start):
        return False
    long_term = len(key) > _SHORT_TERM
    left = (
        start == word_start
        or (long_term and start in runs.bounds)
        or _segmentable(letters[word_start:start])
        or _segmentable(letters[:start])
    )
    right = (
        end == word_end
        or (long_term and end in runs.bounds)
        or _segmentable(letters[end:word_end])
        or _segmentable(letters[end:])
    )
    if one_side and long_term:  # a term that is never innocent: one edge is enough
        return left or right
    return left and right


class TermSet:
    """A list of terms, compiled once, matched against prompts (see the module docstring)."""

    def __init__(
        self,
        terms: Iterable[str],
        exceptions: Mapping[str, Iterable[str]] | None = None,
        contexts: Mapping[str, Iterable[str]] | None = None,
    ) -> None:
        exceptions = exceptions or {}
        excepted_by_key = {tag_key(term): tuple(found) for term, found in exceptions.items()}
        contexts_by_key = {tag_key(term): tuple(found) for term, found in (contexts or {}).items()}
        self._terms: list[str] = []
        self._keys: set[str] = set()
        self._index: dict[str, list[tuple[tuple[str, ...], int]]] = {}
        self._substrings: list[tuple[str, int]] = []
        self._substring_exceptions: dict[int, tuple[str, ...]] = {}
        self._exceptions: dict[int, list[tuple[str, ...]]] = {}
        # (letters of an ASCII term, number, offsets where its words meet)
        self._glued: list[tuple[str, int, frozenset[int]]] = []
        # the same, by their first letters: found by walking a prompt's letters once
        self._glued_index: dict[str, list[tuple[str, int, frozenset[int]]]] = {}
        self._glued_exceptions: dict[int, tuple[str, ...]] = {}
        self._contexts: dict[int, frozenset[str]] = {}
        for term in terms:
            key = tag_key(term)
            if not key or key in self._keys:
                continue
            self._keys.add(key)
            number = len(self._terms)
            self._terms.append(term.strip())
            if _is_cjk(key):
                self._substrings.append((key.replace(" ", ""), number))
                self._substring_exceptions[number] = tuple(
                    tag_key(text).replace(" ", "") for text in excepted_by_key.get(key, ())
                )
                continue
            words = tuple(key.split())
            # a multi-word term also matches written as one word ("buttplug", or spelled
            # out letter by letter: "a r e o l a s l i p" collapses to one word)
            forms = [words, ("".join(words),)] if len(words) > 1 else [words]
            for variant in (plural for form in forms for plural in _plurals(form)):
                self._index.setdefault(variant[0], []).append((variant, number))
            innocent = [tuple(tag_key(text).split()) for text in excepted_by_key.get(key, ())]
            if innocent:
                self._exceptions[number] = [
                    form for words in innocent if words for form in _plurals(words)
                ]
            letters = "".join(words)
            if letters.isascii() and letters.isalpha() and len(letters) >= _SHORT_TERM:
                joints = itertools.accumulate(len(w) for w in words[:-1])
                entry = (letters, number, frozenset(joints))
                self._glued.append(entry)
                self._glued_index.setdefault(letters[:_SHORT_TERM], []).append(entry)
                _KNOWN_TERMS.add(letters)
                self._glued_exceptions[number] = tuple(
                    "".join(words) for words in self._exceptions.get(number, ())
                )
            if key in contexts_by_key:
                self._contexts[number] = frozenset(
                    word for text in contexts_by_key[key] for word in tag_key(text).split()
                )

    @property
    def terms(self) -> tuple[str, ...]:
        """The terms as listed (first spelling of each; duplicates dropped)."""
        return tuple(self._terms)

    def __len__(self) -> int:
        return len(self._terms)

    def __contains__(self, term: object) -> bool:
        return isinstance(term, str) and tag_key(term) in self._keys

    def _excepted(self, number: int, seq: tuple[str, ...], start: int, length: int) -> bool:
        for innocent in self._exceptions.get(number, ()):
            for at in _contains(seq, innocent):
                if at <= start and start + length <= at + len(innocent):
                    return True
        return False

    def _glued_excepted(self, number: int, letters: str, start: int, length: int) -> bool:
        for innocent in self._glued_exceptions.get(number, ()):
            at = letters.find(innocent)
            while at >= 0:
                if at <= start and start + length <= at + len(innocent):
                    return True
                at = letters.find(innocent, at + 1)
        return False

    def _glued_hits(self, letters: str) -> Iterator[tuple[int, str, int, frozenset[int]]]:
        """Every place in ``letters`` where a glued term starts: (offset, letters of the
        term, its number, where its words meet), in the order of the offsets."""
        index = self._glued_index
        for at in range(len(letters) - _SHORT_TERM + 1):
            for key, number, inner in index.get(letters[at : at + _SHORT_TERM], ()):
                if letters.startswith(key, at):
                    yield at, key, number, inner

    def find(
        self,
        prompt: str | ScannedPrompt,
        *,
        tokenizer: object | None = None,
        careful: bool = False,
        strict: bool = False,
        one_side: bool = False,
    ) -> tuple[str, ...]:
        """The terms found in ``prompt``, in list order.

        Words are matched as the module docstring says; letters are also read the way the
        model reads them, as CLIP pieces (``tokenizer``: any CLIP tokenizer, by default the
        shipped one), so ``1girlnude`` holds ``nude`` while ``cocktail`` holds no ``cock``.

        ``careful`` decodes leetspeak only in evidently leet words (a leet mark, or digits
        between letters: ``l0li``), so a count glued to a tag is not read as a letter
        (``pantyshot4`` holds no ``shota``). ``strict`` adds the strict view, for when the
        prompt already carries the other signal of the hard block: each tag's words with the
        punctuation inside them removed and digits dropped or decoded, a term read across
        word breaks and beside any words or terms, unless a longer harmless word holds it
        (:func:`_strict_match`): ``pen-is``, ``nu3night``, ``cumonbody0``, ``73773``.
        ``one_side``, for terms that are never innocent, lets a term of four letters or more
        count in the strict view when only one of its edges is a word or piece edge
        (``hatsunemikupthc``).
        """
        scanned = scan(prompt) if isinstance(prompt, str) else prompt
        found: set[int] = set()
        inside: set[int] = set()  # terms seen as part of a longer tag
        sequences = scanned.careful_sequences if careful else scanned.sequences
        for seq in sequences:
            for start, word in enumerate(seq):
                for variant, number in self._index.get(word, ()):
                    length = len(variant)
                    if seq[start : start + length] == variant and not self._excepted(
                        number, seq, start, length
                    ):
                        found.add(number)
                        if length != len(seq):
                            inside.add(number)
            if self._substrings:
                joined = "".join(seq)
                for text, number in self._substrings:
                    if text in joined and text in _without(
                        joined, self._substring_exceptions.get(number, ())
                    ):
                        found.add(number)
        if self._glued and scanned.segments:
            read = piece_reader(tokenizer)
            view = "careful_segments" if careful else "segments"
            for runs in scanned.letter_runs(read, view):
                letters = runs.letters
                for at, key, number, inner in self._glued_hits(letters):
                    if not self._glued_excepted(number, letters, at, len(key)) and _glued_match(
                        runs, key, at, inner
                    ):
                        found.add(number)
                        if len(key) != len(letters):
                            inside.add(number)
            if strict:
                for runs in scanned.letter_runs(read, "strict_segments"):
                    letters = runs.letters
                    for at, key, number, _ in self._glued_hits(letters):
                        if not self._glued_excepted(
                            number, letters, at, len(key)
                        ) and _strict_match(runs, key, at, one_side=one_side):
                            found.add(number)
                            if len(key) != len(letters):
                                inside.add(number)
        for number, context in self._contexts.items():
            if number in found and number not in inside and context & scanned.words:
                found.discard(number)
        return tuple(self._terms[number] for number in sorted(found))


def _number(word: str) -> int | None:
    if word.isdigit() and len(word) <= 3:
        return int(word)
    number = _NUMBER_WORDS.get(word)
    return _MORE_NUMBER_WORDS.get(word) if number is None else number


def minor_age_terms(prompt: str | ScannedPrompt, *, strict: bool = False) -> tuple[str, ...]:
    """Stated ages under 18 in ``prompt``, as ``"12 years old"`` (sorted, no duplicates).

    Read in the bot's languages: ``12 years old``, ``12yo``, ``aged 12``, ``10 sai``,
    ``10歳``, ``十歳``, ``10살``, ``10 años``, ``10 Jahre``, ``10 лет``, ``dix ans``...

    ``strict`` (for a prompt that already asks for something sexual) also reads ages in
    leetspeak (``12 $41``, ``n1n3 y34r$ 0ld``, ``8y0``), with digits inside the unit read as
    nothing (``nineyear1sold``), and ages glued to the following words when those are words
    or terms (``10_years_oldcowboyshot``, ``11yonsfw``).
    """
    scanned = scan(prompt) if isinstance(prompt, str) else prompt
    ages: set[int] = set(scanned.cjk_ages)
    sequences: Iterable[tuple[str, ...]] = scanned.plain
    if strict:
        strict_words = (tuple(segment.split()) for segment in scanned.strict_age_segments)
        sequences = itertools.chain(scanned.plain, scanned.sequences, strict_words)
    ages.update(_sequence_ages(sequences))
    ages.update(_glued_ages(scanned.plain_segments))
    if strict:
        ages.update(_glued_ages(scanned.strict_age_segments, followed=True))
    return tuple(f"{age} years old" for age in sorted(ages) if age < ADULT_AGE)


def _sequence_ages(sequences: Iterable[tuple[str, ...]]) -> set[int]:
    ages: set[int] = set()
    for seq in sequences:
        for i, word in enumerate(seq):
            if match := _AGE_WORD.fullmatch(word):
                ages.add(int(match.group(1)))
            if match := _SPELLED_AGE.fullmatch(word):
                ages.add(_NUMBER_WORDS[match.group(1)])
            age = _number(word)
            after = seq[i + 1 : i + 3]
            if age is not None and (
                (len(after) == 2 and after[0] in _YEAR_WORDS and after[1] == "old")
                or after[:1] in (("yo",), ("yrs",))
                or (after[:1] and (after[0] in _AGE_UNITS or after[0] in _AGE_GLUED))
            ):
                ages.add(age)
            if word in ("age", "aged") and i + 1 < len(seq):
                stated = _number(seq[i + 1])
                if stated is not None:
                    ages.add(stated)
    return ages


def _glued_ages(segments: Iterable[str], *, followed: bool = False) -> set[int]:
    """Ages spelled across punctuation and spaces (``10ye arsold``, ``10a.ns``, ``ag-ed9``):
    each tag's letters and digits run together, a number and an age unit that ends where a
    word of the tag ends; with ``followed``, also where the rest of that word is words or
    terms (``10yearsoldcowboyshot``, ``10anoscum``)."""
    ages: set[int] = set()
    for segment in segments:
        joined: list[str] = []
        word_ends: set[int] = set()
        for word in re.findall(r"[a-z0-9]+", segment):
            joined.append(word)
            word_ends.add(sum(map(len, joined)))
        text = "".join(joined)
        for match in _GLUED_AGE.finditer(text):
            if match.end() not in word_ends:
                rest_end = min((end for end in word_ends if end > match.end()), default=0)
                rest = text[match.end() : rest_end]
                if not (followed and rest.isalpha() and _segmentable(rest)):
                    continue
                unit_start = match.start("aged") if match.group("aged") else match.end("number")
                unit = text[unit_start : match.end()]
                if _covered(unit + rest, 0, len(unit)):  # 3 letdown: no age unit
                    continue
            number = match.group("number") or match.group("aged")
            value = _number(number) if number else None
            if value is not None:
                ages.add(value)
    return ages
