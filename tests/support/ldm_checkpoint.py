"""Write a diffusers SDXL pipeline as one ``.safetensors`` file in the original (LDM) layout.

This is the layout of SDXL checkpoints as Civitai users hold them, the inverse of
``diffusers.loaders.single_file_utils`` (``convert_ldm_unet_checkpoint``,
``convert_ldm_vae_checkpoint``, ``convert_ldm_clip_checkpoint``,
``convert_open_clip_checkpoint``):

* ``model.diffusion_model.*``: the UNet in ``input_blocks`` / ``middle_block`` /
  ``output_blocks`` numbering;
* ``first_stage_model.*``: the VAE, decoder levels in reverse order, attention as 1x1 convs;
* ``conditioner.embedders.0.transformer.text_model.*``: CLIP-L, transformers layout;
* ``conditioner.embedders.1.model.*``: OpenCLIP bigG (fused ``in_proj``, ``text_projection``
  stored as a ``hidden x projection`` matrix).

The rules follow the block structure from the configs, so they hold for any level and
layer count, including the tiny test pipeline. diffusers tells the two text encoders apart
by hidden size when it loads such a file, so they need different widths (as 768 and 1280
in SDXL); with equal widths it loads CLIP-L's weights into ``text_encoder_2``.
"""

from __future__ import annotations

import re
from functools import reduce
from pathlib import Path

import torch
from diffusers import StableDiffusionXLPipeline
from safetensors.torch import save_file

UNET = "model.diffusion_model."
VAE = "first_stage_model."
CLIP_L = "conditioner.embedders.0.transformer."
OPEN_CLIP = "conditioner.embedders.1.model."
# diffusers' ``infer_diffusers_model_type`` calls a checkpoint SDXL base when it finds this
# key, which the 32-layer bigG tower has; a shallower tower gets it as a zero marker.
XL_BASE_MARKER = OPEN_CLIP + "transformer.resblocks.9.mlp.c_proj.bias"

_UNET_RESNET = (
    ("norm1", "in_layers.0"),
    ("conv1", "in_layers.2"),
    ("norm2", "out_layers.0"),
    ("conv2", "out_layers.3"),
    ("time_emb_proj", "emb_layers.1"),
    ("conv_shortcut", "skip_connection"),
)
_UNET_TOP = {
    "time_embedding.linear_1": "time_embed.0",
    "time_embedding.linear_2": "time_embed.2",
    "add_embedding.linear_1": "label_emb.0.0",
    "add_embedding.linear_2": "label_emb.0.2",
    "conv_in": "input_blocks.0.0",
    "conv_norm_out": "out.0",
    "conv_out": "out.2",
}
_VAE_RULES = (
    (r"conv_shortcut", "nin_shortcut"),
    (r"conv_norm_out", "norm_out"),
    (r"mid_block\.attentions\.0\.group_norm", "mid.attn_1.norm"),
    (r"mid_block\.attentions\.0\.to_(q|k|v)", r"mid.attn_1.\1"),
    (r"mid_block\.attentions\.0\.to_out\.0", "mid.attn_1.proj_out"),
    (r"down_blocks\.(\d+)\.resnets", r"down.\1.block"),
    (r"down_blocks\.(\d+)\.downsamplers\.0", r"down.\1.downsample"),
)
_OPEN_CLIP = (
    ("text_model.embeddings.position_embedding.weight", "positional_embedding"),
    ("text_model.embeddings.token_embedding.weight", "token_embedding.weight"),
    ("text_model.final_layer_norm", "ln_final"),
    ("text_model.encoder.layers.", "transformer.resblocks."),
    ("self_attn.out_proj", "attn.out_proj"),
    ("layer_norm1", "ln_1"),
    ("layer_norm2", "ln_2"),
    ("mlp.fc1", "mlp.c_fc"),
    ("mlp.fc2", "mlp.c_proj"),
)


def _split(key: str) -> tuple[str, str]:
    """``a.b.weight`` -> (``a.b``, ``weight``)."""
    module, _, param = key.rpartition(".")
    return module, param


def _resnet(rest: str) -> str:
    for new, old in _UNET_RESNET:
        if rest == new or rest.startswith(new + "."):
            return old + rest[len(new) :]
    return rest


def _unet_key(key: str, per_block: int, up_with_attn: set[int]) -> str:
    module, param = _split(key)
    if module in _UNET_TOP:
        return f"{_UNET_TOP[module]}.{param}"
    slots = per_block + 1  # input/output slots per level: its layers, then its resampler
    if m := re.fullmatch(r"(down|up)_blocks\.(\d+)\.(resnets|attentions)\.(\d+)\.(.+)", key):
        block, kind, layer, rest = int(m[2]), m[3], int(m[4]), m[5]
        down = m[1] == "down"
        index = block * slots + layer + down  # input_blocks.0 is conv_in
        name = "input" if down else "output"
        return f"{name}_blocks.{index}." + (
            f"0.{_resnet(rest)}" if kind == "resnets" else f"1.{rest}"
        )
    if m := re.fullmatch(r"down_blocks\.(\d+)\.downsamplers\.0\.conv\.(.+)", key):
        return f"input_blocks.{(int(m[1]) + 1) * slots}.0.op.{m[2]}"
    if m := re.fullmatch(r"up_blocks\.(\d+)\.upsamplers\.0\.(.+)", key):
        block = int(m[1])  # after the attention when the level has one, else after the resnet
        return f"output_blocks.{block * slots + per_block}.{1 + (block in up_with_attn)}.{m[2]}"
    if m := re.fullmatch(r"mid_block\.resnets\.(\d+)\.(.+)", key):
        return f"middle_block.{2 * int(m[1])}.{_resnet(m[2])}"
    if m := re.fullmatch(r"mid_block\.attentions\.0\.(.+)", key):
        return f"middle_block.1.{m[1]}"
    raise KeyError(f"no LDM name for UNet key {key!r}")


def _unet(pipe: StableDiffusionXLPipeline) -> dict[str, torch.Tensor]:
    state = pipe.unet.state_dict()
    per_block = pipe.unet.config.layers_per_block
    up_with_attn = {int(m[1]) for k in state if (m := re.match(r"up_blocks\.(\d+)\.attentions", k))}
    return {UNET + _unet_key(k, per_block, up_with_attn): v for k, v in state.items()}


def _vae_key(key: str, levels: int) -> str:
    flip = levels - 1  # the original numbers decoder levels from the bottom up
    for pattern, repl in (
        *_VAE_RULES,
        (r"mid_block\.resnets\.(\d+)", lambda m: f"mid.block_{int(m[1]) + 1}"),
        (r"up_blocks\.(\d+)\.resnets", lambda m: f"up.{flip - int(m[1])}.block"),
        (r"up_blocks\.(\d+)\.upsamplers\.0", lambda m: f"up.{flip - int(m[1])}.upsample"),
    ):
        key = re.sub(pattern, repl, key)
    return key


def _vae(pipe: StableDiffusionXLPipeline) -> dict[str, torch.Tensor]:
    levels = len(pipe.vae.config.up_block_types)
    out = {}
    for key, value in pipe.vae.state_dict().items():
        # the original holds the mid-block attention projections as 1x1 convolutions
        conv = ".attentions." in key and value.ndim == 2
        out[VAE + _vae_key(key, levels)] = value[:, :, None, None] if conv else value
    return out


def _clip_l(pipe: StableDiffusionXLPipeline) -> dict[str, torch.Tensor]:
    # transformers >= 5.6 flattened ``CLIPTextModel``; the file keeps the ``text_model.`` level
    return {
        CLIP_L + (k if k.startswith("text_model.") else "text_model." + k): v
        for k, v in pipe.text_encoder.state_dict().items()
    }


def _open_clip(pipe: StableDiffusionXLPipeline) -> dict[str, torch.Tensor]:
    state = pipe.text_encoder_2.state_dict()
    out: dict[str, torch.Tensor] = {
        OPEN_CLIP + "text_projection": state.pop("text_projection.weight").T
    }
    for q_key in [k for k in state if ".self_attn.q_proj." in k]:
        qkv = [state.pop(q_key.replace("q_proj", p)) for p in ("q_proj", "k_proj", "v_proj")]
        state[q_key.replace("self_attn.q_proj.", "attn.in_proj_")] = torch.cat(qkv)
    for key, value in state.items():
        out[OPEN_CLIP + reduce(lambda name, rule: name.replace(*rule), _OPEN_CLIP, key)] = value
    if XL_BASE_MARKER not in out:
        out[XL_BASE_MARKER] = torch.zeros_like(out[OPEN_CLIP + "ln_final.bias"])
    return out


def ldm_state_dict(pipe: StableDiffusionXLPipeline) -> dict[str, torch.Tensor]:
    """The pipeline's weights under their original single-file SDXL names."""
    state = {**_unet(pipe), **_vae(pipe), **_clip_l(pipe), **_open_clip(pipe)}
    return {k: v.detach().contiguous() for k, v in state.items()}


def write_single_file_checkpoint(pipe: StableDiffusionXLPipeline, path: Path) -> None:
    """Write ``pipe`` as one SDXL ``.safetensors`` checkpoint in the original layout."""
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(ldm_state_dict(pipe), str(path), metadata={"format": "pt"})
