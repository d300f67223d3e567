"""Released PyTorch weights -> Flax params: safe reading, config inference, strict key maps."""
from __future__ import annotations

import os
import re
import sys
from typing import Sequence

import numpy as np
import tqdm

from var_jax.configs import (ADALN_GAMMA_INIT, DEFAULT_ADALN_GAMMA_INIT, PATCH_NUMS_256,
                             PATCH_NUMS_512, VARConfig, VQVAEConfig)
from var_jax.weights.runs import is_run_dir, load_run
from var_jax.weights.store import is_converted_dir, load_converted, save_converted
from var_jax.weights.torch_zip import (CorruptCheckpointError, UnsafeCheckpointError,
                                       load_torch_state_dict)
from var_jax.weights.var_keys import stack_blocks, var_params_from_torch
from var_jax.weights.vqvae_keys import vqvae_params_from_torch

__all__ = [
    "CorruptCheckpointError", "UnsafeCheckpointError", "infer_config", "load_converted",
    "load_torch_state_dict", "load_weights", "parse_patch_nums", "read_state_dict",
    "save_converted", "var_params_from_torch", "vqvae_params_from_torch",
]


def _count(sd: dict, pattern: str) -> int:
    regex = re.compile(pattern)
    return len({m.group(1) for k in sd if (m := regex.fullmatch(k))})


def parse_patch_nums(text: str | None, flag: str = "--patch-nums") -> tuple[int, ...] | None:
    """"1,2,3,4" -> (1, 2, 3, 4); None or "" -> None."""
    if not text:
        return None
    try:
        pns = tuple(int(p) for p in text.split(","))
    except ValueError as e:
        raise ValueError(f"{flag} must be comma separated integers, e.g. 1,2,3,4; got {text!r}."
                         ) from e
    if any(p < 1 for p in pns) or any(b <= a for a, b in zip(pns, pns[1:])):
        raise ValueError(f"{flag} {text} must be positive and increasing (coarse to fine).")
    return pns


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
    what = "the tokenizer's weights do not store its scales" if seq_len is None else (
        f"its {seq_len} tokens are not the released 256 or 512 px scales")
    raise ValueError(f"cannot tell the scales: {what}; give --patch-nums (e.g. 1,2,3,4) or "
                     "--image-size 256 / 512 for the released scales.")


def infer_config(sd: dict[str, np.ndarray], *, image_size: int | None = None,
                 patch_nums: Sequence[int] | None = None) -> VQVAEConfig | VARConfig:
    """Read the model config off a state dict's keys and shapes.

    The tokenizer's scales are not stored in its weights: they come from `patch_nums`, else from
    `image_size` (256 -> the 256px scales, 512 -> the 512px ones); without either it raises.
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
        pns = _patch_nums_for(None, image_size, patch_nums)
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
            shared_aln="shared_ada_lin.1.weight" in sd, attn_l2_norm=l2,
            adaln_gamma_init=ADALN_GAMMA_INIT.get(depth, DEFAULT_ADALN_GAMMA_INIT))
    raise ValueError("unrecognised state dict: neither a VAR tokenizer (quantize.embedding.weight) "
                     "nor a VAR transformer (class_emb.weight).")


def load_weights(path: str | os.PathLike, kind: str, patch_nums: Sequence[int] | None = None,
                 *, image_size: int | None = None, flag: str | None = None,
                 allow_tampered: bool = False):
    """(config, numpy params) of a model of `kind` ("var" or "vae") from any of:

    - a released `.pth` (config read off its keys; a tokenizer's scales from `patch_nums` or
      `image_size`, which it does not store),
    - a converted directory (`var-jax convert` / `var-jax export`; its config.json decides),
    - a training work dir (`var-jax train`): its latest checkpoint, EMA weights if kept; said on
      stderr.

    `patch_nums`, when given, must agree with what a converted dir or run recorded. `flag` names
    the path in error messages (e.g. "--vae"). Converted dirs and runs are checked against their
    sha256 manifests; `allow_tampered` lets a mismatch through with a warning.
    """
    want = _KINDS.get(kind)
    if want is None:
        raise ValueError(f"kind={kind!r}; expected one of {sorted(_KINDS)}.")
    name = str(path) if not flag else f"{flag}{path}" if flag.endswith("=") else f"{flag} {path}"
    if not os.path.exists(path):
        raise FileNotFoundError(f"{name}: no such file or directory.")
    if is_converted_dir(path):
        cfg, params = load_converted(path, allow_tampered=allow_tampered)
        if isinstance(cfg, VARConfig) and "blocks_0" in params:   # converted before the scan
            params = stack_blocks(params)
    elif is_run_dir(path):
        cfg, params, step = load_run(path, allow_tampered=allow_tampered)
        print(f"{name}: using the training run's latest checkpoint, step {step} (`var-jax export` "
              "writes it as a weights dir)", file=sys.stderr)
    elif os.path.isdir(path):
        raise FileNotFoundError(
            f"{name} is a directory but neither converted weights (config.json + params/ from "
            "`var-jax convert` or `var-jax export`) nor a training work dir (config.json + "
            "checkpoints/ from `var-jax train`).")
    else:
        sd = read_state_dict(path)
        cfg = infer_config(sd, image_size=image_size, patch_nums=patch_nums)
        _check_kind(cfg, want, name)
        convert = vqvae_params_from_torch if want is VQVAEConfig else var_params_from_torch
        return cfg, convert(sd, cfg)
    _check_kind(cfg, want, name)
    if patch_nums is not None and tuple(patch_nums) != cfg.patch_nums:
        raise ValueError(
            f"{name} holds a model with the scales {_csv(cfg.patch_nums)}, not {_csv(patch_nums)}; "
            "drop --patch-nums, or re-convert its .pth with `var-jax convert MODEL.pth OUT_DIR "
            f"--patch-nums {_csv(patch_nums)}`.")
    return cfg, params


_KINDS = {"var": VARConfig, "vae": VQVAEConfig}
_KIND_WORDS = {VARConfig: "a VAR transformer (e.g. var_d16.pth)",
               VQVAEConfig: "a VQ-VAE tokenizer (e.g. vae_ch160v4096z32.pth)"}


def _check_kind(cfg, want, name: str) -> None:
    if not isinstance(cfg, want):
        raise ValueError(f"{name} holds {_KIND_WORDS[type(cfg)]}, not {_KIND_WORDS[want]}; the "
                         "transformer goes to --var and the tokenizer to --vae.")


def _csv(patch_nums: Sequence[int]) -> str:
    return ",".join(str(p) for p in patch_nums)


def read_state_dict(path) -> dict[str, np.ndarray]:
    """`load_torch_state_dict`, with a byte progress bar on stderr for a large file."""
    size = os.path.getsize(path)
    if size <= _ANNOUNCE_BYTES:
        return load_torch_state_dict(path)
    with tqdm.tqdm(total=size, unit="B", unit_scale=True, desc=f"reading {path}",
                   file=sys.stderr) as bar:
        return load_torch_state_dict(path, progress=bar.update)


_ANNOUNCE_BYTES = 100_000_000
