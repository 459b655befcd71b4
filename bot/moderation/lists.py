"""The built-in term lists: blocked tags, rating tags and the hard-block vocabulary.

Terms are written the way people type them (Danbooru tags with spaces); matching normalises
both sides (see :mod:`bot.moderation.matching`), so case, underscores, punctuation and plural
``s`` need not be listed. A term matches a whole tag or a run of whole words inside a tag,
never part of a word: ``sex`` matches ``sex``, ``group sex`` and ``s e x``, but not
``sextant`` or ``Sussex``. Terms written in CJK scripts match inside words as well, since
those scripts do not put spaces between words.

* :data:`DEFAULT_BLOCKED_TAGS`: refused outside age-restricted channels on a fresh install;
  configurable (``moderation.blocked_tags`` and per-server additions and removals).
* :data:`RATING_TERMS`: Animagine's own NSFW rating tags; refused outside age-restricted
  channels whatever the blocked list says.
* :data:`SEXUAL_TERMS` and :data:`MINOR_TERMS`: a prompt that holds one of each is
  hard-blocked in every channel, and so is one holding any of :data:`CHILD_SEXUAL_TERMS`.
  These lists are fixed: no setting changes them.
  :data:`TERM_EXCEPTIONS` names innocent tags that contain a term (``gothic lolita`` is a
  fashion style); a match inside one of them does not count.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from types import MappingProxyType
from typing import Final

from bot.moderation.sources import sourced_sexual_terms

__all__ = [
    "BUILTIN_BLOCKED_TAGS",
    "CHILD_SEXUAL_TERMS",
    "DEFAULT_BLOCKED_TAGS",
    "HARMLESS_WORDS",
    "MINOR_TERMS",
    "MULTILINGUAL_SEXUAL_TERMS",
    "RATING_TERMS",
    "SEXUAL_TERMS",
    "SUGGESTIVE_TERMS",
    "TERM_CONTEXTS",
    "TERM_EXCEPTIONS",
]

RATING_TERMS: Final[tuple[str, ...]] = ("nsfw", "explicit")
"""The model card's NSFW rating tags (``nsfw`` is questionable, ``explicit, nsfw`` explicit)."""

BUILTIN_BLOCKED_TAGS: Final[tuple[str, ...]] = (
    # ratings and genres
    "nsfw",
    "explicit",
    "r18",
    "r 18",
    "r18g",
    "hentai",
    "porn",
    "pornography",
    "lewd",
    "erotic",
    "ecchi",
    # nudity
    "nude",
    "naked",
    "nudity",
    "topless",
    "bottomless",
    "no panties",
    "breasts out",
    "bare breasts",
    "exposed breasts",
    "nipple",
    "nipple slip",
    "areolae",
    "areola",
    "areola slip",
    "pubic hair",
    "cameltoe",
    "pantyshot",
    "upskirt",
    # genitals
    "pussy",
    "vagina",
    "vulva",
    "labia",
    "clitoris",
    "penis",
    "dick",
    "cock",
    "testicle",
    "erection",
    "futanari",
    # acts
    "sex",
    "sexual",
    "intercourse",
    "vaginal",
    "anal",
    "oral",
    "fellatio",
    "blowjob",
    "deepthroat",
    "irrumatio",
    "cunnilingus",
    "anilingus",
    "paizuri",
    "titjob",
    "handjob",
    "footjob",
    "masturbation",
    "fingering",
    "groping",
    "breast grab",
    "molestation",
    "missionary",
    "missionary position",
    "cowgirl position",
    "reverse cowgirl position",
    "doggystyle",
    "mating press",
    "orgasm",
    "ahegao",
    "after sex",
    "tentacle sex",
    "rape",
    "gangbang",
    "bukkake",
    "creampie",
    "cum",
    "cumdrip",
    "semen",
    "sperm",
    "ejaculation",
    "precum",
    # gear and censoring
    "sex toy",
    "dildo",
    "vibrator",
    "butt plug",
    "anal beads",
    "condom",
    "bdsm",
    "bondage",
    "shibari",
    "uncensored",
    "censored",
    "mosaic censoring",
    "bar censor",
    # Japanese
    "セックス",
    "全裸",
    "乳首",
    "ヌード",
    "性器",
    "中出し",
    "精液",
)
"""Common explicit and questionable Danbooru tags, written for the bot."""

MULTILINGUAL_SEXUAL_TERMS: Final[tuple[str, ...]] = (
    # English words and phrases outside the Danbooru tags above
    "no clothes",
    "without clothes",
    "wearing nothing",
    "unclothed",
    "undressed",
    "disrobed",
    "in the nude",
    "birthday suit",
    "skinny dipping",
    "stripped naked",
    "tits",
    "titty",
    "boobies",
    "genitalia",
    "x rated",
    "xrated",
    "adults only",
    "porno",
    "pornographic",
    "sexual intercourse",
    "having sex",
    # Japanese (kana, kanji) and its romaji
    "裸",
    "半裸",
    "裸体",
    "全裸",
    "えっち",
    "エロ",
    "エロい",
    "おっぱい",
    "ちんちん",
    "おちんちん",
    "性行為",
    "18禁",
    "成人向け",
    "hadaka",
    "zenra",
    "hanra",
    "ratai",
    "sekkusu",
    "etchi",
    "eroi",
    "oppai",
    "chikubi",
    "manko",
    "omanko",
    "chinko",
    "chinchin",
    "nakadashi",
    "seieki",
    "shasei",
    "onani",
    "ferachio",
    # Chinese
    "裸体",
    "裸照",
    "赤裸",
    "裸露",
    "脱光",
    "黄图",
    "露点",
    "无码",
    "成人内容",
    # Korean
    "누드",
    "알몸",
    "나체",
    "야한",
    "성인물",
    "젖꼭지",
    "음란",
    "가슴노출",
    # Spanish
    "desnuda",
    "desnudo",
    "desnudez",
    "sin ropa",
    "tetas",
    "pechos desnudos",
    "pezones",
    "pene",
    "coito",
    "masturbacion",
    "erotico",
    "erotica",
    "pornografia",
    "haciendo el amor",
    # Portuguese
    "nua",
    "pelada",
    "sem roupa",
    "peitos",
    "seios nus",
    "mamilos",
    "buceta",
    "transando",
    "erotica",
    # French
    "nue",
    "toute nue",
    "sans vetements",
    "seins nus",
    "tetons",
    "sexe",
    "penis",
    "vagin",
    "erotique",
    "baise",
    # German
    "nackte",
    "nackter",
    "nacktheit",
    "unbekleidet",
    "entkleidet",
    "ohne kleidung",
    "brueste",
    "bruste",
    "nackte brueste",
    "nackte bruste",
    "geschlechtsverkehr",
    "erotisch",
    # Russian
    "голая",
    "голые",
    "обнаженная",
    "обнажённая",
    "нагая",
    "голышом",
    "без одежды",
    "соски",
    "вагина",
    "пенис",
    "порно",
    "эротика",
    "трахать",
    # Italian
    "nuda",
    "nudo",
    "nudi",
    "senza vestiti",
    "seno nudo",
    "capezzoli",
    "sesso",
    "erotico",
)
"""Sexual words in the bot's ten languages that the LDNOOBW lists lack (``desnuda``,
``nackte``, ``裸体``), written for the bot."""

CHILD_SEXUAL_TERMS: Final[tuple[str, ...]] = (
    "lolicon",
    "shotacon",
    "toddlercon",
    "cunny",
    "jailbait",
    "pedo",
    "pedophile",
    "pedophilia",
    "paedophile",
    "paedophilia",
    "child porn",
    "pthc",
    "pedobear",
    "ロリコン",
    "ショタコン",
    "児童ポルノ",
    "児童性虐待",
    "幼児性愛者",
    "儿童色情",
    "萝莉控",
    "正太控",
    "아동포르노",
    "pornografia infantil",
    "pornographie infantile",
    "kinderporno",
    "kinderpornografie",
    "детское порно",
    "pedopornografia",
)
"""Terms that sexualise minors by themselves: hard-blocked with no other term needed."""


def _unique_terms(*groups: Iterable[str], exclude: Iterable[str] = ()) -> tuple[str, ...]:
    """The terms of ``groups``, first spelling of each (as matching compares them)."""
    from bot.moderation.matching import tag_key

    seen: set[str] = {tag_key(term) for term in exclude}
    out: list[str] = []
    for term in (term for group in groups for term in group):
        key = tag_key(term)
        if key and key not in seen:
            seen.add(key)
            out.append(term)
    return tuple(out)


DEFAULT_BLOCKED_TAGS: Final[tuple[str, ...]] = _unique_terms(
    BUILTIN_BLOCKED_TAGS,
    MULTILINGUAL_SEXUAL_TERMS,
    (term for term in sourced_sexual_terms() if term.casefold() != "missionary"),
    exclude=CHILD_SEXUAL_TERMS,  # hard-blocked everywhere: never merely refused
)
"""What a fresh install refuses in plain channels before anyone configures anything: the
bot's Danbooru tags, its multilingual additions and the sexual entries of the LDNOOBW lists
(:func:`bot.moderation.sources.sourced_sexual_terms`)."""

SUGGESTIVE_TERMS: Final[tuple[str, ...]] = (
    "sexy",
    "seductive",
    "suggestive",
    "provocative",
    "lingerie",
    "underwear only",
    "panties",
    "spread legs",
    "bedroom eyes",
    "stripping",
    "undressing",
)
"""Not blocked on their own, but sexual next to a minor term."""

SEXUAL_TERMS: Final[tuple[str, ...]] = _unique_terms(DEFAULT_BLOCKED_TAGS, SUGGESTIVE_TERMS)
"""Sexual content for the hard block (fixed: server settings do not change it)."""

MINOR_TERMS: Final[tuple[str, ...]] = (
    "loli",
    "lolita",
    "rori",
    "shota",
    "toddler",
    "infant",
    "newborn",
    "child",
    "children",
    "kid",
    "cub",
    "minor",
    "underage",
    "under age",
    "under 18",
    "preteen",
    "pre teen",
    "early teen",
    "young teen",
    "young girl",
    "young boy",
    "little girl",
    "little boy",
    "aged down",
    "age regression",
    "elementary school",
    "elementary schooler",
    "grade school",
    "grade schooler",
    "primary school",
    "kindergarten",
    "kindergartener",
    "preschool",
    "preschooler",
    "middle schooler",
    "middle school student",
    "junior high student",
    "randoseru",
    "schoolchild",
    "schoolchildren",
    "infant girl",
    # Japanese and its romaji
    "ロリ",
    "ショタ",
    "幼女",
    "幼児",
    "児童",
    "小学生",
    "中学生",
    "子供",
    "子ども",
    "こども",
    "幼稚園",
    "園児",
    "女児",
    "男児",
    "幼い",
    "未成年",
    "赤ちゃん",
    "乳児",
    "ランドセル",
    "rori",
    "shouta",
    "youjo",
    "yojo",
    "shougakusei",
    "shogakusei",
    "chuugakusei",
    "chugakusei",
    "kodomo",
    "miseinen",
    # Chinese
    "萝莉",
    "蘿莉",
    "正太",
    "儿童",
    "兒童",
    "小孩",
    "孩子",
    "女童",
    "男童",
    "初中生",
    "幼儿",
    "婴儿",
    # Korean
    "로리",
    "쇼타",
    "어린이",
    "아동",
    "초등학생",
    "중학생",
    "미성년자",
    "미성년",
    "유아",
    # Spanish
    "una nina",
    "nina pequena",
    "ninas pequenas",
    "ninos pequenos",
    "menor de edad",
    "menores de edad",
    # Portuguese
    "crianca",
    "criancas",
    "menor de idade",
    # French
    "enfant",
    "fillette",
    "petite fille",
    "petit garcon",
    "mineure",
    # German
    "ein kind",
    "kleines kind",
    "kleine kinder",
    "kleines maedchen",
    "kleines madchen",
    "kleiner junge",
    "minderjaehrig",
    "minderjahrig",
    "minderjaehrige",
    "minderjahrige",
    "grundschuelerin",
    "grundschulerin",
    "grundschueler",
    "grundschuler",
    "kleinkind",
    # Russian
    "ребёнок",
    "ребенок",
    "дети",
    "ребенка",
    "маленькая девочка",
    # девочка / мальчик are a girl and a boy who are children (a young woman is девушка)
    "девочка",
    "девочки",
    "девочку",
    "девочкой",
    "мальчик",
    "мальчика",
    "мальчики",
    "мальчиком",
    "малолетка",
    "несовершеннолетняя",
    "несовершеннолетний",
    "лоли",
    # Italian
    "bambina",
    "bambino",
    "bambini",
    "minorenne",
    "ragazzina",
    "ragazzino",
)
"""Terms about minors for the hard block. Stated ages under 18 (``12 years old``, ``12yo``,
``aged 12``) count too; see :func:`bot.moderation.matching.minor_age_terms`."""


TERM_EXCEPTIONS: Final[Mapping[str, tuple[str, ...]]] = MappingProxyType(
    {
        "lolita": (
            "gothic lolita",
            "sweet lolita",
            "classic lolita",
            "wa lolita",
            "qi lolita",
            "punk lolita",
            "lolita fashion",
            "lolita hairband",
            "lolita dress",
            "lolita channel",
        ),
        "minor": ("minor injury", "minor character"),
        "dick": ("dick grayson", "moby dick", "philip k dick", "dick tracy"),
        "裸": ("裸足", "裸眼", "裸子植物", "赤裸々"),
        "cum": ("summa cum laude", "magna cum laude", "cum laude"),
        "pussy": ("pussy willow", "pussy willows", "pussycat", "pussy cat"),
        "oral": (
            "oral hygiene",
            "oral care",
            "oral health",
            "oral presentation",
            "oral exam",
            "oral history",
            "oral surgery",
            "oral tradition",
        ),
        "cock": ("cock robin", "cock a doodle doo", "weathercock", "cock of the walk"),
        "missionary": ("missionary priest", "christian missionary", "catholic missionary"),
    }
)
"""Innocent tags that contain a term; a match inside one of them does not count."""

TERM_CONTEXTS: Final[Mapping[str, tuple[str, ...]]] = MappingProxyType(
    {
        "cock": ("rooster", "chicken", "hen", "chick", "bird", "poultry", "farm", "barnyard"),
        "missionary": (
            "priest",
            "nun",
            "monk",
            "church",
            "chapel",
            "cathedral",
            "bible",
            "pastor",
            "preacher",
            "christian",
            "catholic",
            "religion",
            "religious",
            "mission",
        ),
        "pussy": ("cat", "cats", "kitten", "kitty", "willow"),
        "oral": ("dentist", "toothbrush", "teeth", "hygiene", "exam", "presentation"),
    }
)
"""A term that makes a tag on its own is innocent when another tag of the prompt holds one
of these words: ``rooster, cock`` is a bird, ``missionary, priest`` a vocation. The same
term inside a longer tag (``big cock``) is judged as usual."""

HARMLESS_WORDS: Final[tuple[str, ...]] = (
    "middlesex",
    "penistone",
    "scunthorpe",
    "hancock",
    "titania",
    "shotaro",
    "cockatiel",
    "cockatoo",
    "cockroach",
    "peacock",
    "shuttlecock",
    "woodcock",
    "hitchcock",
    "babcock",
    "cumberland",
    "cumbria",
    "sussex",
    "wessex",
    "essex",
)
"""Words (place and character names among them) that hold a term inside them; a glued run
of letters is read as one of them, or as a dictionary word, before any term inside it."""
