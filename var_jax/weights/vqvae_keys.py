"""Key map of the VAR tokenizer: PyTorch `VQVAE` state dict -> `var_jax.vqvae.VQVAE` params."""
from __future__ import annotations

import re
from typing import Optional

import jax
import jax.numpy as jnp
import numpy as np

from var_jax.configs import VQVAEConfig
from var_jax.vqvae import VQVAE
from var_jax.weights.strict import CONV, IDENTITY, Transform, params_from_state_dict

IGNORED_BUFFERS = (r"quantize\.ema_vocab_hit_SV",)
_LIST_MODULES = ("down", "up", "block", "attn")  # torch ModuleLists: "down.0" -> "down_0"
_PHI_KEY = re.compile(r"quantize\.quant_resi\.(?:qresi_ls\.(\d+)|(qresi)|(\d+))\.(weight|bias)")


def _phi_path(key: str, cfg: VQVAEConfig) -> Optional[tuple[tuple[str, ...], Transform]]:
    """The three torch layouts of phi, by share_quant_resi: n>1 `qresi_ls.i`, 1 `qresi`, 0 `i`."""
    m = _PHI_KEY.fullmatch(key)
    if m is None:
        return None
    shared_i, single, own_i, leaf = m.groups()
    share = cfg.share_quant_resi
    if shared_i is not None and share > 1:
        i = int(shared_i)
    elif single is not None and share == 1:
        i = 0
    elif own_i is not None and share == 0:
        i = int(own_i)
    else:
        return None
    path = ("quantize", f"phi_{i}")
    return (path + ("kernel",), CONV) if leaf == "weight" else (path + ("bias",), IDENTITY)


def vqvae_key_map(cfg: VQVAEConfig):
    """key -> (flax path, transform) or None; names mirror torch with list indices joined by _."""

    def key_map(key: str) -> Optional[tuple[tuple[str, ...], Transform]]:
        if key == "quantize.embedding.weight":
            return ("quantize", "embedding"), IDENTITY
        if key.startswith("quantize."):
            return _phi_path(key, cfg)
        parts = key.split(".")
        path: list[str] = []
        for part in parts[:-1]:
            if part.isdigit() and path and path[-1] in _LIST_MODULES:
                path[-1] = f"{path[-1]}_{part}"
            else:
                path.append(part)
        leaf = parts[-1]
        if leaf == "bias":
            return tuple(path) + ("bias",), IDENTITY
        if leaf != "weight" or not path:
            return None
        if path[-1].startswith("norm"):
            return tuple(path) + ("scale",), IDENTITY
        return tuple(path) + ("kernel",), CONV

    return key_map


def expected_vqvae_params(cfg: VQVAEConfig):
    """Shape tree of `VQVAE(cfg)` params (jax.ShapeDtypeStruct leaves; nothing is allocated)."""
    imgs = jnp.zeros((1, cfg.image_size, cfg.image_size, cfg.in_channels), jnp.float32)
    return jax.eval_shape(
        lambda: VQVAE(cfg).init(jax.random.key(0), imgs, train=False))["params"]


def vqvae_params_from_torch(sd: dict[str, np.ndarray], cfg: VQVAEConfig) -> dict:
    """Strictly convert a VQ-VAE state dict (e.g. vae_ch160v4096z32.pth) to `VQVAE(cfg)` params.

    Raises ValueError naming every missing, unexpected or mis-shaped key.
    """
    return params_from_state_dict(sd, expected_vqvae_params(cfg), vqvae_key_map(cfg),
                                  ignore=IGNORED_BUFFERS, model_name="VQVAE")
