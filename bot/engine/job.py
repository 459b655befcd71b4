"""What the engine renders: a request made concrete (a leaf: no torch, no pipeline)."""

from __future__ import annotations

from dataclasses import dataclass

from bot.request import HiresOptions, ImagePrompt, find_sampler, hires_size
from bot.shape import JobShape


@dataclass(frozen=True)
class RenderJob:
    """A request made concrete: final prompts after presets, and one seed per image."""

    prompt: str
    negative_prompt: str
    width: int
    height: int
    steps: int
    cfg: float
    sampler: str
    seeds: tuple[int, ...]
    hires: HiresOptions | None = None
    extra_params: tuple[tuple[str, str], ...] = ()
    image: ImagePrompt | None = None
    """img2img: the stored input image (the engine is handed its pixels) and strength."""

    @property
    def shape(self) -> JobShape:
        """Everything but the prompts and seeds (the sampler by its canonical name)."""
        return JobShape(
            count=len(self.seeds),
            width=self.width,
            height=self.height,
            steps=self.steps,
            hires=self.hires is not None,
            hires_scale=1.0 if self.hires is None else self.hires.scale,
            hires_strength=0.0 if self.hires is None else self.hires.strength,
            cfg=self.cfg,
            sampler=find_sampler(self.sampler),
        )

    @property
    def output_size(self) -> tuple[int, int]:
        if self.hires is None:
            return self.width, self.height
        return hires_size(self.width, self.height, self.hires.scale)

    @property
    def base_steps(self) -> int:
        """Denoising steps of the first pass: all of them from noise; from an input image
        (img2img), ``steps x strength`` rounded down as diffusers runs them (0: the input
        image only goes through the VAE)."""
        if self.image is None:
            return self.steps
        return min(int(self.steps * self.image.strength), self.steps)

    @property
    def hires_steps(self) -> int:
        return self.shape.hires_steps
