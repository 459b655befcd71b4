"""Speed-ups on the tiny pipeline, on the CPU: settings, what is applied, and the guard."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from pydantic import ValidationError

from bot.config import SpeedSettings, parse_size
from bot.engine import Engine, RenderJob
from bot.engine.guard import compare_outputs
from bot.engine.loading import Placement
from bot.engine.optimize import (
    AppliedOptimizations,
    apply_optimizations,
    is_compiled,
    set_attention_backend,
    speed_settings,
    warm_up,
)
from tests.support.tiny_sdxl import build_tiny_pipeline

CPU = torch.device("cpu")
# Everything on, compiled with dynamo's "eager" backend: the code paths run in seconds.
FORCED = SpeedSettings(apply_on_cpu=True, compile_backend="eager", compile_vae=False)


@pytest.fixture(autouse=True)
def _restore_compiler() -> Iterator[None]:
    yield
    torch.compiler.set_stance("default")
    torch._dynamo.reset()
    set_attention_backend("auto")


def make_engine(seed: int = 0) -> Engine:
    return Engine(
        build_tiny_pipeline(seed=seed),
        placement=Placement(CPU, torch.float32),
        model_name="tiny",
    )


def job(seed: int = 1234, prompt: str = "1girl, solo, long hair") -> RenderJob:
    return RenderJob(
        prompt=prompt,
        negative_prompt="lowres, (bad)",
        width=64,
        height=64,
        steps=3,
        cfg=7.0,
        sampler="Euler a",
        seeds=(seed,),
    )


def render(engine: Engine, the_job: RenderJob) -> tuple[torch.Tensor, Any]:
    """Final latents (as the VAE receives them) and the image."""
    box: dict[str, torch.Tensor] = {}

    def hook(_module: Any, args: tuple[Any, ...]) -> None:
        box["latents"] = args[0].detach().clone()

    handle = engine.pipeline.vae.post_quant_conv.register_forward_pre_hook(hook)
    try:
        image = engine.render(the_job).images[0].image
    finally:
        handle.remove()
    return box["latents"], image


def attention_modules(module: torch.nn.Module) -> list[Any]:
    from diffusers.models.attention_processor import Attention

    return [m for m in module.modules() if isinstance(m, Attention)]


def test_defaults_are_the_documented_cuda_configuration() -> None:
    s = SpeedSettings()
    assert (s.enabled, s.channels_last, s.fuse_qkv, s.compile_unet, s.compile_vae) == (
        True,
        True,
        True,
        True,
        True,
    )
    # What measured fastest on an H200 and passed the guard (BENCHMARKS.md).
    assert (s.compile_mode, s.inductor_flags, s.cuda_graphs) == ("default", False, False)
    assert s.inductor_mode == "default"
    assert s.attention == "auto"
    assert s.pad_prompt_chunks == 2
    assert s.unwarmed_shapes == "eager"
    assert not s.apply_on_cpu
    autotune = SpeedSettings(compile_mode="max-autotune")
    assert autotune.inductor_mode == "max-autotune-no-cudagraphs"
    assert autotune.model_copy(update={"cuda_graphs": True}).inductor_mode == "max-autotune"
    assert s.model_copy(update={"cuda_graphs": True}).inductor_mode == "reduce-overhead"
    assert s.sizes == [(896, 1152), (832, 1216), (1024, 1024)]


@pytest.mark.parametrize(
    "bad",
    [
        {"turbo": True},
        {"channels_last": "yes"},
        {"pad_prompt_chunks": -1},
        {"attention": "xformers"},
        {"warmup_sizes": ["830x1216"]},
        {"warmup_sizes": ["832*1216"]},
        {"warmup_batch_sizes": [0]},
    ],
)
def test_settings_reject_unknown_keys_wrong_types_and_bad_sizes(bad: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        SpeedSettings.model_validate(bad)


def test_parse_size() -> None:
    assert parse_size("832x1216") == (832, 1216)
    with pytest.raises(ValueError, match="multiples of 8"):
        parse_size("8x8")


def test_speed_settings_come_from_the_engine_speed_section() -> None:
    from bot.config import load_settings

    assert speed_settings(load_settings(environ={})) == SpeedSettings()
    settings = load_settings(environ={"ANIMAGINE_ENGINE__SPEED__CHANNELS_LAST": "false"})
    assert speed_settings(settings).channels_last is False


def test_cpu_keeps_the_plain_path_by_default() -> None:
    pipe = build_tiny_pipeline()
    forward = pipe.unet.forward
    applied = apply_optimizations(pipe, CPU, SpeedSettings())
    assert not applied.any
    assert "CPU keeps the plain path" in applied.describe()
    conv = pipe.unet.conv_in.weight
    assert conv.is_contiguous()
    assert not conv.is_contiguous(memory_format=torch.channels_last)
    assert not any(getattr(m, "fused_projections", False) for m in attention_modules(pipe.unet))
    assert pipe.unet.forward == forward
    assert not is_compiled(pipe.unet)
    assert not is_compiled(pipe.vae.decoder)
    assert not pipe.unet._forward_pre_hooks


def test_disabled_applies_nothing_even_when_forced() -> None:
    pipe = build_tiny_pipeline()
    applied = apply_optimizations(pipe, CPU, FORCED.model_copy(update={"enabled": False}))
    assert not applied.any
    assert "disabled in config" in applied.describe()


def test_forced_on_cpu_applies_channels_last_and_fused_projections() -> None:
    pipe = build_tiny_pipeline()
    settings = FORCED.model_copy(update={"compile_unet": False})
    applied = apply_optimizations(pipe, CPU, settings)
    assert applied.channels_last
    assert applied.fused_qkv
    assert not applied.compiled
    for module in (pipe.unet.conv_in, pipe.vae.decoder.conv_in):
        assert module.weight.is_contiguous(memory_format=torch.channels_last)
    for module in (pipe.unet, pipe.vae):
        attns = attention_modules(module)
        assert attns
        assert all(a.fused_projections for a in attns)
        assert all(type(a.processor).__name__ == "FusedAttnProcessor2_0" for a in attns)
    assert applied.prompt_chunks == 0  # padding only serves a compiled UNet
    assert applied.describe() == "speed-ups on cpu: channels_last, fused QKV"


def test_guard_passes_for_the_optimized_engine_and_fails_for_real_changes() -> None:
    plain, fast, perturbed = make_engine(), make_engine(), make_engine()
    applied = apply_optimizations(
        fast.pipeline, CPU, FORCED.model_copy(update={"compile_unet": False})
    )
    assert applied.channels_last
    assert applied.fused_qkv
    ref_latents, ref_image = render(plain, job())
    latents, image = render(fast, job())
    result = compare_outputs(ref_latents, latents, ref_image, image)
    assert result.passed, result.describe()
    assert result.rel_error < 1e-4

    other_latents, other_image = render(plain, job(seed=4321))
    other_seed = compare_outputs(ref_latents, other_latents, ref_image, other_image)
    assert not other_seed.passed
    assert other_seed.rel_error > 0.5

    with torch.no_grad():
        weight = perturbed.pipeline.unet.conv_out.weight
        weight.mul_(1.0 + 0.05 * torch.randn_like(weight))
    changed_latents, changed_image = render(perturbed, job())
    changed = compare_outputs(ref_latents, changed_latents, ref_image, changed_image)
    assert not changed.passed
    assert "FAIL" in changed.describe()


def test_compiled_unet_with_padded_prompts_draws_the_same_image(
    caplog: pytest.LogCaptureFixture,
) -> None:
    plain, fast = make_engine(), make_engine()
    applied = apply_optimizations(fast.pipeline, CPU, FORCED)
    unet = fast.pipeline.unet
    assert applied.compiled == ("unet",)
    assert is_compiled(unet)
    assert applied.prompt_chunks == 2
    seen: list[tuple[int, bool]] = []

    def spy(_m: Any, _args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        mask = kwargs.get("encoder_attention_mask")
        seen.append((kwargs["encoder_hidden_states"].shape[1], mask is not None))

    unet.register_forward_pre_hook(spy, with_kwargs=True)  # runs after the padding hook
    with caplog.at_level(logging.INFO, logger="bot.engine.optimize"):
        report = warm_up(fast, applied, [(64, 64)], batch_sizes=[1])
    assert [(w, h, b) for w, h, b, _ in report.shapes] == [(64, 64, 1)]
    assert "compiling for 64x64, 1 image(s) per call (1/1)" in caplog.text
    assert "warm-up done" in caplog.text

    ref_latents, ref_image = render(plain, job())
    latents, image = render(fast, job())
    assert seen[-1] == (154, True)  # one chunk, padded to two and masked
    result = compare_outputs(ref_latents, latents, ref_image, image)
    assert result.passed, result.describe()

    long_prompt = ", ".join(["1girl"] * 40)  # 4 chunks of the character-level tokenizer
    ref_latents, ref_image = render(plain, job(prompt=long_prompt))
    latents, image = render(fast, job(prompt=long_prompt))
    assert seen[-1] == (4 * 77, False)  # longer than the padding: left alone
    assert compare_outputs(ref_latents, latents, ref_image, image).passed


def test_warm_up_does_nothing_without_compiled_modules() -> None:
    applied = AppliedOptimizations("cpu")
    assert warm_up(object(), applied).skipped == "nothing compiled"


def test_attention_backend_is_put_first_and_restored() -> None:
    from torch.nn.attention import SDPBackend

    before = torch._C._get_sdp_priority_order()
    set_attention_backend("math")
    assert torch._C._get_sdp_priority_order()[0] == int(SDPBackend.MATH)
    set_attention_backend("cudnn")
    assert torch._C._get_sdp_priority_order()[0] == int(SDPBackend.CUDNN_ATTENTION)
    set_attention_backend("auto")
    assert torch._C._get_sdp_priority_order() == before


# torch 2.13's inductor imports torch.utils.mkldnn, which uses torch.jit.script_method.
@pytest.mark.filterwarnings("ignore:`torch.jit.script_method` is deprecated:DeprecationWarning")
def test_compile_cache_dir_points_inductor_there(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import torch._inductor.config as inductor_config

    for name in ("TORCHINDUCTOR_CACHE_DIR", "TRITON_CACHE_DIR", "TORCHINDUCTOR_FX_GRAPH_CACHE"):
        monkeypatch.delenv(name, raising=False)
    saved = inductor_config.save_config()
    try:
        settings = SpeedSettings(
            apply_on_cpu=True,
            channels_last=False,
            fuse_qkv=False,
            compile_vae=False,
            compile_mode="max-autotune",
            inductor_flags=True,
            compile_cache_dir=str(tmp_path / "cache"),
        )
        applied = apply_optimizations(build_tiny_pipeline(), CPU, settings)
        assert applied.cache_dir == str(tmp_path / "cache")
        assert (tmp_path / "cache").is_dir()
        assert os.environ["TORCHINDUCTOR_CACHE_DIR"] == str(tmp_path / "cache")
        assert os.environ["TRITON_CACHE_DIR"] == str(tmp_path / "cache" / "triton")
        assert inductor_config.fx_graph_cache
        assert inductor_config.conv_1x1_as_mm
        assert not inductor_config.epilogue_fusion
        assert applied.compile_mode == "max-autotune-no-cudagraphs"
    finally:
        inductor_config.load_config(saved)


def test_engine_load_applies_the_speed_settings(engine: Engine) -> None:
    assert engine.optimizations.device == "cpu"
    assert not engine.optimizations.any
    assert "CPU keeps the plain path" in engine.optimizations.describe()


def test_a_failed_compilation_is_logged_and_leaves_the_plain_path(
    caplog: pytest.LogCaptureFixture,
) -> None:
    applied = apply_optimizations(build_tiny_pipeline(), CPU, FORCED)

    class Broken:
        def render(self, _job: Any) -> Any:
            raise RuntimeError("inductor exploded")

    with caplog.at_level(logging.ERROR, logger="bot.engine.optimize"):
        report = warm_up(Broken(), applied, [(64, 64)])
    assert report.skipped == "failed: RuntimeError: inductor exploded"
    assert "every job runs eagerly" in caplog.text
