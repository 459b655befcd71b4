"""Loading the model the ways users hold it, through the same code path the bot uses."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from bot.config import load_settings
from bot.engine import DeviceError, Engine, ModelLoadError, RenderJob
from bot.engine.loading import SourceKind, classify_source, resolve_placement
from tests.conftest import tiny_settings
from tests.support.ldm_checkpoint import write_single_file_checkpoint
from tests.support.tiny_sdxl import build_tiny_pipeline, save_tiny_model

JOB = RenderJob("1girl, solo", "lowres", 64, 64, 2, 7.0, "Euler a", (7,))


def render(engine: Engine) -> np.ndarray:
    return np.asarray(engine.render(JOB).images[0].image, dtype=np.int16)


def test_full_precision_folder_and_fp16_variant_files_load(tiny_model_dir: Path) -> None:
    plain = Engine.load(tiny_settings(tiny_model_dir))
    variant = Engine.load(tiny_settings(tiny_model_dir, ANIMAGINE_MODEL__VARIANT="fp16"))
    assert plain.pipeline.unet.dtype == variant.pipeline.unet.dtype == torch.float32
    # The fp16 files round the weights: close to, but not the same as, the float32 files.
    weight = "conv_in.weight"
    a = plain.pipeline.unet.state_dict()[weight]
    b = variant.pipeline.unet.state_dict()[weight]
    assert torch.equal(b, a.half().float())
    assert render(plain).shape == render(variant).shape == (64, 64, 3)


def test_folder_with_only_variant_files_loads_without_asking(tmp_path: Path) -> None:
    folder = save_tiny_model(tmp_path, variant_only=True)
    assert not list(folder.glob("unet/diffusion_pytorch_model.safetensors"))
    engine = Engine.load(tiny_settings(folder))
    assert render(engine).std() > 0


def test_missing_variant_files_fall_back_to_full_precision(tmp_path: Path) -> None:
    folder = save_tiny_model(tmp_path, both=False)
    engine = Engine.load(tiny_settings(folder, ANIMAGINE_MODEL__VARIANT="fp16"))
    assert render(engine).std() > 0


def test_single_safetensors_file_loads_offline_with_a_local_config(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    pipe = build_tiny_pipeline(tmp=tmp_path / "tok")
    config = tmp_path / "config"
    pipe.save_pretrained(config)
    for weights in config.rglob("*.safetensors"):
        weights.unlink()
    checkpoint = tmp_path / "animagine-xl-3.1.safetensors"
    write_single_file_checkpoint(pipe, checkpoint)
    assert classify_source(str(checkpoint)) is SourceKind.SINGLE_FILE
    engine = Engine.load(tiny_settings(checkpoint, ANIMAGINE_MODEL__SINGLE_FILE_CONFIG=str(config)))
    reference = pipe.unet.state_dict()
    for key, value in engine.pipeline.unet.state_dict().items():
        assert torch.equal(value, reference[key]), key
    assert render(engine).std() > 0


def test_separate_vae_from_a_folder_replaces_the_models_own(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    vae_dir = tmp_path / "vae"
    shutil.copytree(tiny_model_dir / "vae", vae_dir)
    engine = Engine.load(
        tiny_settings(
            tiny_model_dir, ANIMAGINE_MODEL__VARIANT="fp16", ANIMAGINE_MODEL__VAE=str(vae_dir)
        )
    )
    plain = Engine.load(tiny_settings(tiny_model_dir))
    # The VAE came from the full-precision folder, not from the fp16 files.
    for key, value in engine.pipeline.vae.state_dict().items():
        assert torch.equal(value, plain.pipeline.vae.state_dict()[key]), key


@pytest.mark.parametrize(
    ("source", "message"),
    [
        ("/nonexistent/animagine", "no such file or folder"),
        ("./models/animagine.safetensors", "no such file or folder"),
        ("not a repo id", "not a Hugging Face repo id"),
    ],
)
def test_missing_model_names_the_source(source: str, message: str, tmp_path: Path) -> None:
    with pytest.raises(ModelLoadError, match=message) as info:
        Engine.load(tiny_settings(tmp_path, ANIMAGINE_MODEL__SOURCE=f'"{source}"'))
    assert source in str(info.value)


def test_pickle_checkpoints_are_refused(tmp_path: Path) -> None:
    ckpt = tmp_path / "model.ckpt"
    ckpt.write_bytes(b"\x80\x04not really")
    with pytest.raises(ModelLoadError, match=r"model\.ckpt: pickle checkpoints"):
        Engine.load(tiny_settings(ckpt))


def test_broken_weights_give_one_clear_error(tiny_model_dir: Path, tmp_path: Path) -> None:
    broken = tmp_path / "broken"
    shutil.copytree(tiny_model_dir, broken)
    (broken / "unet" / "diffusion_pytorch_model.safetensors").write_bytes(b"garbage")
    with pytest.raises(ModelLoadError) as info:
        Engine.load(tiny_settings(broken))
    assert str(broken) in str(info.value)
    assert "diffusers folder" in str(info.value)


def test_folder_without_model_index_is_not_a_model(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelLoadError, match=r"no model_index\.json"):
        Engine.load(tiny_settings(tmp_path / "empty"))


def test_hub_repo_missing_from_cache_offline_names_the_repo(tmp_path: Path) -> None:
    settings = tiny_settings(
        tmp_path,
        ANIMAGINE_MODEL__SOURCE="cagliostrolab/animagine-xl-3.1",
        ANIMAGINE_MODEL__OFFLINE="true",
        ANIMAGINE_MODEL__CACHE_DIR=str(tmp_path / "cache"),
    )
    with pytest.raises(ModelLoadError, match=r"cagliostrolab/animagine-xl-3\.1") as info:
        Engine.load(settings)
    assert "hub repo" in str(info.value)


def test_cuda_without_a_gpu_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    settings = load_settings(environ={"ANIMAGINE_ENGINE__DEVICE": "cuda"})
    with pytest.raises(DeviceError, match="no CUDA GPU"):
        resolve_placement(settings.engine)


def test_auto_device_without_gpu_is_cpu_float32(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    placement = resolve_placement(load_settings(environ={}).engine)
    assert placement.device.type == "cpu"
    assert placement.dtype == torch.float32


def test_auto_device_with_gpu_is_cuda_float16(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    placement = resolve_placement(load_settings(environ={}).engine)
    assert placement.device.type == "cuda"
    assert placement.dtype == torch.float16
