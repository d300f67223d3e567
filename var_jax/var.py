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

_lp = nn.with_logical_partitioning
_zeros = nn.initializers.zeros_init()
ADA_GAMMA_MUL, ADA_OTHER_MUL, HEAD_MUL = 1e-5, 0.5, 0.02   # the paper's init multipliers


# ---------------------------------------------------------------------------- paper init
def trunc_normal(std: float):
    """torch's `trunc_normal_(std=std)`: a normal of that std truncated to [-2, 2] (absolute)."""
    def init(key, shape, dtype=jnp.float32):
        return std * jax.random.truncated_normal(key, -2.0 / std, 2.0 / std, shape, dtype)
    return init


def scaled(init, factor: float):
    """`init` multiplied by a constant."""
    return lambda key, shape, dtype=jnp.float32: init(key, shape, dtype) * factor


def ada_scaled(init, embed_dim: int):
    """AdaLN projections (last axis 6C or (6, C)): gamma rows x1e-5, scale/shift rows x0.5."""
    def wrapped(key, shape, dtype=jnp.float32):
        w = init(key, shape, dtype)
        if len(shape) == 4:   # ada_gss (1, 1, 6, C): gammas are the first two of the six
            mul = jnp.array([ADA_GAMMA_MUL] * 2 + [ADA_OTHER_MUL] * 4, dtype)[:, None]
        else:                 # ada_lin kernel (C, 6C): gammas are the first 2C outputs
            mul = jnp.where(jnp.arange(shape[-1]) < 2 * embed_dim, ADA_GAMMA_MUL, ADA_OTHER_MUL)
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
            ada_init = ada_scaled(_normal_over_sqrt_c(C), C)
        else:
            ada_init = ada_scaled(init, C)
        out_init = scaled(init, 1.0 / math.sqrt(2 * cfg.depth))
        rates = np.linspace(0.0, cfg.drop_path_rate, cfg.depth)
        self.blocks = [
            AdaLNSelfAttn(C, cfg.num_heads, cfg.mlp_dim, norm_eps=cfg.norm_eps,
                          shared_aln=cfg.shared_aln, attn_l2_norm=cfg.attn_l2_norm,
                          drop_path_rate=float(rates[i]), dtype=jnp.dtype(cfg.dtype),
                          kernel_init=init, out_init=out_init, ada_init=ada_init)
            for i in range(cfg.depth)
        ]
        self.head_nm = AdaLNBeforeHead(C, cfg.norm_eps, ada_init=scaled(init, ADA_OTHER_MUL))
        self.head = nn.Dense(cfg.vocab_size, kernel_init=_lp(scaled(init, HEAD_MUL),
                                                             ("embed", "vocab")),
                             bias_init=_lp(_zeros, ("vocab",)))

    # -- pieces shared by teacher forcing and sampling
    def conditioning(self, labels_B):
        """(cond_BD, cond_for_blocks): the class embedding, and what the blocks take.

        cond_for_blocks is cond_BD itself, or with shared AdaLN `shared_ada_lin(cond_BD)`
        as (B, 1, 6, C).
        """
        cond_BD = self.class_emb(labels_B)
        if not self.cfg.shared_aln:
            return cond_BD, cond_BD
        return cond_BD, self.shared_ada_lin(nn.silu(cond_BD)).reshape(-1, 1, 6, self.cfg.embed_dim)

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

        cond_BD, cond_blocks = self.conditioning(labels_B)
        x_BLC = jnp.concatenate([
            cond_BD[:, None, :] + self.pos_start,
            self.word_embed(x_BLCv_wo_first_l.astype(jnp.float32)),
        ], axis=1) + self._lvl_pos(0, cfg.seq_len)
        x_BLC = nn.with_logical_constraint(x_BLC, ("batch", "seq", "embed"))
        mask_11LL = block_causal_mask(cfg.patch_nums)
        for block in self.blocks:
            x_BLC, _ = block(x_BLC, cond_blocks, mask_11LL=mask_11LL)
        return self.logits(x_BLC, cond_BD)

    # -- one scale of sampling
    def forward_scale(self, si: int, x_BlC, cond_BD, cond_blocks, kv_caches):
        """Scale si's tokens through all blocks with the KV caches; returns (logits_BlV, caches).

        kv_caches: one KVCache per block (`init_kv_cache`); scale si writes its keys/values at
        [begin, end) of each and attends to [:end]. The blocks are unrolled: a `lax.scan` over
        stacked params would compile faster but copies every block's weights per scale.
        """
        begin, end = self.cfg.begin_ends[si]
        if x_BlC.shape[1] != end - begin:
            raise ValueError(f"scale {si} has {end - begin} tokens, got x_BlC of shape "
                             f"{x_BlC.shape}.")
        new_caches = []
        for block, cache in zip(self.blocks, kv_caches):
            x_BlC, cache = block(x_BlC, cond_blocks, kv_cache=cache, cache_begin=begin)
            new_caches.append(cache)
        return self.logits(x_BlC, cond_BD), tuple(new_caches)


def init_kv_cache(cfg: VARConfig, batch: int) -> tuple[KVCache, ...]:
    """Zeroed KV caches, one (B, L, H, hd) pair per block, in the compute dtype."""
    shape = (batch, cfg.seq_len, cfg.num_heads, cfg.head_dim)
    dtype = jnp.dtype(cfg.dtype)
    return tuple(KVCache(jnp.zeros(shape, dtype), jnp.zeros(shape, dtype))
                 for _ in range(cfg.depth))


def _dummy_inputs(cfg: VARConfig):
    return (jnp.zeros((1,), jnp.int32),
            jnp.zeros((1, cfg.seq_len - cfg.first_l, cfg.vae_channels), jnp.float32))


def _boxed_init(cfg: VARConfig, rng):
    return VAR(cfg).init({"params": rng}, *_dummy_inputs(cfg))["params"]


@functools.partial(jax.jit, static_argnums=0)
def init_var_params(cfg: VARConfig, rng):
    """The paper's initialisation as plain (unboxed) float32 params.

    Jitted, so the dummy forward pass is pruned; works under `jax.eval_shape` and
    `jax.jit(..., out_shardings=...)`. Logical axes: `var_param_logical_axes(cfg)`.
    """
    return nn.meta.unbox(_boxed_init(cfg, rng))


def var_param_logical_axes(cfg: VARConfig):
    """Pytree (same structure as the params) of PartitionSpecs over logical axis names."""
    boxed = jax.eval_shape(functools.partial(_boxed_init, cfg), jax.random.key(0))
    return nn.get_partition_spec(boxed)
