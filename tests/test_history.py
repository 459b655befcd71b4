"""bot.history: a member's own jobs, newest first, a keyset page at a time."""

from __future__ import annotations

import pytest

from bot.engine.job import RenderJob
from bot.history import PAGE_SIZE_MAX, HistoryPage, history_page, read_history
from bot.jobspec import JobSpec, StoredPlan
from bot.moderation import ChannelContext
from bot.request import GenerationRequest
from bot.storage import Database, JobStore, MemberStore, NewJob

ALICE, BOB = 1, 2
SERVER, OTHER_SERVER = 10, 11


def _add(
    store: JobStore,
    prompt: str = "1girl",
    *,
    user: int = ALICE,
    guild: int | None = SERVER,
    seed: int = 5,
    count: int = 1,
    restricted: bool = False,
    plan: StoredPlan | None = None,
) -> int:
    request = GenerationRequest(
        prompt=prompt, negative_prompt="lowres", seed=seed, count=count, width=832, height=1216
    )
    channel = ChannelContext(restricted, is_dm=guild is None)
    spec = JobSpec(request=request, channel=channel, plan=plan)
    return store.add(NewJob.of(spec, channel_id=20), user_id=user, guild_id=guild).id


def _ids(page: HistoryPage) -> list[int]:
    return [entry.job_id for entry in page.entries]


def test_pages_go_newest_first_by_keyset_and_back(db: Database) -> None:
    store = JobStore(db)
    ids = [_add(store, f"job {n}") for n in range(7)]
    first = read_history(db, ALICE, guild_id=SERVER, limit=3)
    assert _ids(first) == ids[6:3:-1]
    assert (first.newer, first.older) == (None, ids[4])
    second = read_history(db, ALICE, guild_id=SERVER, before=first.older, limit=3)
    assert _ids(second) == ids[3:0:-1]
    assert (second.newer, second.older) == (ids[3], ids[1])
    # A job accepted meanwhile does not shift the pages already defined by their cursors.
    newest = _add(store, "job 7")
    last = read_history(db, ALICE, guild_id=SERVER, before=second.older, limit=3)
    assert _ids(last) == [ids[0]]
    assert (last.newer, last.older) == (ids[0], None)
    back = read_history(db, ALICE, guild_id=SERVER, after=last.newer, limit=3)
    assert _ids(back) == ids[3:0:-1]
    assert (back.newer, back.older) == (ids[3], ids[1])
    again = read_history(db, ALICE, guild_id=SERVER, after=back.newer, limit=3)
    assert _ids(again) == _ids(first)  # the same page as before, now with a newer one
    assert (again.newer, again.older) == (ids[6], ids[4])
    top = read_history(db, ALICE, guild_id=SERVER, after=again.newer, limit=3)
    assert _ids(top) == [newest]
    assert (top.newer, top.older) == (None, newest)
    exact = read_history(db, ALICE, guild_id=SERVER, limit=8)
    assert len(exact.entries) == 8
    assert (exact.newer, exact.older) == (None, None)


def test_only_the_members_own_jobs_of_the_scope(db: Database) -> None:
    store = JobStore(db)
    mine = _add(store, "mine here")
    _add(store, "bob's", user=BOB)
    elsewhere = _add(store, "mine elsewhere", guild=OTHER_SERVER)
    direct = _add(store, "mine in DMs", guild=None)
    assert _ids(read_history(db, ALICE, guild_id=SERVER)) == [mine]
    assert _ids(read_history(db, ALICE, guild_id=None)) == [direct]
    assert _ids(read_history(db, ALICE, guild_id=SERVER, everywhere=True)) == [
        direct,
        elsewhere,
        mine,
    ]
    assert read_history(db, 3, guild_id=SERVER) == HistoryPage((), None, None)


def test_deleted_and_purged_jobs_are_not_listed(db: Database) -> None:
    store, members = JobStore(db), MemberStore(db)
    kept, deleted, purged, own_purge = (_add(store, f"job {n}") for n in range(4))
    bobs = _add(store, "bob's", user=BOB)
    members.record_event(
        "image_deleted", guild_id=SERVER, user_id=ALICE, actor_id=BOB, job_id=deleted
    )
    members.record_event(
        "purge",
        guild_id=SERVER,
        user_id=ALICE,
        actor_id=BOB,
        details={"channel_id": 20, "message_ids": [1, 2], "job_ids": [purged, own_purge]},
    )
    # An event about someone else's job leaves Alice's alone.
    members.record_event("ban", guild_id=SERVER, user_id=ALICE, actor_id=BOB, job_id=kept)
    page = read_history(db, ALICE, guild_id=SERVER)
    assert _ids(page) == [kept]
    assert (page.newer, page.older) == (None, None)
    assert _ids(read_history(db, BOB, guild_id=SERVER)) == [bobs]


def test_an_entry_holds_what_the_member_asked_for(db: Database) -> None:
    store = JobStore(db)
    render = RenderJob(
        "1girl, masterpiece", "lowres, nsfw", 832, 1216, 28, 7.0, "Euler a", (41, 42)
    )
    job_id = _add(store, "1girl, (smile:1.2)", seed=41, count=2, plan=StoredPlan(render=render))
    store.set_message(job_id, 30)
    store.mark_started(job_id)
    store.mark_finished(job_id)
    image = store.add_image(job_id, index=0, seed=41, width=832, height=1216, content_hash="0" * 64)
    (entry,) = read_history(db, ALICE, guild_id=SERVER).entries
    assert entry.status.value == "finished"
    assert (entry.prompt, entry.negative_prompt) == ("1girl, (smile:1.2)", "lowres")
    assert entry.seeds == (41, 42)
    assert entry.size == "832x1216"
    assert entry.ended_at is not None
    assert entry.jump_url == f"https://discord.com/channels/{SERVER}/20/30"
    assert not entry.images_kept
    store.set_stored(image.id, 1234)
    (entry,) = read_history(db, ALICE, guild_id=SERVER).entries
    assert entry.images_kept

    direct = _add(store, "in a DM", guild=None, seed=9, count=3)
    store.set_message(direct, 31)
    (entry,) = read_history(db, ALICE, guild_id=None).entries
    assert entry.jump_url == "https://discord.com/channels/@me/20/31"
    assert entry.seeds == (9, 10, 11)  # no stored plan: the request's seeds
    assert entry.status.value == "queued"
    assert entry.ended_at is None


def test_age_restricted_prompts_are_hidden_outside_such_channels(db: Database) -> None:
    store = JobStore(db)
    restricted = _add(store, "1girl, nsfw", restricted=True)
    plain = _add(store, "1girl, smile")
    here = {e.job_id: e for e in read_history(db, ALICE, guild_id=SERVER).entries}
    assert here[restricted].prompt_hidden
    assert (here[restricted].prompt, here[restricted].negative_prompt) == (None, None)
    assert here[restricted].seeds == (5,)  # the settings stay
    assert here[plain].prompt == "1girl, smile"
    there = read_history(db, ALICE, guild_id=SERVER, age_restricted_here=True).entries
    assert [e.prompt for e in there] == ["1girl, smile", "1girl, nsfw"]


@pytest.mark.parametrize("limit", [0, -1, PAGE_SIZE_MAX + 1])
def test_page_size_is_bounded(db: Database, limit: int) -> None:
    with pytest.raises(ValueError, match="1 to 10 jobs"):
        read_history(db, ALICE, guild_id=SERVER, limit=limit)


def test_one_cursor_at_a_time(db: Database) -> None:
    with pytest.raises(ValueError, match="not both"):
        read_history(db, ALICE, guild_id=SERVER, before=5, after=2)


async def test_history_page_runs_off_the_event_loop(db: Database) -> None:
    job_id = _add(JobStore(db))
    page = await history_page(db, ALICE, guild_id=SERVER, limit=PAGE_SIZE_MAX)
    assert _ids(page) == [job_id]
