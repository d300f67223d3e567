"""The VAR transformer: class-conditional next-scale prediction over a block-causal pyramid."""
from __future__ import annotations

import functools
import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from var_jax.configs import VARConfig, scale_of_token
from var_jax.nn.adaln import AdaLNBeforeHead, AdaLNSelfAttn
from var_jax.nn.attention import KVCache, block_causal_mask
from var_jax.nn.block_attention import RESIDUAL_NAME
from var_jax.nn.platform import target_platform

_lp = nn.with_logical_partitioning
_zeros = nn.initializers.zeros_init()
ADA_OTHER_MUL, HEAD_MUL = 0.5, 0.02   # the paper's init multipliers (gamma: cfg.adaln_gamma_init)
LAYERS_AXIS = "layers"                # logical name of the stacked blocks' leading axis

# VARConfig.remat -> what a block keeps for the backward pass (None: no rematerialisation).
# "dots" keeps the outputs of matmuls without batch dims (the qkv/proj/fc1/fc2/ada projections)
# and the chunked attention's output and log-sum-exp (RESIDUAL_NAME: without them the backward
# reruns the CPU attention forward; depth 8, batch 8: 0.4 s less kernel time, steps 0.1-0.2 s
# faster in an A/B), and recomputes the rest; "full" keeps only each block's input.
REMAT = {
    "none": None,
    "dots": jax.checkpoint_policies.save_from_both_policies(
        jax.checkpoint_policies.dots_with_no_batch_dims_saveable,
        jax.checkpoint_policies.save_only_these_names(RESIDUAL_NAME)),
    "full": jax.checkpoint_policies.nothing_saveable,
}


# ---------------------------------------------------------------------------- paper init
def trunc_normal(std: float):
    """torch's `trunc_normal_(std=std)`: a normal of that std truncated to [-2, 2] (absolute)."""
    def init(key, shape, dtype=jnp.float32):
        return std * jax.random.truncated_normal(key, -2.0 / std, 2.0 / std, shape, dtype)
    return init


def scaled(init, factor: float):
    """`init` multiplied by a constant."""
    return lambda key, shape, dtype=jnp.float32: init(key, shape, dtype) * factor


def ada_scaled(init, embed_dim: int, gamma_mul: float):
    """AdaLN projections (last axis 6C or (6, C)): gamma rows x gamma_mul, scale/shift x0.5."""
    def wrapped(key, shape, dtype=jnp.float32):
        w = init(key, shape, dtype)
        if len(shape) == 4:   # ada_gss (1, 1, 6, C): gammas are the first two of the six
            mul = jnp.array([gamma_mul] * 2 + [ADA_OTHER_MUL] * 4, dtype)[:, None]
        else:                 # ada_lin kernel (C, 6C): gammas are the first 2C outputs
            mul = jnp.where(jnp.arange(shape[-1]) < 2 * embed_dim, gamma_mul, ADA_OTHER_MUL)
        return w * mul.astype(dtype)
    return wrapped


def _normal_over_sqrt_c(embed_dim: int):
    return lambda key, shape, dtype=jnp.float32: (
        jax.random.normal(key, shape, dtype) / math.sqrt(embed_dim))


# ---------------------------------------------------------------------------- model
class VAR(nn.Module):
    """The VAR transformer (`var_d16.pth` ... `var_d36.pth`).

    `__call__(labels_B, x_BLCv_wo_first_l)` is the teacher-forcing forward pass returning
    float32 logits (B, L, V). Class dropout (to the null class `num_classes`, rate
    `cfg.cond_drop_rate`) and drop-path happen only when a 'dropout' rng is given.
    Sampling uses `conditioning`, `embed_first`, `embed_scale` and `forward_scale` with an
    explicit KV cache from `init_kv_cache` (see var_jax/sampling.py).
    The blocks are one `nn.scan` over the depth (params `blocks/...` stacked on a leading
    "layers" axis), so each is traced and compiled once; `cfg.remat` picks what the backward
    pass recomputes. No unrolled variant: d16 on CPU compiled 2x slower unrolled and its train
    step took 2x the time; unrolled sampling was ~10-20% faster per call (weights sliced per
    scale, README "Compile time"), not worth 160 compiled block copies.
    """

    cfg: VARConfig

    def setup(self):
        cfg = self.cfg
        C = cfg.embed_dim
        init = trunc_normal(math.sqrt(1.0 / (3 * C)))
        self.word_embed = nn.Dense(C, kernel_init=_lp(init, ("cvae", "embed")),
                                   bias_init=_lp(_zeros, ("embed",)))
        self.class_emb = nn.Embed(cfg.num_classes + 1, C,
                                  embedding_init=_lp(init, ("classes", "embed")))
        self.pos_start = self.param("pos_start", _lp(init, (None, None, "embed")),
                                    (1, cfg.first_l, C))
        self.pos_1LC = self.param("pos_1LC", _lp(init, (None, "seq", "embed")),
                                  (1, cfg.seq_len, C))
        self.lvl_embed = nn.Embed(cfg.num_scales, C, embedding_init=_lp(init, (None, "embed")))
        if cfg.shared_aln:
            self.shared_ada_lin = nn.Dense(6 * C, kernel_init=_lp(init, ("embed", "ada")),
                                           bias_init=_lp(_zeros, ("ada",)))
            ada_init = ada_scaled(_normal_over_sqrt_c(C), C, cfg.adaln_gamma_init)
        else:
            ada_init = ada_scaled(init, C, cfg.adaln_gamma_init)
        out_init = scaled(init, 1.0 / math.sqrt(2 * cfg.depth))
        # One block; `_scan` runs it over the depth with params stacked on a leading axis.
        self.blocks = AdaLNSelfAttn(C, cfg.num_heads, cfg.mlp_dim, norm_eps=cfg.norm_eps,
                                    shared_aln=cfg.shared_aln, attn_l2_norm=cfg.attn_l2_norm,
                                    dtype=jnp.dtype(cfg.dtype), kernel_init=init,
                                    out_init=out_init, ada_init=ada_init,
                                    attention=cfg.attention)
        self.head_nm = AdaLNBeforeHead(C, cfg.norm_eps, ada_init=scaled(init, ADA_OTHER_MUL))
        self.head = nn.Dense(cfg.vocab_size, kernel_init=_lp(scaled(init, HEAD_MUL),
                                                             ("embed", "vocab")),
                             bias_init=_lp(_zeros, ("vocab",)))

    # -- the block stack
    def _scan(self, step, carry, xs, *broadcast):
        """lax.scan of `step(block, carry, xs_i, *broadcast)` over the depth, each block with
        its slice of the stacked params (leading axis `LAYERS_AXIS`) and its own rngs."""
        return nn.scan(step, variable_axes={"params": 0},
                       split_rngs={"params": True, "dropout": True},
                       in_axes=(0,) + (nn.broadcast,) * len(broadcast), length=self.cfg.depth,
                       metadata_params={nn.PARTITION_NAME: LAYERS_AXIS})(
            self.blocks, carry, xs, *broadcast)

    def _drop_rates(self):
        """(depth,) drop-path rates rising linearly from 0, or None when drop-path is off."""
        cfg = self.cfg
        if cfg.drop_path_rate <= 0:
            return None
        return jnp.asarray(np.linspace(0.0, cfg.drop_path_rate, cfg.depth), jnp.float32)

    # -- pieces shared by teacher forcing and sampling
    def conditioning(self, labels_B):
        """(cond_BD, mods_DB16C): the class embedding, and every block's AdaLN modulation
        (`AdaLNSelfAttn.modulation`), stacked over the depth. With shared AdaLN the blocks
        modulate `shared_ada_lin(cond_BD)` as (B, 1, 6, C)."""
        cond_BD = self.class_emb(labels_B)
        cond = cond_BD
        if self.cfg.shared_aln:
            cond = self.shared_ada_lin(nn.silu(cond_BD)).reshape(-1, 1, 6, self.cfg.embed_dim)
        _, mods_DB16C = self._scan(_modulation_step, None, None, cond)
        return cond_BD, mods_DB16C

    def _lvl_pos(self, begin: int, end: int):
        lvl_l = jnp.asarray(scale_of_token(self.cfg.patch_nums)[begin:end])
        return self.lvl_embed(lvl_l)[None] + self.pos_1LC[:, begin:end]

    def embed_first(self, cond_BD):
        """Tokens of scale 0: class embedding + pos_start + level/position embeddings."""
        first_l = self.cfg.first_l
        return cond_BD[:, None, :] + self.pos_start + self._lvl_pos(0, first_l)

    def embed_scale(self, si: int, x_BlCv):
        """Tokens of scale si >= 1 from the tokenizer's next-scale input (B, pn_si**2, Cvae)."""
        begin, end = self.cfg.begin_ends[si]
        return self.word_embed(x_BlCv.astype(jnp.float32)) + self._lvl_pos(begin, end)

    def logits(self, x_BLC, cond_BD):
        """AdaLN head norm then the vocabulary projection, in float32."""
        h = self.head_nm(x_BLC.astype(jnp.float32), cond_BD)
        return self.head(h).astype(jnp.float32)

    # -- teacher forcing
    def __call__(self, labels_B, x_BLCv_wo_first_l):
        cfg = self.cfg
        labels_B = jnp.asarray(labels_B)
        want = (cfg.seq_len - cfg.first_l, cfg.vae_channels)
        if x_BLCv_wo_first_l.ndim != 3 or tuple(x_BLCv_wo_first_l.shape[1:]) != want:
            raise ValueError(f"x_BLCv_wo_first_l has shape {x_BLCv_wo_first_l.shape}; expected "
                             f"(B, {want[0]}, {want[1]}) = (B, L - first_l, vae_channels).")
        if labels_B.shape != x_BLCv_wo_first_l.shape[:1]:
            raise ValueError(f"labels_B has shape {labels_B.shape}; expected "
                             f"({x_BLCv_wo_first_l.shape[0]},), one class id per image.")
        if not isinstance(labels_B, jax.core.Tracer):
            cfg.check_labels(np.asarray(labels_B))
        if cfg.cond_drop_rate > 0 and self.has_rng("dropout"):
            u_B = jax.random.uniform(self.make_rng("dropout"), labels_B.shape)
            labels_B = jnp.where(u_B < cfg.cond_drop_rate, cfg.num_classes, labels_B)

        cond_BD, mods_DB16C = self.conditioning(labels_B)
        x_BLC = jnp.concatenate([
            cond_BD[:, None, :] + self.pos_start,
            self.word_embed(x_BLCv_wo_first_l.astype(jnp.float32)),
        ], axis=1) + self._lvl_pos(0, cfg.seq_len)
        x_BLC = nn.with_logical_constraint(x_BLC, ("batch", "seq", "embed"))
        # The mask is closed over, not a scan input: it stays a numpy constant whose block
        # structure the attention exploits (var_jax/nn/block_attention.py).
        step = functools.partial(_teacher_forcing_step,
                                 mask_11LL=block_causal_mask(cfg.patch_nums))
        if REMAT[cfg.remat] is not None:
            step = nn.remat(step, policy=REMAT[cfg.remat], prevent_cse=False)
        x_BLC, _ = self._scan(step, x_BLC, (mods_DB16C, self._drop_rates()))
        return self.logits(x_BLC, cond_BD)

    # -- one scale of sampling
    def forward_scale(self, si: int, x_BlC, cond_BD, mods_DB16C, kv_caches):
        """Scale si's tokens through all blocks with the KV caches; returns (logits_BlV, caches).

        kv_caches: the stacked KVCache of all blocks (`init_kv_cache`), carried through the scan
        over the blocks; block i writes scale si's keys/values at [i, :, begin:end] in place and
        attends to [i, :, :end].
        """
        begin, end = self.cfg.begin_ends[si]
        if x_BlC.shape[1] != end - begin:
            raise ValueError(f"scale {si} has {end - begin} tokens, got x_BlC of shape "
                             f"{x_BlC.shape}.")
        x_BlC, kv_caches = self.blocks_cached(x_BlC, mods_DB16C, kv_caches, begin)
        return self.logits(x_BlC, cond_BD), kv_caches

    def blocks_cached(self, x_BlC, mods_DB16C, kv_caches, cache_begin: int, mask_11ll=None):
        """Tokens through all blocks with the KV caches; returns (hidden_BlC, caches).

        Block i writes the tokens' keys/values at [i, :, cache_begin:cache_begin + l] and its
        queries attend to [i, :, :cache_begin + l], all of them, or where `mask_11ll` (a numpy
        (1, 1, l, l) mask, with cache_begin 0: a teacher-forcing prefill) allows.
        """
        layers = jnp.arange(self.cfg.depth)
        step = functools.partial(_cached_step, cache_begin=cache_begin, mask_11ll=mask_11ll)
        (x_BlC, k, v), _ = self._scan(step, (x_BlC, kv_caches.k, kv_caches.v),
                                      (mods_DB16C, layers))
        return x_BlC, KVCache(k, v)


def _modulation_step(block, carry, _, cond):
    return carry, block.modulation(cond)


def _teacher_forcing_step(block, x_BLC, layer, *, mask_11LL):
    mod_B16C, drop_rate = layer
    x_BLC, _ = block(x_BLC, mod_B16C, drop_rate=0.0 if drop_rate is None else drop_rate,
                     mask_11LL=mask_11LL)
    return x_BLC, None


def _cached_step(block, carry, layer, *, cache_begin: int, mask_11ll=None):
    (x_BlC, k, v), (mod_B16C, i) = carry, layer
    x_BlC, cache = block(x_BlC, mod_B16C, kv_cache=KVCache(k, v, i), cache_begin=cache_begin,
                         mask_11LL=mask_11ll)
    return (x_BlC, cache.k, cache.v), None


def init_kv_cache(cfg: VARConfig, batch: int) -> KVCache:
    """The zeroed KV cache of the block stack: keys and values (depth, B, L, H, hd), in the
    compute dtype; float32 on CPU, where a narrow model's activations are float32
    (var_jax/nn/dense_dot.py)."""
    shape = (cfg.depth, batch, cfg.seq_len, cfg.num_heads, cfg.head_dim)
    dtype = jnp.float32 if target_platform() == "cpu" else jnp.dtype(cfg.dtype)
    return KVCache(jnp.zeros(shape, dtype), jnp.zeros(shape, dtype))


def _dummy_inputs(cfg: VARConfig):
    return (jnp.zeros((1,), jnp.int32),
            jnp.zeros((1, cfg.seq_len - cfg.first_l, cfg.vae_channels), jnp.float32))


@functools.partial(jax.jit, static_argnums=0, static_argnames="boxed")
def init_var_params(cfg: VARConfig, rng, boxed: bool = False):
    """The paper's initialisation as float32 params: plain, or (boxed=True) in their
    nn.LogicallyPartitioned boxes, whose logical axis names the trainer's shardings follow.

    Jitted, so the dummy forward pass is pruned; works under `jax.eval_shape` and
    `jax.jit(..., out_shardings=...)`.
    """
    params = VAR(cfg).init({"params": rng}, *_dummy_inputs(cfg))["params"]
    return params if boxed else nn.meta.unbox(params)
