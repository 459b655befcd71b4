"""A job's shape: one notion for cost, ETA and micro-batching."""

from __future__ import annotations

from bot.engine.job import RenderJob
from bot.request import HiresOptions
from bot.shape import JobShape


def test_a_render_jobs_shape_ignores_prompts_and_seeds_but_not_settings() -> None:
    def job(**changes: object) -> RenderJob:
        fields: dict[str, object] = {
            "prompt": "1girl",
            "negative_prompt": "",
            "width": 832,
            "height": 1216,
            "steps": 28,
            "cfg": 7.0,
            "sampler": "Euler a",
            "seeds": (1,),
        }
        fields.update(changes)
        return RenderJob(**fields)  # type: ignore[arg-type]

    base = job().shape
    assert base == JobShape(count=1, width=832, height=1216, steps=28, cfg=7.0, sampler="Euler a")
    assert job(prompt="other", seeds=(5, 6)).shape.batch_key == base.batch_key
    assert job(seeds=(5, 6)).shape.count == 2
    assert job(sampler="euler a").shape.sampler == "Euler a"
    assert job(cfg=5.0).shape.batch_key != base.batch_key
    hires = job(hires=HiresOptions(scale=1.5, strength=0.5)).shape
    assert hires.hires
    assert hires.batch_key != base.batch_key
    assert hires.batch_key[-1] == (1.5, 0.5)
