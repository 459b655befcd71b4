"""The fair queue: members take turns, priority classes first, bounded length."""

from __future__ import annotations

import asyncio

import pytest

from bot.queue import FairQueue, QueueEntry, QueueFull


def drain(queue: FairQueue) -> list[int]:
    out = []
    while (entry := queue.get_nowait()) is not None:
        out.append(entry.job_id)
    return out


def test_one_members_ten_jobs_do_not_hold_back_anothers_one() -> None:
    queue = FairQueue()
    for job in range(1, 11):
        queue.put(QueueEntry(job, "alice"))
    queue.put(QueueEntry(100, "bob"))
    order = [e.job_id for e in queue.order()]
    assert order[:3] == [1, 100, 2]
    assert drain(queue) == order


def test_round_robin_across_three_members() -> None:
    queue = FairQueue()
    for job, owner in [(1, "a"), (2, "a"), (3, "a"), (4, "b"), (5, "b"), (6, "c")]:
        queue.put(QueueEntry(job, owner))
    assert drain(queue) == [1, 4, 6, 2, 5, 3]


def test_a_member_who_arrives_later_waits_one_turn_at_most() -> None:
    queue = FairQueue()
    for job in (1, 2, 3):
        queue.put(QueueEntry(job, "a"))
    assert queue.get_nowait() == QueueEntry(1, "a")
    queue.put(QueueEntry(9, "b"))
    assert drain(queue) == [2, 9, 3]


def test_priority_class_is_served_first_and_round_robin_within() -> None:
    queue = FairQueue()
    queue.put(QueueEntry(1, "plain"))
    queue.put(QueueEntry(2, "vip1", priority=10))
    queue.put(QueueEntry(3, "vip1", priority=10))
    queue.put(QueueEntry(4, "vip2", priority=10))
    assert drain(queue) == [2, 4, 3, 1]


def test_bounded_length_refuses_with_a_clear_message_unless_forced() -> None:
    queue = FairQueue(max_length=2)
    queue.put(QueueEntry(1, "a"))
    queue.put(QueueEntry(2, "b"))
    with pytest.raises(QueueFull, match="the queue is full"):
        queue.put(QueueEntry(3, "c"))
    queue.put(QueueEntry(3, "c"), force=True)
    assert len(queue) == 3


def test_resumed_job_goes_first_and_removed_jobs_vanish() -> None:
    queue = FairQueue()
    queue.put(QueueEntry(1, "a"))
    queue.put(QueueEntry(2, "a"))
    queue.put(QueueEntry(3, "b"))
    queue.put_front(QueueEntry(7, "b"))
    assert queue.remove(2)
    assert not queue.remove(42)
    assert [e.job_id for e in queue.order()] == [7, 1, 3]
    assert drain(queue) == [7, 1, 3]
    assert len(queue) == 0


async def test_get_waits_for_a_job() -> None:
    queue = FairQueue()
    waiter = asyncio.create_task(queue.get())
    await asyncio.sleep(0.01)
    assert not waiter.done()
    queue.put(QueueEntry(5, "a"))
    assert (await asyncio.wait_for(waiter, 1)).job_id == 5
