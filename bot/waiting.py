"""Waiting on an event with a time limit, in loops that are stopped by cancellation.

``asyncio.wait_for(event.wait(), t)`` on Python 3.11 can swallow a cancellation that
arrives as the event is set (CPython gh-86296, fixed in 3.12): the loop then never ends and
whoever awaits its task waits forever. ``asyncio.timeout`` does not have that flaw.
"""

from __future__ import annotations

import asyncio


async def wait_event(event: asyncio.Event, seconds: float) -> bool:
    """Wait until ``event`` is set or ``seconds`` pass; True when it was set."""
    try:
        async with asyncio.timeout(seconds):
            await event.wait()
    except TimeoutError:
        return False
    return True
