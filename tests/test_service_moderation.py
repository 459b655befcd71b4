"""Channel rules through the core: prompts checked before queueing, images before posting."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from bot.engine import Engine
from bot.limits import Requester
from bot.moderation import Action
from bot.moderation.classifier import Tagger
from bot.request import GenerationRequest
from bot.service import Destination, ImagineService, SubmitRefused
from bot.storage import Database, JobStore, MemberStore, prepare_database
from tests.support.tiny_tagger import save_tiny_tagger
from tests.test_service import Recorder, make_settings

ALICE = Requester(user_id=1, guild_id=10)
PLAIN = Destination(channel_id=100)
ADULT = Destination(channel_id=200, age_restricted=True)


def request(**changes: Any) -> GenerationRequest:
    base: dict[str, Any] = {"prompt": "1girl, solo", "width": 64, "height": 64, "steps": 2}
    return GenerationRequest(**{**base, **changes})


async def make_service(
    tiny_model_dir: Path, tmp_path: Path, engine: Engine, tagger: Tagger | None, **env: str
) -> tuple[ImagineService, Recorder, Database]:
    settings = make_settings(tiny_model_dir, tmp_path, **env)
    db = prepare_database(settings)
    events = Recorder()
    error = None if tagger is not None else "no classifier in this test"
    service = ImagineService(
        settings, db, engine, events, classifier=tagger, classifier_error=error
    )
    return service, events, db


def wildcards(tmp_path: Path, **cards: str) -> str:
    """A wildcard folder holding one file per card (``name=line``); its path."""
    folder = tmp_path / "cards"
    folder.mkdir(exist_ok=True)
    for name, line in cards.items():
        (folder / f"{name}.txt").write_text(f"{line}\n", encoding="utf-8")
    return str(folder)


@pytest.fixture
def explicit_tagger(tmp_path: Path) -> Tagger:
    return Tagger.load(str(save_tiny_tagger(tmp_path / "tagger", scores={"explicit": 0.9})))


@pytest.fixture
def general_tagger(tmp_path: Path) -> Tagger:
    return Tagger.load(str(save_tiny_tagger(tmp_path / "tagger2", scores={"general": 0.95})))


@pytest.fixture
async def plain_world(
    tiny_model_dir: Path, tmp_path: Path, engine: Engine, general_tagger: Tagger
) -> AsyncIterator[tuple[ImagineService, Recorder, Database]]:
    service, events, db = await make_service(tiny_model_dir, tmp_path, engine, general_tagger)
    yield service, events, db
    db.close()


@pytest.mark.parametrize(
    ("changes", "reason"),
    [
        ({"rating": "nsfw"}, "nsfw"),
        ({"rating": "explicit"}, "explicit"),
        ({"prompt": "1girl, (NSFW:1.4)"}, "nsfw"),
        ({"prompt": "1girl, [[e_x_p_l_i_c_i_t]]"}, "explicit"),
        ({"prompt": "1girl, ｎｕｄｅ"}, "nude"),
    ],
)
async def test_plain_channel_refuses_nsfw_requests_before_queueing(
    plain_world: tuple[ImagineService, Recorder, Database], changes: dict[str, Any], reason: str
) -> None:
    service, _, db = plain_world
    with pytest.raises(SubmitRefused) as info:
        await service.submit(request(**changes), ALICE, PLAIN)
    decision = info.value.decision
    assert decision is not None
    assert decision.decision == "refuse"
    assert reason in info.value.message.lower() or reason in " ".join(decision.matched)
    assert JobStore(db).queued() == []
    assert (await service.allowance(ALICE)).member.available_now == 20
    events = MemberStore(db).events(guild_id=10)
    assert [e.kind for e in events] == ["prompt_blocked"]


async def test_age_restricted_channel_allows_ratings_but_not_the_hard_block(
    plain_world: tuple[ImagineService, Recorder, Database],
) -> None:
    service, _, db = plain_world
    accepted = await service.submit(request(rating="explicit"), ALICE, ADULT)
    assert accepted.job.channel.age_restricted is True
    with pytest.raises(SubmitRefused) as info:
        await service.submit(request(prompt="loli, nude"), ALICE, ADULT)
    assert info.value.decision is not None
    assert info.value.decision.decision == "hard-block"
    assert [e.kind for e in MemberStore(db).events(guild_id=10)] == ["prompt_hard_blocked"]


async def test_wildcards_are_checked_after_expansion(
    tiny_model_dir: Path, tmp_path: Path, engine: Engine, general_tagger: Tagger
) -> None:
    cards = wildcards(tmp_path, outfit="completely nude")
    service, _, db = await make_service(
        tiny_model_dir, tmp_path, engine, general_tagger, ANIMAGINE_PROMPTS__WILDCARDS_DIR=cards
    )
    try:
        with pytest.raises(SubmitRefused):
            await service.submit(request(prompt="1girl, __outfit__"), ALICE, PLAIN)
        assert (await service.submit(request(prompt="1girl, __outfit__"), ALICE, ADULT)).job
    finally:
        db.close()


async def test_plain_channel_negative_always_holds_nsfw_and_extra_negatives(
    plain_world: tuple[ImagineService, Recorder, Database],
) -> None:
    service, events, _ = plain_world
    plain = await service.submit(request(quality="(None)", negative_prompt="blurry"), ALICE, PLAIN)
    adult = await service.submit(request(quality="(None)", negative_prompt="blurry"), ALICE, ADULT)
    await service.run_burst()
    plain_neg = events.images[plain.job.id][0].infotext.negative_prompt
    adult_neg = events.images[adult.job.id][0].infotext.negative_prompt
    assert {"nsfw", "explicit", "blurry"} <= {t.strip() for t in plain_neg.split(",")}
    assert "nsfw" not in {t.strip() for t in adult_neg.split(",")}


async def test_flagged_image_is_withheld_in_a_plain_channel_and_spoilered_in_an_adult_one(
    tiny_model_dir: Path, tmp_path: Path, engine: Engine, explicit_tagger: Tagger
) -> None:
    service, events, db = await make_service(tiny_model_dir, tmp_path, engine, explicit_tagger)
    try:
        plain = await service.submit(request(), ALICE, PLAIN)
        adult = await service.submit(request(), ALICE, ADULT)
        await service.run_burst()
        withheld = events.images[plain.job.id][0]
        assert withheld.withheld
        assert withheld.verdict.action is Action.WITHHOLD
        assert "explicit" in str(withheld.verdict.reason)
        spoiled = events.images[adult.job.id][0]
        assert spoiled.verdict.action is Action.SPOILER
        stored = JobStore(db).images(plain.job.id)[0]
        assert stored.moderation_scores is not None
        assert stored.moderation_scores["explicit"] == pytest.approx(0.9, abs=0.01)
        kinds = [e.kind for e in MemberStore(db).events(guild_id=10)]
        assert kinds == ["image_withheld"]
    finally:
        db.close()


async def test_missing_classifier_withholds_outside_age_restricted_channels(
    tiny_model_dir: Path, tmp_path: Path, engine: Engine
) -> None:
    service, events, db = await make_service(tiny_model_dir, tmp_path, engine, None)
    try:
        plain = await service.submit(request(), ALICE, PLAIN)
        adult = await service.submit(request(), ALICE, ADULT)
        await service.run_burst()
        verdict = events.images[plain.job.id][0].verdict
        assert verdict.action is Action.WITHHOLD
        assert "no classifier in this test" in str(verdict.reason)
        assert events.images[adult.job.id][0].verdict.posted
    finally:
        db.close()


async def test_server_can_relax_fail_closed(
    tiny_model_dir: Path, tmp_path: Path, engine: Engine
) -> None:
    service, events, db = await make_service(tiny_model_dir, tmp_path, engine, None)
    try:
        service.guilds.set_moderation(10, {"fail_closed": False})
        job = await service.submit(request(), ALICE, PLAIN)
        await service.run_burst()
        assert events.images[job.job.id][0].verdict.posted
    finally:
        db.close()


async def test_a_policy_change_after_queueing_is_honoured_without_a_rebuild(
    tiny_model_dir: Path,
    tmp_path: Path,
    engine: Engine,
    general_tagger: Tagger,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    cards = wildcards(tmp_path, hat="red hat")
    service, events, db = await make_service(
        tiny_model_dir, tmp_path, engine, general_tagger, ANIMAGINE_PROMPTS__WILDCARDS_DIR=cards
    )
    try:
        kept = await service.submit(request(prompt="1girl, __hat__"), ALICE, PLAIN)
        refused = await service.submit(request(prompt="1girl, umbrella"), ALICE, PLAIN)
        plan = JobStore(db).get(kept.job.id).plan
        assert plan is not None
        assert "red hat" in plan.render.prompt  # planned once, wildcards expanded
        # After queueing: the wildcard changes (the stored plan stands) and the server
        # blocks a tag (the re-check at render time sees it, with no prompt built again).
        wildcards(tmp_path, hat="blue hat")
        service.guilds.set_moderation(10, {"blocked_tags_add": ["umbrella"]})

        def no_rebuild(*args: Any, **kwargs: Any) -> Any:
            raise AssertionError("a queued job's prompt was built again")

        monkeypatch.setattr("bot.planning.build_for", no_rebuild)
        await service.run_burst()
        assert ("finished", kept.job.id) in events.log
        assert "red hat" in events.images[kept.job.id][0].infotext.prompt
        assert ("failed", refused.job.id) in events.log
        assert events.reasons[refused.job.id].startswith("the request cannot be rendered")
        assert "umbrella" in events.reasons[refused.job.id]
    finally:
        db.close()
