"""Waiting jobs: the queue interface and the embedded fair queue."""

from bot.queue.base import JobQueue, QueueEntry, QueueFull
from bot.queue.fair import FairQueue

__all__ = ["FairQueue", "JobQueue", "QueueEntry", "QueueFull"]
