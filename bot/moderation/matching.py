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
from collections.abc import Iterable, Mapping
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
    f"(?<!\\d)(?P<number>{_NUMBER_PATTERN})(?:years?old|yrs?old|yo|sai|anos|ans|anni|jahre|let)"
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
    _runs: dict[int, tuple[LetterRuns, ...]] = field(default_factory=dict, compare=False)

    def letter_runs(self, read: PieceReader) -> tuple[LetterRuns, ...]:
        """The tokenizer's view of each tag (computed once per reader)."""
        key = id(read)
        runs = self._runs.get(key)
        if runs is None:
            runs = tuple(letter_runs(segment, read) for segment in self.segments)
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
    ages = tuple(_kanji_number(m.group(1)) for m in _CJK_AGE.finditer(normalized))
    return ScannedPrompt(
        sequences=tuple(seq for seq in sequences if seq),
        plain=tuple(seq for seq in plain if seq),
        segments=tuple(segments),
        cjk_ages=ages,
        plain_segments=tuple(plain_segments),
        words=frozenset(word for seq in sequences for word in seq),
    )


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
                self._glued.append((letters, number, frozenset(joints)))
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

    def find(
        self, prompt: str | ScannedPrompt, *, tokenizer: object | None = None
    ) -> tuple[str, ...]:
        """The terms found in ``prompt``, in list order.

        Words are matched as the module docstring says; letters are also read the way the
        model reads them, as CLIP pieces (``tokenizer``: any CLIP tokenizer, by default the
        shipped one), so ``1girlnude`` holds ``nude`` while ``cocktail`` holds no ``cock``.
        """
        scanned = scan(prompt) if isinstance(prompt, str) else prompt
        found: set[int] = set()
        inside: set[int] = set()  # terms seen as part of a longer tag
        for seq in scanned.sequences:
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
            for runs in scanned.letter_runs(read):
                letters = runs.letters
                for key, number, inner in self._glued:
                    at = letters.find(key)
                    while at >= 0:
                        if not self._glued_excepted(number, letters, at, len(key)) and _glued_match(
                            runs, key, at, inner
                        ):
                            found.add(number)
                            if len(key) != len(letters):
                                inside.add(number)
                        at = letters.find(key, at + 1)
        for number, context in self._contexts.items():
            if number in found and number not in inside and context & scanned.words:
                found.discard(number)
        return tuple(self._terms[number] for number in sorted(found))


def _number(word: str) -> int | None:
    if word.isdigit() and len(word) <= 3:
        return int(word)
    number = _NUMBER_WORDS.get(word)
    return _MORE_NUMBER_WORDS.get(word) if number is None else number


def minor_age_terms(prompt: str | ScannedPrompt) -> tuple[str, ...]:
    """Stated ages under 18 in ``prompt``, as ``"12 years old"`` (sorted, no duplicates).

    Read in the bot's languages: ``12 years old``, ``12yo``, ``aged 12``, ``10 sai``,
    ``10歳``, ``十歳``, ``10살``, ``10 años``, ``10 Jahre``, ``10 лет``, ``dix ans``...
    """
    scanned = scan(prompt) if isinstance(prompt, str) else prompt
    ages: set[int] = set(scanned.cjk_ages)
    for seq in scanned.plain:
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
    ages.update(_glued_ages(scanned.plain_segments))
    return tuple(f"{age} years old" for age in sorted(ages) if age < ADULT_AGE)


def _glued_ages(segments: Iterable[str]) -> set[int]:
    """Ages spelled across punctuation and spaces (``10ye arsold``, ``10a.ns``, ``ag-ed9``):
    each tag's letters and digits run together, a number and an age unit that ends where a
    word of the tag ends."""
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
                continue
            number = match.group("number") or match.group("aged")
            value = _number(number) if number else None
            if value is not None:
                ages.add(value)
    return ages
