"""The embedded queue: round-robin across members, priority classes first, bounded.

Each owner (a member in a server) has a line of their own jobs. Owners take turns: the next
job is the first job of the owner whose turn it is, after which that owner goes to the back
of the rotation. So one member's ten jobs do not hold back another member's one: the other
member waits at most one job of each owner ahead of them. Higher priority classes (from
config, by role) are served before lower ones, round-robin within each class.
"""

from __future__ import annotations

import asyncio
from collections import deque
from itertools import count

from bot.queue.base import QueueEntry, QueueFull


class FairQueue:
    """In-memory fair queue; the database remains the durable record."""

    def __init__(self, max_length: int = 100) -> None:
        self.max_length = max_length
        self._lines: dict[str, deque[QueueEntry]] = {}
        # Rotation: owner -> turn number; the smallest turn (within the top priority) goes next.
        self._turns: dict[str, int] = {}
        self._priority: dict[str, int] = {}
        self._ticket = count()
        self._front: deque[QueueEntry] = deque()
        self._ready = asyncio.Event()

    def __len__(self) -> int:
        return len(self._front) + sum(len(line) for line in self._lines.values())

    def _wake(self) -> None:
        if len(self):
            self._ready.set()
        else:
            self._ready.clear()

    def put(self, entry: QueueEntry, *, force: bool = False) -> None:
        if len(self) >= self.max_length and not force:
            raise QueueFull(self.max_length)
        line = self._lines.setdefault(entry.owner, deque())
        if line:
            self._priority[entry.owner] = max(self._priority[entry.owner], entry.priority)
        else:
            self._turns[entry.owner] = next(self._ticket)
            self._priority[entry.owner] = entry.priority
        line.append(entry)
        self._wake()

    def put_front(self, entry: QueueEntry) -> None:
        self._front.append(entry)
        self._wake()

    def _next_owner(self) -> str | None:
        if not self._turns:
            return None
        return min(self._turns, key=lambda o: (-self._priority[o], self._turns[o]))

    def get_nowait(self) -> QueueEntry | None:
        if self._front:
            entry = self._front.popleft()
        else:
            owner = self._next_owner()
            if owner is None:
                return None
            line = self._lines[owner]
            entry = line.popleft()
            if line:
                self._turns[owner] = next(self._ticket)
            else:
                del self._lines[owner], self._turns[owner], self._priority[owner]
        self._wake()
        return entry

    async def get(self) -> QueueEntry:
        while True:
            entry = self.get_nowait()
            if entry is not None:
                return entry
            await self._ready.wait()

    def remove(self, job_id: int) -> bool:
        for entry in self._front:
            if entry.job_id == job_id:
                self._front.remove(entry)
                self._wake()
                return True
        for owner, line in self._lines.items():
            for entry in line:
                if entry.job_id == job_id:
                    line.remove(entry)
                    if not line:
                        del self._lines[owner], self._turns[owner], self._priority[owner]
                    self._wake()
                    return True
        return False

    def order(self) -> list[QueueEntry]:
        """Simulate the rotation without changing it."""
        result = list(self._front)
        lines = {o: deque(line) for o, line in self._lines.items()}
        turns = dict(self._turns)
        ticket = max(turns.values(), default=0) + 1
        while turns:
            owner = min(turns, key=lambda o: (-self._priority[o], turns[o]))
            result.append(lines[owner].popleft())
            if lines[owner]:
                turns[owner] = ticket
                ticket += 1
            else:
                del turns[owner]
        return result
