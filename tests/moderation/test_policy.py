"""The channel policy as a table: channel kinds x ratings x evasion forms, and images."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bot.moderation import (
    Action,
    ChannelContext,
    ChannelKind,
    Decision,
    GuildPolicy,
    ModerationSettings,
    PolicySettingsError,
    PromptDecision,
    RatingScores,
    Thresholds,
    channel_context,
    check_built,
    check_prompt,
    ensure_negatives,
    image_verdict,
    merge_overrides,
    policy_check_lines,
    validate_overrides,
)
from bot.moderation.lists import DEFAULT_BLOCKED_TAGS
from bot.prompts import QUALITY_PRESETS, STYLE_PRESETS, WildcardFolder, build_prompt
from bot.prompts.tags import leaf_tags

POLICY = GuildPolicy.from_settings(ModerationSettings())
DM_POLICY = GuildPolicy.from_settings(ModerationSettings(dm_allowed=True))

PLAIN = channel_context(False)
AGE_RESTRICTED = channel_context(True)
THREAD_IN_PLAIN = channel_context(True, parent_nsfw=False)  # its own flag does not count
THREAD_IN_AGE_RESTRICTED = channel_context(False, parent_nsfw=True)
DM = channel_context(False, is_dm=True)

# (name, channel, policy, rating tags allowed?)
CHANNELS = [
    ("plain", PLAIN, POLICY, False),
    ("age-restricted", AGE_RESTRICTED, POLICY, True),
    ("thread in plain", THREAD_IN_PLAIN, POLICY, False),
    ("thread in age-restricted", THREAD_IN_AGE_RESTRICTED, POLICY, True),
    ("dm (allowed)", DM, DM_POLICY, False),
]
CHANNEL_IDS = [name for name, *_ in CHANNELS]
RATINGS = [None, "safe", "general", "sensitive", "nsfw", "explicit", "EXPLICIT"]
NSFW_FORMS = [
    "nsfw",
    "(nsfw:1.4)",
    "[[explicit]]",
    "n_s_f_w",
    "N S F W",
    "ｎｓｆｗ",
    "n\u0455fw",
    "n\u200bsfw",
    "\\(nude\\)",
    "s3x",
    "completely_nude",
]
CLEAN = "1girl, solo, long hair, smile"


def decide(
    prompt: str, rating: str | None, channel: ChannelContext, policy: GuildPolicy = POLICY
) -> PromptDecision:
    """What /imagine does: build the prompt for the channel, then check the built prompt."""
    built = build_prompt(prompt, rating=rating, seed=1, allow_nsfw=channel.age_restricted)
    return check_built(built, channel, policy)


def negative_tags(decision: PromptDecision) -> list[str]:
    return [tag.casefold() for tag in leaf_tags(decision.negative_prompt)]


def test_channel_context_follows_discord_flags() -> None:
    assert ChannelContext(age_restricted=False) == PLAIN
    assert ChannelContext(age_restricted=True) == AGE_RESTRICTED
    assert ChannelContext(age_restricted=False, is_thread=True) == THREAD_IN_PLAIN
    assert ChannelContext(age_restricted=True, is_thread=True) == THREAD_IN_AGE_RESTRICTED
    assert ChannelContext(age_restricted=False, is_dm=True) == DM
    assert channel_context(True, is_dm=True).age_restricted is False
    assert [c.kind for c in (PLAIN, AGE_RESTRICTED, THREAD_IN_AGE_RESTRICTED, DM)] == [
        ChannelKind.PLAIN,
        ChannelKind.AGE_RESTRICTED,
        ChannelKind.AGE_RESTRICTED,
        ChannelKind.DM,
    ]
    assert ChannelContext.of_kind("age-restricted") == AGE_RESTRICTED
    with pytest.raises(ValueError, match="plain, age-restricted, dm"):
        ChannelContext.of_kind("nsfw")


@pytest.mark.parametrize(("name", "channel", "policy", "nsfw_ok"), CHANNELS, ids=CHANNEL_IDS)
@pytest.mark.parametrize("rating", RATINGS)
def test_ratings_per_channel(
    name: str, channel: ChannelContext, policy: GuildPolicy, nsfw_ok: bool, rating: str | None
) -> None:
    decision = decide(CLEAN, rating, channel, policy)
    nsfw_rating = rating is not None and rating.casefold() in ("nsfw", "explicit")
    if nsfw_rating and not nsfw_ok:
        assert decision.decision is Decision.REFUSE
        assert "only allowed in age-restricted channels" in str(decision.reason)
        assert "nsfw" in decision.matched
        assert decision.event_kind == "prompt_blocked"
    else:
        assert decision.decision is Decision.ALLOW, decision.reason
        assert decision.event_kind is None
    if nsfw_ok:
        assert "nsfw" not in negative_tags(decision)
    else:
        assert negative_tags(decision).count("nsfw") == 1
        assert "explicit" in negative_tags(decision)


@pytest.mark.parametrize(("name", "channel", "policy", "nsfw_ok"), CHANNELS, ids=CHANNEL_IDS)
@pytest.mark.parametrize("rating", [None, "safe", "sensitive"])
@pytest.mark.parametrize("form", NSFW_FORMS)
def test_evasion_forms_per_channel(
    name: str,
    channel: ChannelContext,
    policy: GuildPolicy,
    nsfw_ok: bool,
    rating: str | None,
    form: str,
) -> None:
    decision = decide(f"1girl, {form}, smile", rating, channel, policy)
    if nsfw_ok:
        assert decision.decision is Decision.ALLOW
    else:
        assert decision.decision is Decision.REFUSE
        assert decision.matched
        assert "not allowed outside age-restricted channels" in str(decision.reason)


@pytest.mark.parametrize(("name", "channel", "policy", "nsfw_ok"), CHANNELS, ids=CHANNEL_IDS)
@pytest.mark.parametrize(
    ("prompt", "rating"),
    [
        ("loli, nude", None),
        ("1girl, (l0li:1.2), [[explicit]]", None),
        ("child, smile", "nsfw"),
        ("child, smile", "explicit"),
        ("young girl, n_s_f_w", "sensitive"),
        ("12yo, lingerie", None),
        ("1girl, 12 years old, sex", "safe"),
        ("ﾛﾘ, セックス", None),
        ("elementary schooler, panties", None),
        ("shota, s3x", None),
    ],
)
def test_hard_block_everywhere(
    name: str,
    channel: ChannelContext,
    policy: GuildPolicy,
    nsfw_ok: bool,
    prompt: str,
    rating: str | None,
) -> None:
    decision = decide(prompt, rating, channel, policy)
    assert decision.decision is Decision.HARD_BLOCK
    assert decision.event_kind == "prompt_hard_blocked"
    assert "never allowed" in str(decision.reason)
    assert len(decision.matched) >= 2


@pytest.mark.parametrize(("name", "channel", "policy", "nsfw_ok"), CHANNELS, ids=CHANNEL_IDS)
@pytest.mark.parametrize(
    "prompt", ["lolicon", "1girl, (j@ilbait:1.2)", "ロリコン", "s h o t a c o n"]
)
def test_terms_sexualising_minors_are_hard_blocked_alone(
    name: str, channel: ChannelContext, policy: GuildPolicy, nsfw_ok: bool, prompt: str
) -> None:
    decision = decide(prompt, None, channel, policy)
    assert decision.decision is Decision.HARD_BLOCK
    assert decision.matched


def test_hard_block_cannot_be_configured_away() -> None:
    lax = ModerationSettings(blocked_tags=["gore"], blocked_tags_mode="replace")
    policy = GuildPolicy.from_settings(lax, {"blocked_tags_remove": ["nude", "loli"]})
    assert decide("nude", None, PLAIN, policy).decision is Decision.ALLOW
    assert decide("loli, nude", None, AGE_RESTRICTED, policy).decision is Decision.HARD_BLOCK
    assert decide("loli, nude", None, DM, policy).decision is Decision.HARD_BLOCK


@pytest.mark.parametrize(
    "prompt",
    [
        "child, smile, flower field",
        "little girl, holding balloon",
        "12 years old, school uniform",
        "18 years old, nude",
        "gothic lolita, nude",
        "1girl, mature female, nude",
        "kid, swimsuit, beach",
    ],
)
def test_not_hard_blocked_in_age_restricted_channels(prompt: str) -> None:
    assert decide(prompt, None, AGE_RESTRICTED).decision is Decision.ALLOW


def test_direct_messages_are_off_by_default() -> None:
    decision = decide(CLEAN, None, DM)
    assert decision.decision is Decision.REFUSE
    assert "direct messages" in str(decision.reason)
    assert decide(CLEAN, None, DM, DM_POLICY).decision is Decision.ALLOW


@pytest.mark.parametrize("channel", [PLAIN, AGE_RESTRICTED], ids=["plain", "age-restricted"])
@pytest.mark.parametrize("quality", list(QUALITY_PRESETS))
@pytest.mark.parametrize("style", list(STYLE_PRESETS))
def test_presets_pass(channel: ChannelContext, quality: str, style: str) -> None:
    built = build_prompt(
        "child, smile", quality=quality, style=style, seed=3, allow_nsfw=channel.age_restricted
    )
    decision = check_built(built, channel, POLICY)
    assert decision.decision is Decision.ALLOW, decision.reason
    assert decision.minors == ("child",)
    if channel.age_restricted:
        return
    # the presets' own "nsfw" tags stay as they are; the policy adds none of its own
    before = [tag.casefold() for tag in leaf_tags(built.negative_prompt)]
    assert negative_tags(decision).count("nsfw") == max(1, before.count("nsfw"))


def test_wildcard_expansions_are_checked(tmp_path: Path) -> None:
    (tmp_path / "outfit.txt").write_text("sundress\nnude\n", encoding="utf-8")
    folder = WildcardFolder(tmp_path)
    outcomes: dict[str, Decision] = {}
    for seed in range(40):  # a re-roll draws again, so every build is checked again
        built = build_prompt("1girl, __outfit__", wildcards=folder, seed=seed)
        outfit = "nude" if "nude" in built.prompt else "sundress"
        outcomes[outfit] = check_built(built, PLAIN, POLICY).decision
    assert outcomes == {"sundress": Decision.ALLOW, "nude": Decision.REFUSE}


def test_expand_sees_what_the_wildcard_becomes() -> None:
    decision = check_prompt(
        "1girl, __outfit__",
        "",
        None,
        PLAIN,
        POLICY,
        expand=lambda s: s.replace("__outfit__", "n@ked"),
    )
    assert decision.decision is Decision.REFUSE
    assert decision.matched == ("naked",)


@pytest.mark.parametrize(
    ("negative", "expected"),
    [
        ("", "nsfw, explicit"),
        ("nsfw, lowres", "explicit, nsfw, lowres"),
        ("(NSFW:1.3), Explicit", "(NSFW:1.3), Explicit"),
        ("lowres, [explicit]", "nsfw, lowres, [explicit]"),
    ],
)
def test_negative_gets_nsfw_and_extras_once(negative: str, expected: str) -> None:
    assert ensure_negatives(negative, ["nsfw", "explicit"]) == expected
    decision = check_prompt(CLEAN, negative, None, PLAIN, POLICY)
    assert decision.negative_prompt == expected


def test_negative_untouched_in_age_restricted_channels() -> None:
    decision = check_prompt(CLEAN, "lowres", "explicit", AGE_RESTRICTED, POLICY)
    assert decision.negative_prompt == "lowres"


def test_extra_negatives_from_settings_and_server() -> None:
    policy = GuildPolicy.from_settings(ModerationSettings(extra_negatives=["nude", "explicit"]))
    assert check_prompt(CLEAN, "", None, PLAIN, policy).negative_prompt == "nsfw, nude, explicit"
    policy = GuildPolicy.from_settings(ModerationSettings(), {"extra_negatives": ["gore"]})
    assert check_prompt(CLEAN, "", None, PLAIN, policy).negative_prompt == "nsfw, gore"


def test_server_blocked_tags_add_and_remove() -> None:
    policy = GuildPolicy.from_settings(
        ModerationSettings(),
        {"blocked_tags_add": ["gore", "blood"], "blocked_tags_remove": ["Nipples", "nsfw"]},
    )
    assert decide("1girl, blood", None, PLAIN, policy).matched == ("blood",)
    assert decide("1girl, nipples", None, PLAIN, policy).decision is Decision.ALLOW
    # the rating tags stay refused whatever the blocked list says
    assert decide("1girl, nsfw", None, PLAIN, policy).matched == ("nsfw",)
    assert decide("1girl, gore", None, AGE_RESTRICTED, policy).decision is Decision.ALLOW


def test_blocked_tags_mode_replace() -> None:
    policy = GuildPolicy.from_settings(
        ModerationSettings(blocked_tags=["gore"], blocked_tags_mode="replace")
    )
    assert policy.blocked_tags == ("gore",)
    assert decide("nude", None, PLAIN, policy).decision is Decision.ALLOW
    assert decide("explicit", None, PLAIN, policy).decision is Decision.REFUSE


def test_fresh_install_blocks_the_default_list() -> None:
    assert POLICY.blocked_tags == DEFAULT_BLOCKED_TAGS
    hard_blocked = []
    for tag in DEFAULT_BLOCKED_TAGS:
        decision = decide(f"1girl, {tag}", None, PLAIN).decision
        assert decision is not Decision.ALLOW, tag
        if decision is Decision.HARD_BLOCK:
            hard_blocked.append(tag)
    # LDNOOBW's "jail bait" is jailbait (a child-sexual term) written in two words
    assert hard_blocked == ["jail bait"]


def test_overrides_are_validated_with_clear_messages() -> None:
    assert validate_overrides(None) == {}
    assert validate_overrides({"spoiler": "always", "log_channel_id": 42}) == {
        "spoiler": "always",
        "log_channel_id": 42,
    }
    assert validate_overrides({"blocked_tags_add": [" gore ", "Gore", "blood"]}) == {
        "blocked_tags_add": ["gore", "blood"]
    }
    bad = {"explicit_threshold": 1.5, "spoiler": "sometimes", "colour": "red", "fail_closed": 1}
    with pytest.raises(PolicySettingsError) as info:
        validate_overrides(bad)
    message = str(info.value)
    assert "explicit_threshold: Input should be less than or equal to 1 (got 1.5)" in message
    assert "spoiler: " in message
    assert "colour: unknown setting (known: blocked_tags_add" in message
    assert "fail_closed: " in message
    with pytest.raises(PolicySettingsError, match="blocked_tags_add: '!!' is not a tag"):
        validate_overrides({"blocked_tags_add": ["!!"]})
    with pytest.raises(PolicySettingsError, match="unknown setting"):
        GuildPolicy.from_settings(ModerationSettings(), {"dm_allowed": True})


def test_merge_overrides_sets_and_resets() -> None:
    current = {"spoiler": "always", "explicit_threshold": 0.2}
    merged = merge_overrides(current, {"spoiler": None, "fail_closed": False})
    assert merged == {"explicit_threshold": 0.2, "fail_closed": False}
    policy = GuildPolicy.from_settings(ModerationSettings(), merged)
    assert policy.thresholds == Thresholds(questionable=0.5, explicit=0.2)
    assert policy.fail_closed is False
    assert policy.spoiler == "flagged"


# --- images -----------------------------------------------------------------------------

SAFE = RatingScores(general=0.9, sensitive=0.1, questionable=0.05, explicit=0.01)
QUESTIONABLE = RatingScores(general=0.1, sensitive=0.3, questionable=0.7, explicit=0.1)
EXPLICIT = RatingScores(general=0.01, sensitive=0.05, questionable=0.2, explicit=0.95)


@pytest.mark.parametrize(
    ("channel", "scores", "action"),
    [
        (PLAIN, SAFE, Action.POST),
        (PLAIN, QUESTIONABLE, Action.WITHHOLD),
        (PLAIN, EXPLICIT, Action.WITHHOLD),
        (PLAIN, None, Action.WITHHOLD),
        (THREAD_IN_PLAIN, EXPLICIT, Action.WITHHOLD),
        (THREAD_IN_PLAIN, None, Action.WITHHOLD),
        (AGE_RESTRICTED, SAFE, Action.POST),
        (AGE_RESTRICTED, QUESTIONABLE, Action.SPOILER),
        (AGE_RESTRICTED, EXPLICIT, Action.SPOILER),
        (AGE_RESTRICTED, None, Action.SPOILER),
        (THREAD_IN_AGE_RESTRICTED, EXPLICIT, Action.SPOILER),
        (DM, SAFE, Action.WITHHOLD),  # DMs are off by default
    ],
)
def test_image_verdicts_with_defaults(
    channel: ChannelContext, scores: RatingScores | None, action: Action
) -> None:
    verdict = image_verdict(scores, channel, POLICY, error="model.onnx not found")
    assert verdict.action is action
    assert verdict.posted is (action is not Action.WITHHOLD)
    assert verdict.event_kind == ("image_withheld" if action is Action.WITHHOLD else None)


def test_withheld_image_says_why() -> None:
    verdict = image_verdict(EXPLICIT, PLAIN, POLICY)
    assert verdict.flagged
    assert (
        str(verdict.reason)
        == "withheld: rated explicit (0.95, above 0.30); not allowed in this channel"
    )
    missing = image_verdict(None, PLAIN, POLICY, error="image classifier 'x': no such folder")
    assert not missing.flagged
    assert "could not run (image classifier 'x': no such folder)" in str(missing.reason)


@pytest.mark.parametrize(
    ("scores", "action"),
    [
        (SAFE, Action.POST),
        (QUESTIONABLE, Action.WITHHOLD),
        (EXPLICIT, Action.WITHHOLD),
        (None, Action.WITHHOLD),
    ],
)
def test_prompts_about_minors_get_plain_rules_in_age_restricted_channels(
    scores: RatingScores | None, action: Action
) -> None:
    decision = decide("child, smile", None, AGE_RESTRICTED)
    assert decision.allowed
    verdict = image_verdict(scores, AGE_RESTRICTED, POLICY, minors=decision.minors)
    assert verdict.action is action
    if scores is EXPLICIT:
        assert str(verdict.reason).endswith("not allowed for a prompt about minors")


def test_fail_open_when_the_server_says_so() -> None:
    policy = GuildPolicy.from_settings(ModerationSettings(), {"fail_closed": False})
    verdict = image_verdict(None, PLAIN, policy, error="boom")
    assert verdict.action is Action.POST
    assert "unchecked" in str(verdict.reason)
    assert image_verdict(EXPLICIT, PLAIN, policy).action is Action.WITHHOLD


def test_dm_images_when_allowed_are_checked_like_plain_channels() -> None:
    assert image_verdict(SAFE, DM, DM_POLICY).action is Action.POST
    assert image_verdict(EXPLICIT, DM, DM_POLICY).action is Action.WITHHOLD
    assert image_verdict(None, DM, DM_POLICY).action is Action.WITHHOLD


@pytest.mark.parametrize(
    ("spoiler", "scores", "action"),
    [
        ("never", EXPLICIT, Action.POST),
        ("never", None, Action.POST),
        ("flagged", SAFE, Action.POST),
        ("flagged", EXPLICIT, Action.SPOILER),
        ("always", SAFE, Action.SPOILER),
    ],
)
def test_spoiler_policy_in_age_restricted_channels(
    spoiler: str, scores: RatingScores | None, action: Action
) -> None:
    policy = GuildPolicy.from_settings(ModerationSettings(), {"spoiler": spoiler})
    verdict = image_verdict(scores, AGE_RESTRICTED, policy)
    assert verdict.action is action
    assert verdict.spoiler is (action is Action.SPOILER)


def test_thresholds_are_strictly_above() -> None:
    at_limit = RatingScores(general=0.5, sensitive=0.0, questionable=0.5, explicit=0.3)
    assert image_verdict(at_limit, PLAIN, POLICY).action is Action.POST
    strict = GuildPolicy.from_settings(ModerationSettings(), {"questionable_threshold": 0.4})
    assert str(image_verdict(at_limit, PLAIN, strict).reason).startswith(
        "withheld: rated questionable"
    )


def test_scores_round_trip_for_storage() -> None:
    stored = json.loads(json.dumps(EXPLICIT.as_dict()))
    assert RatingScores.from_dict(stored) == EXPLICIT
    assert EXPLICIT.rating == "explicit"
    assert EXPLICIT.over(Thresholds()) == ("explicit",)


# --- policy check -----------------------------------------------------------------------


def test_policy_check_lines() -> None:
    prompts = ["1girl, solo", "", "(nsfw:1.4), 1girl", "loli, nude", "1girl, __missing__"]
    plain = list(policy_check_lines(prompts, "plain", ModerationSettings()))
    assert [line["decision"] for line in plain] == ["allow", "refuse", "hard-block", "refuse"]
    assert all(
        set(line) == {"prompt", "decision", "reason", "matched", "negative_prompt"}
        for line in plain
    )
    assert plain[1] == {
        "prompt": "(nsfw:1.4), 1girl",
        "decision": "refuse",
        "reason": "not allowed outside age-restricted channels: nsfw",
        "matched": ["nsfw"],
        "negative_prompt": plain[0]["negative_prompt"],
    }
    assert plain[0]["negative_prompt"].startswith("explicit, nsfw, lowres")
    assert "no wildcard folder" in plain[3]["reason"]
    json.dumps(plain)  # JSON-ready

    age = list(policy_check_lines(prompts, "age-restricted", ModerationSettings()))
    assert [line["decision"] for line in age] == ["allow", "allow", "hard-block", "refuse"]
    assert "nsfw" not in leaf_tags(age[0]["negative_prompt"])


def test_policy_check_lines_with_wildcards_and_overrides(tmp_path: Path) -> None:
    (tmp_path / "outfit.txt").write_text("bikini\n", encoding="utf-8")
    lines = list(
        policy_check_lines(
            ["1girl, __outfit__"],
            ChannelKind.PLAIN,
            ModerationSettings(),
            overrides={"blocked_tags_add": ["bikini"]},
            wildcards=WildcardFolder(tmp_path),
        )
    )
    assert lines[0]["decision"] == "refuse"
    assert lines[0]["matched"] == ["bikini"]


def test_policy_check_lines_rejects_unknown_channel() -> None:
    with pytest.raises(ValueError, match="unknown channel kind"):
        list(policy_check_lines(["1girl"], "nsfw", ModerationSettings()))
