"""A job's shape: everything about a job but its prompts and seeds.

One notion for the three things that read it: the rate limits (what a job costs, see
:func:`bot.limits.image_cost`), the ETA model (:attr:`JobShape.work_units`) and
micro-batching (:attr:`JobShape.batch_key`: what jobs must share to run in one engine call).
A leaf module: it imports nothing of the bot.
"""

from __future__ import annotations

from dataclasses import dataclass

BatchKey = tuple[int, int, int, float, str, tuple[float, float] | None]

_MEGAPIXEL = 1_048_576


@dataclass(frozen=True, slots=True)
class JobShape:
    """Image count, size, steps, CFG, sampler and hires pass of a job."""

    count: int = 1
    width: int = 1024
    height: int = 1024
    steps: int = 28
    hires: bool = False
    hires_scale: float = 1.0
    hires_strength: float = 0.0
    cfg: float = 7.0
    sampler: str = "Euler a"  # canonical name (as :func:`bot.request.find_sampler` gives)

    @property
    def hires_steps(self) -> int:
        """Denoising steps of the hires pass (0 without one)."""
        if not self.hires:
            return 0
        return max(1, min(self.steps, int(self.steps * self.hires_strength)))

    @property
    def work_units(self) -> float:
        """Denoising steps times megapixels, over all images: what a job's time scales with."""
        megapixels = self.width * self.height / _MEGAPIXEL
        hires = self.hires_steps * self.hires_scale**2 if self.hires else 0.0
        return self.count * (self.steps + hires) * megapixels

    @property
    def batch_key(self) -> BatchKey:
        """What jobs must share to run in one pipeline call (prompts and counts need not)."""
        hires = (self.hires_scale, self.hires_strength) if self.hires else None
        return (self.width, self.height, self.steps, self.cfg, self.sampler, hires)
