"""Key map from the released VAR state dicts (var_d16.pth ... var_d36.pth) to `VAR` params.

The torch model holds `blocks.{i}.*` per block; `VAR` holds one `blocks` tree whose leaves are
stacked over the depth (leading axis). Conversion maps each key to a per-block path
`blocks_{i}/...` and then stacks them (`stack_blocks`); `unstack_blocks` is the inverse.
"""
from __future__ import annotations

import functools
import re

import jax
import numpy as np

from var_jax.configs import VARConfig
from var_jax.var import init_var_params
from var_jax.weights.strict import IDENTITY, LINEAR, params_from_state_dict

# Buffers the reference registers (masks, level ids, the all-zero k bias): nothing to learn.
IGNORED_BUFFERS = (r"attn_bias_for_masking", r"lvl_1L", r"blocks\.\d+\.attn\.zero_k_bias")

_TOP = {
    "pos_start": (("pos_start",), IDENTITY),
    "pos_1LC": (("pos_1LC",), IDENTITY),
    "word_embed.weight": (("word_embed", "kernel"), LINEAR),
    "word_embed.bias": (("word_embed", "bias"), IDENTITY),
    "class_emb.weight": (("class_emb", "embedding"), IDENTITY),
    "lvl_embed.weight": (("lvl_embed", "embedding"), IDENTITY),
    "shared_ada_lin.1.weight": (("shared_ada_lin", "kernel"), LINEAR),
    "shared_ada_lin.1.bias": (("shared_ada_lin", "bias"), IDENTITY),
    "head_nm.ada_lin.1.weight": (("head_nm", "ada_lin", "kernel"), LINEAR),
    "head_nm.ada_lin.1.bias": (("head_nm", "ada_lin", "bias"), IDENTITY),
    "head.weight": (("head", "kernel"), LINEAR),
    "head.bias": (("head", "bias"), IDENTITY),
}
_BLOCK = {
    "ada_gss": (("ada_gss",), IDENTITY),
    "ada_lin.1.weight": (("ada_lin", "kernel"), LINEAR),
    "ada_lin.1.bias": (("ada_lin", "bias"), IDENTITY),
    "attn.mat_qkv.weight": (("attn", "mat_qkv", "kernel"), LINEAR),
    "attn.q_bias": (("attn", "q_bias"), IDENTITY),
    "attn.v_bias": (("attn", "v_bias"), IDENTITY),
    "attn.scale_mul_1H11": (("attn", "scale_mul_1H11"), IDENTITY),
    "attn.proj.weight": (("attn", "proj", "kernel"), LINEAR),
    "attn.proj.bias": (("attn", "proj", "bias"), IDENTITY),
    "ffn.fc1.weight": (("ffn", "fc1", "kernel"), LINEAR),
    "ffn.fc1.bias": (("ffn", "fc1", "bias"), IDENTITY),
    "ffn.fc2.weight": (("ffn", "fc2", "kernel"), LINEAR),
    "ffn.fc2.bias": (("ffn", "fc2", "bias"), IDENTITY),
}
_BLOCK_RE = re.compile(r"blocks\.(\d+)\.(.+)")
_PER_BLOCK_RE = re.compile(r"blocks_(\d+)")


def var_key_map(key: str):
    """torch key -> (flax param path, layout transform), or None for a key VAR has no slot for."""
    if key in _TOP:
        return _TOP[key]
    m = _BLOCK_RE.fullmatch(key)
    if m and m.group(2) in _BLOCK:
        path, transform = _BLOCK[m.group(2)]
        return (f"blocks_{int(m.group(1))}",) + path, transform
    return None


@functools.lru_cache(maxsize=8)
def expected_var_params(cfg: VARConfig):
    """ShapeDtypeStructs of `VAR(cfg)`'s params (no memory is allocated)."""
    return jax.eval_shape(functools.partial(init_var_params, cfg), jax.random.key(0))


def unstack_blocks(params: dict) -> dict:
    """Stacked `blocks` (leading depth axis) -> one `blocks_{i}` tree per block."""
    params = dict(params)
    stacked = params.pop("blocks")
    depth = jax.tree.leaves(stacked)[0].shape[0]
    for i in range(depth):
        params[f"blocks_{i}"] = jax.tree.map(lambda a, i=i: a[i], stacked)
    return params


def stack_blocks(params: dict) -> dict:
    """`blocks_0` ... `blocks_{depth-1}` -> one `blocks` tree stacked over a leading axis."""
    return _stack_blocks_in_place(dict(params))


def _stack_blocks_in_place(params: dict) -> dict:
    """`stack_blocks` that pops the per-block trees from `params` and stacks leaf by leaf, so
    the converter's peak memory is the model plus one stacked leaf, not twice the model."""
    depth = sum(1 for k in params if _PER_BLOCK_RE.fullmatch(k))
    if depth == 0 or any(f"blocks_{i}" not in params for i in range(depth)):
        raise ValueError(f"per-block params must be blocks_0 ... blocks_{{depth-1}}; got "
                         f"{sorted(k for k in params if k.startswith('blocks'))}.")
    treedef = jax.tree.structure(params["blocks_0"])
    leaves = [jax.tree.leaves(params.pop(f"blocks_{i}")) for i in range(depth)]
    stacked = []
    for j in range(treedef.num_leaves):
        stacked.append(np.stack([leaves[i][j] for i in range(depth)]))
        for i in range(depth):
            leaves[i][j] = None
    params["blocks"] = jax.tree.unflatten(treedef, stacked)
    return params


def _expected_per_block(expected: dict) -> dict:
    stacked = expected["blocks"]
    depth = jax.tree.leaves(stacked)[0].shape[0]
    one = jax.tree.map(lambda s: jax.ShapeDtypeStruct(s.shape[1:], s.dtype), stacked)
    return {**{k: v for k, v in expected.items() if k != "blocks"},
            **{f"blocks_{i}": one for i in range(depth)}}


def var_params_from_torch(sd: dict[str, np.ndarray], cfg: VARConfig) -> dict:
    """Strictly convert a VAR transformer state dict to `VAR(cfg)` params (float32 numpy).

    Every parameter must be present with the exact shape; errors name the key and both shapes
    (block parameters by their per-block path, e.g. blocks_15/attn/q_bias).
    """
    return _stack_blocks_in_place(params_from_state_dict(
        sd, _expected_per_block(expected_var_params(cfg)), var_key_map, ignore=IGNORED_BUFFERS,
        model_name=f"VAR(depth={cfg.depth})"))
