"""Loading Animagine XL 3.1 the ways its users hold it.

Sources, told apart by :func:`classify_source`:

* a Hugging Face repo id (``cagliostrolab/animagine-xl-3.1``), optionally with a weight
  ``variant`` such as ``fp16``; downloads go through the Hugging Face cache, show progress,
  and honour offline mode;
* a local diffusers folder (``model_index.json`` inside), with or without variant files;
* a single ``.safetensors`` checkpoint as Civitai users hold it, converted by diffusers'
  single-file loader; with ``single_file_config`` naming a local diffusers folder, the
  component configs and tokenizers come from there and the hub is never reached.

An optional separate VAE (``madebyollin/sdxl-vae-fp16-fix``) replaces the model's own.
Every failure becomes one :class:`ModelLoadError` that names the source.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Any

import torch

from bot.config import EngineSettings, ModelSettings
from bot.errors import DeviceError, ModelLoadError

log = logging.getLogger(__name__)

_REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


class SourceKind(Enum):
    HUB = "hub repo"
    FOLDER = "diffusers folder"
    SINGLE_FILE = "single-file checkpoint"


@dataclass(frozen=True)
class Placement:
    """Where the weights live and in what precision."""

    device: torch.device
    dtype: torch.dtype


def resolve_placement(settings: EngineSettings) -> Placement:
    """CUDA in fp16 by default; CPU in float32 when asked or when there is no GPU."""
    cuda = torch.cuda.is_available()
    if settings.device == "cuda" and not cuda:
        raise DeviceError(
            "engine.device is 'cuda' but no CUDA GPU is available "
            '(set engine.device = "cpu" to run slowly on the CPU)'
        )
    device = torch.device(
        "cuda" if settings.device == "cuda" or (settings.device == "auto" and cuda) else "cpu"
    )
    if settings.dtype == "auto":
        dtype = torch.float16 if device.type == "cuda" else torch.float32
    else:
        dtype = getattr(torch, settings.dtype)
    if device.type == "cpu" and dtype == torch.float16:
        raise DeviceError("float16 is not supported on the CPU: use float32 or bfloat16")
    return Placement(device, dtype)


def classify_source(source: str) -> SourceKind:
    """Tell a hub repo id from a local folder or a single checkpoint file."""
    path = Path(source).expanduser()
    if path.is_dir():
        return SourceKind.FOLDER
    if path.is_file():
        if path.suffix.lower() == ".safetensors":
            return SourceKind.SINGLE_FILE
        if path.suffix.lower() in {".ckpt", ".pt", ".bin"}:
            raise ModelLoadError(
                f"{source}: pickle checkpoints can run arbitrary code and are not loaded; "
                "convert it to .safetensors"
            )
        raise ModelLoadError(f"{source}: not a .safetensors checkpoint or a diffusers folder")
    if _REPO_ID.match(source) and not source.startswith((".", "/", "~")):
        return SourceKind.HUB
    raise ModelLoadError(f"{source}: no such file or folder, and not a Hugging Face repo id")


def _variant_files(folder: Path, variant: str) -> bool:
    return any(folder.glob(f"*/*.{variant}.safetensors")) or any(folder.glob(f"*/*.{variant}.bin"))


def _folder_variant(folder: Path, variant: str) -> str | None:
    """The variant to ask a local folder for: the configured one when its files exist,
    ``fp16`` when the folder holds only fp16 files, else none."""
    if not (folder / "model_index.json").is_file():
        raise ModelLoadError(f"{folder}: not a diffusers folder (no model_index.json)")
    if variant:
        if _variant_files(folder, variant):
            return variant
        log.warning("%s has no %s variant files; loading its full-precision files", folder, variant)
        return None
    has_plain = any(folder.glob("unet/diffusion_pytorch_model.safetensors")) or any(
        folder.glob("unet/diffusion_pytorch_model.bin")
    )
    if not has_plain and _variant_files(folder, "fp16"):
        return "fp16"
    return None


@contextmanager
def _offline(enabled: bool) -> Iterator[None]:
    """Honour ``model.offline`` the way huggingface_hub honours ``HF_HUB_OFFLINE``."""
    if not enabled:
        yield
        return
    old = os.environ.get("HF_HUB_OFFLINE")
    os.environ["HF_HUB_OFFLINE"] = "1"
    try:
        yield
    finally:
        if old is None:
            os.environ.pop("HF_HUB_OFFLINE", None)
        else:
            os.environ["HF_HUB_OFFLINE"] = old


def _reason(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    first = text[0] if text else type(exc).__name__
    # diffusers points at a stack trace the one-line error does not show.
    first = first.replace(" Please check out the root cause in the stacktrace above.", "")
    return f"{type(exc).__name__}: {first}"


def _hub_kwargs(model: ModelSettings) -> dict[str, Any]:
    kwargs: dict[str, Any] = {}
    if model.cache_dir:
        kwargs["cache_dir"] = model.cache_dir
    if model.offline:
        kwargs["local_files_only"] = True
    return kwargs


def load_vae(source: str, model: ModelSettings, dtype: torch.dtype) -> Any:
    """A separate VAE from a hub repo, a folder, or a single file."""
    from diffusers import AutoencoderKL

    try:
        kind = classify_source(source)
        with _offline(model.offline):
            if kind is SourceKind.SINGLE_FILE:
                return AutoencoderKL.from_single_file(source, dtype=dtype, **_hub_kwargs(model))
            return AutoencoderKL.from_pretrained(source, dtype=dtype, **_hub_kwargs(model))
    except ModelLoadError as exc:
        raise ModelLoadError(f"cannot load VAE {exc}") from None
    except Exception as exc:
        raise ModelLoadError(f"cannot load VAE {source}: {_reason(exc)}") from exc


def load_taesd(source: str, model: ModelSettings, placement: Placement) -> Any:
    """TAESD (diffusers' ``AutoencoderTiny``, ``madebyollin/taesdxl``) for live previews,
    from a hub repo or a local folder, honouring ``model.cache_dir`` and ``model.offline``,
    on the pipeline's device and dtype (float32 on the CPU), in eval mode."""
    from diffusers import AutoencoderTiny

    try:
        kind = classify_source(source)
    except ModelLoadError as exc:
        raise ModelLoadError(f"cannot load the preview decoder: {exc}") from None
    if kind is SourceKind.SINGLE_FILE:
        raise ModelLoadError(f"cannot load the preview decoder {source}: not a folder or repo id")
    try:
        with _offline(model.offline):
            taesd = AutoencoderTiny.from_pretrained(
                source, dtype=placement.dtype, **_hub_kwargs(model)
            )
    except Exception as exc:
        raise ModelLoadError(f"cannot load the preview decoder {source}: {_reason(exc)}") from exc
    taesd.to(placement.device)
    taesd.eval()
    taesd.requires_grad_(False)
    return taesd


def load_pipeline(model: ModelSettings, placement: Placement) -> Any:
    """Load the SDXL text-to-image pipeline described by ``model`` onto ``placement``."""
    from diffusers import StableDiffusionXLPipeline

    source = model.source
    kind = classify_source(source)
    kwargs: dict[str, Any] = {"dtype": placement.dtype, **_hub_kwargs(model)}
    if model.vae:
        kwargs["vae"] = load_vae(model.vae, model, placement.dtype)
    log.info("loading %s %s in %s on %s", kind.value, source, placement.dtype, placement.device)
    try:
        with _offline(model.offline):
            if kind is SourceKind.SINGLE_FILE:
                if model.single_file_config:
                    kwargs["config"] = model.single_file_config
                pipe = StableDiffusionXLPipeline.from_single_file(source, **kwargs)
            elif kind is SourceKind.FOLDER:
                variant = _folder_variant(Path(source).expanduser(), model.variant)
                pipe = StableDiffusionXLPipeline.from_pretrained(source, variant=variant, **kwargs)
            else:
                pipe = StableDiffusionXLPipeline.from_pretrained(
                    source,
                    variant=model.variant or None,
                    revision=model.revision or None,
                    **kwargs,
                )
    except ModelLoadError:
        raise
    except Exception as exc:
        raise ModelLoadError(f"cannot load model {source} ({kind.value}): {_reason(exc)}") from exc
    pipe.to(placement.device)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def load_tokenizer(model: ModelSettings) -> Any:
    """The first CLIP tokenizer of the model, reading tokenizer files only (no weights).

    Both SDXL tokenizers share one vocabulary, so this one counts chunks for both.
    """
    from transformers import CLIPTokenizer

    source = model.source
    kind = classify_source(source)
    where = source
    if kind is SourceKind.SINGLE_FILE:
        if not model.single_file_config:
            raise ModelLoadError(
                f"{source}: a single-file checkpoint has no tokenizer files; "
                "set model.single_file_config to a local diffusers folder"
            )
        where = model.single_file_config
    kwargs = _hub_kwargs(model)
    if kind is SourceKind.HUB and model.revision:
        kwargs["revision"] = model.revision
    try:
        with _offline(model.offline):
            tokenizer = CLIPTokenizer.from_pretrained(where, subfolder="tokenizer", **kwargs)
    except Exception as exc:
        raise ModelLoadError(f"cannot load the tokenizer of {source}: {_reason(exc)}") from exc
    if len(tokenizer) <= 2:  # transformers may hand back an empty one when files are missing
        raise ModelLoadError(f"cannot load the tokenizer of {source}: its files are missing")
    return tokenizer
