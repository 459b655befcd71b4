"""The classes of issue 10, as a member meets them: what is refused where, and why."""

from __future__ import annotations

import pytest

from bot.moderation import ChannelContext, Decision, GuildPolicy, check_prompt

PLAIN = ChannelContext(age_restricted=False)
ADULT = ChannelContext(age_restricted=True)
POLICY = GuildPolicy()


def decide(prompt: str, channel: ChannelContext = PLAIN) -> Decision:
    return check_prompt(prompt, "", None, channel, POLICY).decision


@pytest.mark.parametrize(
    "prompt",
    [
        "1girl, nude, loli1",
        "1girl, nude1, loli",
        "1girl, lolinude",
        "nsfw1, shota",
        "1girl, nude, lo BREAK li",
        "1girl, (nu:1.2)(de), loli",
        "loli, n.u.d.e",
    ],
)
def test_glued_and_split_forms_hard_block_like_the_plain_words(prompt: str) -> None:
    assert decide(prompt, ADULT) is Decision.HARD_BLOCK
    assert decide("1girl, nude, loli", ADULT) is Decision.HARD_BLOCK


@pytest.mark.parametrize(
    "prompt", ["1girlnude", "nude1", "nsfw1", "solo, n u d e", "nu-de, smile", "shorthairnaked"]
)
def test_glued_sexual_words_are_refused_in_plain_channels(prompt: str) -> None:
    assert decide(prompt) is Decision.REFUSE
    assert decide(prompt, ADULT) is Decision.ALLOW


@pytest.mark.parametrize(
    "prompt",
    [
        "no clothes",
        "unclothed",
        "undressed",
        "tits",
        "desnuda",
        "nackt",
        "裸",
        "全裸",
        "голая",
        "はだか",
        "누드",
        "nuda",
        "toute nue",
        "sem roupa",
        "裸体",
    ],
)
def test_words_outside_the_old_list_and_other_languages_are_refused(prompt: str) -> None:
    assert decide(f"1girl, {prompt}, smile") is Decision.REFUSE


@pytest.mark.parametrize(
    "prompt",
    [
        "summa cum laude, graduation",
        "pussy willow, vase",
        "rooster, cock",
        "oral hygiene",
        "missionary, priest",
        "mother holding child, smile",
        "cocktail dress, peacock",
        "boa hancock",
        "badminton, shuttlecock",
        "sextant, sussex",
        "裸足, 女の子",
        "gothic lolita",
        "kids playing, playground",
    ],
)
def test_harmless_compounds_are_allowed_in_plain_channels(prompt: str) -> None:
    assert decide(prompt) is Decision.ALLOW


def test_a_term_is_judged_inside_its_tag() -> None:
    assert decide("rooster, big cock") is Decision.REFUSE
    assert decide("cock") is Decision.REFUSE
    assert decide("missionary") is Decision.REFUSE


@pytest.mark.parametrize(
    "minor",
    [
        "10 sai",
        "shougakusei",
        "小学生",
        "10歳",
        "十二歳",
        "10살",
        "10 años",
        "10 Jahre",
        "10 лет",
        "dix ans",
        "niña pequeña",
        "criança",
        "ребенок",
        "bambina",
        "萝莉",
        "초등학생",
    ],
)
def test_age_statements_and_minors_in_other_languages(minor: str) -> None:
    decision = check_prompt(f"1girl, {minor}, nude", "", None, ADULT, POLICY)
    assert decision.decision is Decision.HARD_BLOCK
    assert "sexual: nude" in str(decision.reason)
    assert "minor: " in str(decision.reason)
    # the same words about a child with nothing sexual are allowed
    assert decide(f"1girl, {minor}, smile, park", ADULT) is Decision.ALLOW


def test_hard_block_reason_names_both_signals() -> None:
    decision = check_prompt("loli, undressed", "", None, PLAIN, POLICY)
    assert decision.decision is Decision.HARD_BLOCK
    assert "sexual: undressed" in str(decision.reason)
    assert "minor: loli" in str(decision.reason)
    explicit = check_prompt("1girl, lolicon", "", None, ADULT, POLICY)
    assert "terms that sexualise minors: lolicon" in str(explicit.reason)


def test_no_hard_block_without_a_sexual_signal() -> None:
    for prompt in ["child, kindergarten, crayons", "loli, frilled dress", "12 years old, school"]:
        assert decide(prompt, ADULT) is Decision.ALLOW, prompt


def test_adult_prompts_are_allowed_in_age_restricted_channels() -> None:
    for prompt in ["mature female, nude", "25 years old, sex", "office lady, desnuda"]:
        assert decide(prompt, ADULT) is Decision.ALLOW
        assert decide(prompt) is Decision.REFUSE


def test_the_loaded_tokenizer_is_used_when_given() -> None:
    seen: list[str] = []

    class Tokenizer:
        def tokenize(self, text: str) -> list[str]:
            from bot.moderation.tokens import shipped_tokenizer

            seen.append(text)
            return shipped_tokenizer().tokenize(text)

    decision = check_prompt("1girlnude", "", None, PLAIN, POLICY, tokenizer=Tokenizer())
    assert decision.decision is Decision.REFUSE
    assert "girlnude" in seen


def test_owner_extends_the_vocabulary_with_config_keys() -> None:
    from bot.moderation import ModerationSettings

    settings = ModerationSettings(sexual_terms=["zorblax"], minor_terms=["tykeling"])
    policy = GuildPolicy.from_settings(settings)
    assert check_prompt("zorblax, smile", "", None, PLAIN, policy).decision is Decision.REFUSE
    assert check_prompt("1girlzorblax", "", None, PLAIN, policy).decision is Decision.REFUSE
    both = check_prompt("tykeling, zorblax", "", None, ADULT, policy)
    assert both.decision is Decision.HARD_BLOCK
    assert "sexual: zorblax" in str(both.reason)
    assert "minor: tykeling" in str(both.reason)
    assert check_prompt("tykeling, nude", "", None, ADULT, POLICY).decision is Decision.ALLOW


@pytest.mark.parametrize(
    ("prompt", "expected"),
    [
        ("1girl, голая, девочка", Decision.HARD_BLOCK),
        ("1boy, голый, мальчик", Decision.HARD_BLOCK),
        # девушка is a young woman: adult content stays allowed where it is allowed.
        ("1girl, девушка, голая", Decision.ALLOW),
        # A child with nothing sexual asked is no hard block.
        ("1girl, девочка, playing in the park", Decision.ALLOW),
    ],
)
def test_russian_words_for_a_girl_or_boy_child(prompt: str, expected: Decision) -> None:
    assert decide(prompt, ADULT) is expected
