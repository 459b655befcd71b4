"""Tiny SDXL pipelines with random weights, saved in the layouts users download.

The components follow ``shared/reference/tiny-models.md``: a four-level VAE so latents are
image/8 as in SDXL, two small CLIP text encoders whose hidden sizes add up to the UNet's
cross-attention width, and character-level CLIP tokenizers written to disk.
"""

from __future__ import annotations

import json
import string
from pathlib import Path

import torch
from diffusers import (
    AutoencoderKL,
    EulerDiscreteScheduler,
    StableDiffusionXLPipeline,
    UNet2DConditionModel,
)
from transformers import (
    CLIPTextConfig,
    CLIPTextModel,
    CLIPTextModelWithProjection,
    CLIPTokenizer,
)

TEXT_HIDDEN_1 = 16
TEXT_HIDDEN_2 = 32  # differs from TEXT_HIDDEN_1: single-file loading tells them apart by width
PROJECTION_DIM = 32
TIME_EMBED_DIM = 8


def write_char_tokenizer(folder: Path, vocab_size: int | None = None) -> CLIPTokenizer:
    """A character-level CLIP tokenizer: every printable character is a token.

    With ``vocab_size`` the vocabulary is padded with unused entries to that size, so the
    special ids are the last two, as in a real CLIP tokenizer (49406/49407 for 49408).
    """
    folder.mkdir(parents=True, exist_ok=True)
    vocab: dict[str, int] = {}
    chars = [c for c in string.printable if not c.isspace()]
    for c in chars:
        vocab.setdefault(c, len(vocab))
    for c in chars:
        vocab.setdefault(c + "</w>", len(vocab))
    while vocab_size is not None and len(vocab) < vocab_size - 2:
        vocab[f"<unused{len(vocab)}>"] = len(vocab)
    vocab["<|startoftext|>"] = len(vocab)
    vocab["<|endoftext|>"] = len(vocab)
    (folder / "vocab.json").write_text(json.dumps(vocab), encoding="utf-8")
    (folder / "merges.txt").write_text("#version: 0.2\n", encoding="utf-8")
    tok: CLIPTokenizer = CLIPTokenizer.from_pretrained(
        str(folder),
        model_max_length=77,
        pad_token="<|endoftext|>",
    )
    return tok


def _text_config(hidden: int, vocab_size: int, projection: int) -> CLIPTextConfig:
    return CLIPTextConfig(
        vocab_size=vocab_size,
        hidden_size=hidden,
        intermediate_size=hidden * 2,
        num_hidden_layers=2,
        num_attention_heads=2,
        max_position_embeddings=77,
        projection_dim=projection,
        hidden_act="gelu",
        bos_token_id=vocab_size - 2,
        eos_token_id=vocab_size - 1,
        pad_token_id=vocab_size - 1,
    )


def build_tiny_pipeline(seed: int = 0, tmp: Path | None = None) -> StableDiffusionXLPipeline:
    """Build a tiny SDXL pipeline in float32 with deterministic random weights."""
    torch.manual_seed(seed)
    unet = UNet2DConditionModel(
        block_out_channels=(16, 32),
        layers_per_block=1,
        sample_size=32,
        in_channels=4,
        out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        attention_head_dim=(2, 4),
        use_linear_projection=True,
        addition_embed_type="text_time",
        addition_time_embed_dim=TIME_EMBED_DIM,
        transformer_layers_per_block=(1, 1),
        projection_class_embeddings_input_dim=TIME_EMBED_DIM * 6 + PROJECTION_DIM,
        cross_attention_dim=TEXT_HIDDEN_1 + TEXT_HIDDEN_2,
        norm_num_groups=8,
    )
    vae = AutoencoderKL(
        block_out_channels=[16, 16, 32, 32],
        in_channels=3,
        out_channels=3,
        down_block_types=["DownEncoderBlock2D"] * 4,
        up_block_types=["UpDecoderBlock2D"] * 4,
        latent_channels=4,
        norm_num_groups=8,
        layers_per_block=1,
        sample_size=64,
        scaling_factor=0.13025,
        force_upcast=True,
    )
    scheduler = EulerDiscreteScheduler(
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        num_train_timesteps=1000,
        steps_offset=1,
        timestep_spacing="leading",
        prediction_type="epsilon",
        interpolation_type="linear",
        use_karras_sigmas=False,
    )
    import tempfile

    tok_dir = Path(tmp) if tmp is not None else Path(tempfile.mkdtemp(prefix="tiny-tok-"))
    tokenizer = write_char_tokenizer(tok_dir / "tok1")
    tokenizer_2 = write_char_tokenizer(tok_dir / "tok2")
    vocab_size = len(tokenizer)
    text_encoder = CLIPTextModel(_text_config(TEXT_HIDDEN_1, vocab_size, PROJECTION_DIM))
    text_encoder_2 = CLIPTextModelWithProjection(
        _text_config(TEXT_HIDDEN_2, vocab_size, PROJECTION_DIM)
    )
    pipe = StableDiffusionXLPipeline(
        vae=vae,
        text_encoder=text_encoder,
        text_encoder_2=text_encoder_2,
        tokenizer=tokenizer,
        tokenizer_2=tokenizer_2,
        unet=unet,
        scheduler=scheduler,
    )
    pipe.set_progress_bar_config(disable=True)
    return pipe


def save_tiny_model(root: Path, *, variant_only: bool = False, both: bool = True) -> Path:
    """Save a tiny pipeline under ``root/model`` in diffusers layout.

    ``both`` writes the float32 files and the ``variant="fp16"`` files side by side, as
    repos such as Asahina2K/Animagine-xl-3.1-diffuser-variant-fp16 hold them;
    ``variant_only`` writes only the fp16 variant files.
    """
    target = root / "model"
    pipe = build_tiny_pipeline(tmp=root / "tokenizers")
    if not variant_only:
        pipe.save_pretrained(target, safe_serialization=True)
    if both or variant_only:
        pipe.to(torch.float16)
        pipe.save_pretrained(target, safe_serialization=True, variant="fp16")
    return target


def save_tiny_taesd(root: Path, seed: int = 0) -> Path:
    """A tiny random TAESD (``AutoencoderTiny``, 4 latent channels, image/8 like SDXL's
    latents) saved in diffusers layout, as ``madebyollin/taesdxl`` is; returns its folder."""
    from diffusers import AutoencoderTiny

    torch.manual_seed(seed)
    taesd = AutoencoderTiny(
        encoder_block_out_channels=(8, 8, 8, 8),
        decoder_block_out_channels=(8, 8, 8, 8),
        num_encoder_blocks=(1, 1, 1, 1),
        num_decoder_blocks=(1, 1, 1, 1),
        latent_channels=4,
    )
    folder = root / "taesd"
    taesd.save_pretrained(folder)
    return folder
