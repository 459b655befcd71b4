"""A single-file SDXL checkpoint in the original layout loads offline into the same pipeline."""

from __future__ import annotations

import socket
from pathlib import Path

import huggingface_hub.constants
import numpy as np
import pytest
import torch
from diffusers import StableDiffusionXLPipeline
from diffusers.loaders.single_file_utils import infer_diffusers_model_type
from safetensors.torch import load_file

from tests.support import tiny_sdxl
from tests.support.ldm_checkpoint import CLIP_L, OPEN_CLIP, UNET, VAE, write_single_file_checkpoint

COMPONENTS = ("unet", "vae", "text_encoder", "text_encoder_2")


@pytest.fixture
def original(tmp_path: Path) -> StableDiffusionXLPipeline:
    # diffusers tells CLIP-L from OpenCLIP bigG in a single file by hidden size (768 vs 1280
    # in SDXL); the tiny encoders differ in width for the same reason.
    assert tiny_sdxl.TEXT_HIDDEN_1 != tiny_sdxl.TEXT_HIDDEN_2
    return tiny_sdxl.build_tiny_pipeline(tmp=tmp_path / "tokenizers")


@pytest.fixture
def no_network(monkeypatch: pytest.MonkeyPatch) -> list[object]:
    """Offline mode, and any attempt to resolve or connect is recorded and refused."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    attempts: list[object] = []

    def refuse(*args: object, **kwargs: object) -> None:
        attempts.append(args)
        raise OSError("network access in an offline test")

    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    monkeypatch.setattr(socket.socket, "connect", refuse)
    return attempts


def _public(config: dict[str, object]) -> dict[str, object]:
    return {k: v for k, v in config.items() if not k.startswith("_")}


def _render(pipe: StableDiffusionXLPipeline) -> np.ndarray:
    generator = torch.Generator("cpu").manual_seed(1)
    out = pipe(
        "a cat", height=64, width=64, num_inference_steps=2, generator=generator, output_type="np"
    )
    return np.asarray(out.images)


def test_original_layout_checkpoint_loads_offline_into_the_same_pipeline(
    tmp_path: Path, original: StableDiffusionXLPipeline, no_network: list[object]
) -> None:
    checkpoint = tmp_path / "tiny-sdxl.safetensors"
    write_single_file_checkpoint(original, checkpoint)
    config = tmp_path / "config"
    original.save_pretrained(config, safe_serialization=True)
    for weights in config.rglob("*.safetensors"):  # configs and tokenizers only
        weights.unlink()

    state = load_file(str(checkpoint))
    assert infer_diffusers_model_type(state) == "xl_base"
    assert all(k.startswith((UNET, VAE, CLIP_L, OPEN_CLIP)) for k in state)

    loaded = StableDiffusionXLPipeline.from_single_file(
        str(checkpoint), config=str(config), local_files_only=True, dtype=torch.float32
    )
    loaded.set_progress_bar_config(disable=True)

    assert no_network == []
    for name in COMPONENTS:
        want = getattr(original, name).state_dict()
        got = getattr(loaded, name).state_dict()
        assert got.keys() == want.keys(), name
        for key, tensor in want.items():
            assert got[key].dtype == torch.float32, (name, key)
            assert torch.equal(got[key], tensor), (name, key)
    assert type(loaded.scheduler) is type(original.scheduler)
    assert _public(loaded.scheduler.config) == _public(original.scheduler.config)
    assert loaded.tokenizer.get_vocab() == original.tokenizer.get_vocab()
    assert loaded.tokenizer_2.get_vocab() == original.tokenizer_2.get_vocab()

    np.testing.assert_array_equal(_render(loaded), _render(original))
