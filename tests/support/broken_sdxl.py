"""Tiny SDXL models whose VAE is damaged, saved in the diffusers layout users download.

A checkpoint can be broken in ways that still load: a VAE whose weights hold NaN (a failed
conversion or a corrupt download) decodes every latent to NaN; a VAE whose output layer
was zeroed (a bad merge or prune) decodes every latent to one flat colour. The engine must
fail such images with a reason, never post them. These models are the tiny pipeline of
:mod:`tests.support.tiny_sdxl` with one real layer damaged, loaded by the real loader.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import torch

from tests.support.tiny_sdxl import build_tiny_pipeline

Damage = Literal["nan", "flat"]


def save_broken_model(root: Path, damage: Damage) -> Path:
    """Save a tiny model under ``root/model`` (float32 files only) with its VAE damaged:

    * ``"nan"``: one weight of the decoder's last convolution is NaN, so every decoded
      pixel is NaN;
    * ``"flat"``: the decoder's last convolution has zero weights and a bias of -3, so
      every image decodes to -3 everywhere: after the 0-1 mapping, pure black.
    """
    target = root / "model"
    pipe = build_tiny_pipeline(tmp=root / "tokenizers")
    conv = pipe.vae.decoder.conv_out
    with torch.no_grad():
        if damage == "nan":
            conv.weight[0, 0, 0, 0] = float("nan")
        else:
            conv.weight.zero_()
            conv.bias.fill_(-3.0)
    pipe.save_pretrained(target, safe_serialization=True)
    return target
