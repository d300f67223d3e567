"""Released PyTorch weights -> Flax params: safe reading, config inference, strict key maps."""
from __future__ import annotations

import os
import re
from typing import Sequence

import numpy as np

from var_jax.configs import (PATCH_NUMS_256, PATCH_NUMS_512, VARConfig, VQVAEConfig)
from var_jax.weights.store import is_converted_dir, load_converted, save_converted
from var_jax.weights.torch_zip import (CorruptCheckpointError, UnsafeCheckpointError,
                                       load_torch_state_dict)

__all__ = [
    "CorruptCheckpointError", "UnsafeCheckpointError", "infer_config", "load_converted",
    "load_torch_state_dict", "load_weights", "save_converted", "var_params_from_torch",
    "vqvae_params_from_torch",
]


def vqvae_params_from_torch(sd: dict[str, np.ndarray], cfg: VQVAEConfig) -> dict:
    """Strictly convert a VQ-VAE state dict (e.g. vae_ch160v4096z32.pth) to `VQVAE(cfg)` params."""
    from var_jax.weights.vqvae_keys import vqvae_params_from_torch as convert
    return convert(sd, cfg)


def var_params_from_torch(sd: dict[str, np.ndarray], cfg: VARConfig) -> dict:
    """Strictly convert a VAR state dict (e.g. var_d16.pth) to `VAR(cfg)` params."""
    from var_jax.weights.var_keys import var_params_from_torch as convert
    return convert(sd, cfg)


def _count(sd: dict, pattern: str) -> int:
    regex = re.compile(pattern)
    return len({m.group(1) for k in sd if (m := regex.fullmatch(k))})


def _patch_nums_for(seq_len: int | None, image_size: int | None,
                    patch_nums: Sequence[int] | None) -> tuple[int, ...]:
    if patch_nums is not None:
        return tuple(patch_nums)
    known = {sum(p * p for p in PATCH_NUMS_256): PATCH_NUMS_256,
             sum(p * p for p in PATCH_NUMS_512): PATCH_NUMS_512}
    if seq_len is not None and seq_len in known:
        return known[seq_len]
    if image_size in (256, 512):
        return PATCH_NUMS_256 if image_size == 256 else PATCH_NUMS_512
    raise ValueError("cannot tell the scales (patch_nums) from this checkpoint; pass patch_nums "
                     "(or image_size 256/512 for the released scales).")


def infer_config(sd: dict[str, np.ndarray], *, image_size: int | None = None,
                 patch_nums: Sequence[int] | None = None) -> VQVAEConfig | VARConfig:
    """Read the model config off a state dict's keys and shapes.

    The tokenizer's scales are not stored in its weights: they come from `patch_nums`, else from
    `image_size` (256 -> the 256px scales, 512 -> the 512px ones), default 256.
    """
    if "quantize.embedding.weight" in sd:
        vocab, z = sd["quantize.embedding.weight"].shape
        ch = sd["encoder.conv_in.weight"].shape[0]
        levels = _count(sd, r"encoder\.down\.(\d+)\.block\.0\.conv1\.weight")
        ch_mult = tuple(int(sd[f"encoder.down.{i}.block.0.conv2.weight"].shape[0] // ch)
                        for i in range(levels))
        if _count(sd, r"quantize\.quant_resi\.qresi_ls\.(\d+)\.weight"):
            share = _count(sd, r"quantize\.quant_resi\.qresi_ls\.(\d+)\.weight")
        elif "quantize.quant_resi.qresi.weight" in sd:
            share = 1
        else:
            share = 0
        size = image_size or 256
        pns = _patch_nums_for(None, size if patch_nums is None else None, patch_nums)
        return VQVAEConfig(
            vocab_size=int(vocab), z_channels=int(z), ch=int(ch), ch_mult=ch_mult,
            num_res_blocks=_count(sd, r"encoder\.down\.0\.block\.(\d+)\.conv1\.weight"),
            patch_nums=pns, share_quant_resi=share, image_size=pns[-1] * 2 ** (levels - 1),
            using_sa=f"encoder.down.{levels - 1}.attn.0.qkv.weight" in sd,
            using_mid_sa="encoder.mid.attn_1.qkv.weight" in sd)
    if "class_emb.weight" in sd:
        classes_plus_1, width = sd["class_emb.weight"].shape
        l2 = "blocks.0.attn.scale_mul_1H11" in sd
        depth = _count(sd, r"blocks\.(\d+)\.attn\.proj\.weight")
        return VARConfig(
            depth=depth, embed_dim=int(width),
            num_heads=int(sd["blocks.0.attn.scale_mul_1H11"].shape[1]) if l2 else depth,
            num_classes=int(classes_plus_1 - 1),
            patch_nums=_patch_nums_for(sd["pos_1LC"].shape[1], image_size, patch_nums),
            vocab_size=int(sd["head.weight"].shape[0]),
            vae_channels=int(sd["word_embed.weight"].shape[1]),
            mlp_ratio=sd["blocks.0.ffn.fc1.weight"].shape[0] / width,
            shared_aln="shared_ada_lin.1.weight" in sd, attn_l2_norm=l2)
    raise ValueError("unrecognised state dict: neither a VAR tokenizer (quantize.embedding.weight) "
                     "nor a VAR transformer (class_emb.weight).")


def load_weights(path: str | os.PathLike, cfg: VQVAEConfig | VARConfig | None = None, *,
                 image_size: int | None = None, allow_tampered: bool = False):
    """Load a released `.pth` or a `var-jax convert` directory: returns (config, params).

    For a `.pth`, `cfg` defaults to `infer_config(sd, image_size=image_size)`. A directory is
    checked against its manifest (see `load_converted`; `allow_tampered` lets a mismatch by).
    """
    if is_converted_dir(path):
        stored_cfg, params = load_converted(path, allow_tampered=allow_tampered)
        if cfg is not None and cfg != stored_cfg:
            raise ValueError(f"{path} was converted with {stored_cfg}, not the requested {cfg}.")
        return stored_cfg, params
    sd = load_torch_state_dict(path)
    cfg = cfg or infer_config(sd, image_size=image_size)
    if isinstance(cfg, VQVAEConfig):
        return cfg, vqvae_params_from_torch(sd, cfg)
    return cfg, var_params_from_torch(sd, cfg)
