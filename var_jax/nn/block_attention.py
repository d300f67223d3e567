"""Block-causal attention per backend: token i attends to every token of its own and coarser scales.

The VAR mask is a prefix mask: query i sees keys [0, kv_len[i]) where kv_len is the end of
i's scale. Implementations (`IMPLEMENTATIONS`), picked by `implementation="auto"` from the
platform the program is compiled for (the active mesh's devices, else the default backend):

- "splash" (TPU): the Pallas splash-attention kernel with a block mask built from the prefix
  mask; blocks wholly above the block diagonal are skipped. Off TPU it runs in the Pallas
  interpreter (exact, slow: for tests). Under a mesh it runs per shard (`shard_map` over the
  batch and head axes of the active logical-axis rules).
- "cudnn" (GPU, bf16/fp16): `jax.nn.dot_product_attention(implementation="cudnn")` with the
  boolean mask, which cuDNN's flash attention takes as an additive bias (0 / -large).
- "chunked" (CPU): one unmasked attention per scale, its queries against the keys [0, end):
  no mask and none of the masked-out work (62% of the dense FLOPs at 256px). Without a mask
  (a sampling scale against its KV-cache prefix) it is one such run: a depth-8 block's
  attention at the last scale of a batch-2 CFG sample took 22 ms on the "xla" path and 15 ms
  this way (XLA:CPU trace of the sampler, load 1.2).
- "xla": `jax.nn.dot_product_attention(implementation="xla")` with the dense mask.

All compute the same function; in float32 they agree to float32 rounding (tests assert the
golden logits to 1e-4). In bf16 they differ from the float32 result by bf16 rounding of q, k,
v and the probabilities: tests allow 2e-2 max abs error on unit-scale outputs.
"""
from __future__ import annotations

import functools
import logging

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from jax.ad_checkpoint import checkpoint_name
from jax.sharding import PartitionSpec as P

from var_jax.configs import ATTENTION_IMPLEMENTATIONS as IMPLEMENTATIONS
from var_jax.nn.platform import target_platform

log = logging.getLogger(__name__)

SPLASH_BLOCK = 128   # splash-attention tile (q and kv); sequences are padded to a multiple
RESIDUAL_NAME = "attention_residual"   # the chunked VJP's output and log-sum-exp
CPU_DEFAULT = "chunked"   # measured faster than "xla" on CPU (README, "Attention")


def prefix_lengths(mask_LL) -> np.ndarray | None:
    """(L,) int: how many leading keys each query sees, if `mask_LL` is such a prefix mask."""
    mask_LL = np.asarray(mask_LL, bool)
    kv_len_L = mask_LL.sum(-1)
    if not np.array_equal(mask_LL, np.arange(mask_LL.shape[-1])[None, :] < kv_len_L[:, None]):
        return None
    return kv_len_L


def _static_mask(mask_11LL) -> np.ndarray | None:
    """The (L, L) mask as numpy if it is concrete and the same for every batch and head."""
    if mask_11LL is None or isinstance(mask_11LL, jax.core.Tracer):
        return None
    mask = np.asarray(mask_11LL, bool)
    if mask.ndim != 4 or mask.shape[:2] != (1, 1):
        return None
    return mask[0, 0]


def resolve(implementation: str, dtype, seq_len: int, head_dim: int, platform: str) -> str:
    """The concrete implementation "auto" means here; others pass through (validated)."""
    if implementation not in IMPLEMENTATIONS:
        raise ValueError(f"attention implementation {implementation!r} is not one of "
                         f"{IMPLEMENTATIONS}; use 'auto' to pick one for the backend.")
    if implementation != "auto":
        return implementation
    if platform == "tpu":
        return "splash"
    if platform in ("gpu", "cuda") and cudnn_supports(dtype, seq_len, head_dim):
        return "cudnn"
    if platform == "cpu":
        return CPU_DEFAULT
    return "xla"


def cudnn_supports(dtype, seq_len: int, head_dim: int) -> bool:
    """cuDNN flash attention's limits for this call: bf16/fp16, head dim a multiple of 8 up to
    128 (256 on Hopper), and an even length when a bias (our mask) is trained through."""
    return (jnp.dtype(dtype) in (jnp.bfloat16, jnp.float16) and head_dim % 8 == 0
            and head_dim <= 128 and seq_len % 2 == 0)


def block_causal_attention(q_BLHc, k_BLHc, v_BLHc, *, scale: float, mask_11LL=None,
                           implementation: str = "auto"):
    """softmax(scale q k^T + mask) v for (B, L, H, hd) inputs; (B, L, H, hd) out.

    mask_11LL: a boolean (1, 1, Lq, Lk) mask, or None (attend to all keys). A concrete
    (numpy) prefix mask enables the structured kernels; a traced one runs the dense XLA path.
    """
    mask = _static_mask(mask_11LL)
    kv_len_L = prefix_lengths(mask) if mask is not None and mask.shape[0] == mask.shape[1] else None
    impl = resolve(implementation, q_BLHc.dtype, q_BLHc.shape[1], q_BLHc.shape[-1],
                   target_platform())
    if mask_11LL is None and impl == "chunked":   # every query sees every key: one run
        return _prefix_attention(q_BLHc, k_BLHc, v_BLHc, float(scale),
                                 ((0, q_BLHc.shape[1], k_BLHc.shape[1]),))
    if mask_11LL is None:
        impl = "cudnn" if impl == "cudnn" else "xla"   # nothing to exploit
    elif kv_len_L is None and impl in ("splash", "chunked"):
        log.warning("attention mask is traced or not block-causal: %s falls back to the dense "
                    "XLA path; pass the mask as a numpy array.", impl)
        impl = "xla"
    if impl == "splash":
        return splash_attention(q_BLHc, k_BLHc, v_BLHc, scale=scale, kv_len_L=kv_len_L)
    if impl == "chunked":
        return chunked_attention(q_BLHc, k_BLHc, v_BLHc, scale=scale, kv_len_L=kv_len_L)
    return jax.nn.dot_product_attention(q_BLHc, k_BLHc, v_BLHc, mask=mask_11LL, scale=scale,
                                        implementation=impl)


# ---------------------------------------------------------------------------- CPU: per scale
def chunked_attention(q_BLHc, k_BLHc, v_BLHc, *, scale: float, kv_len_L: np.ndarray):
    """Each run of queries sharing a prefix length attends, unmasked, to exactly that prefix.

    A custom VJP in the flash-attention style: the forward keeps only the output and the
    log-sum-exp of each row, and the backward recomputes the probabilities run by run, so no
    (B, H, l, end) probability tensor is stored or stacked by the scan over the blocks. One
    depth-8 layer's forward plus backward (batch 8, float32, this 2-core CPU) took 375 ms
    with autodiff and 234 ms with this VJP (README, "Attention per backend").
    """
    L = q_BLHc.shape[1]
    starts = [0] + [i for i in range(1, L) if kv_len_L[i] != kv_len_L[i - 1]] + [L]
    runs = tuple((b, e, int(kv_len_L[b])) for b, e in zip(starts, starts[1:]))
    return _prefix_attention(q_BLHc, k_BLHc, v_BLHc, float(scale), runs)


def _to_heads(x_BLHc):
    return x_BLHc.transpose(0, 2, 1, 3)   # (B, H, L, hd): one batched matmul per run


def _run_logits(q_BHLc, k_BHLc, scale: float, run):
    begin, end, kv_len = run
    return scale * jnp.einsum("bhqc,bhkc->bhqk", q_BHLc[:, :, begin:end], k_BHLc[:, :, :kv_len],
                              preferred_element_type=jnp.float32)


def _prefix_attention_fwd(q_BLHc, k_BLHc, v_BLHc, scale: float, runs):
    q, k, v = (_to_heads(x) for x in (q_BLHc, k_BLHc, v_BLHc))
    outs, lses = [], []
    for run in runs:
        s = _run_logits(q, k, scale, run)
        m = jnp.max(s, axis=-1, keepdims=True)
        p = jnp.exp(s - m)
        denom = jnp.sum(p, axis=-1, keepdims=True)   # normalised after the matmul: (l, hd)
        outs.append(jnp.einsum("bhqk,bhkc->bhqc", p.astype(v.dtype), v[:, :, :run[2]],
                               preferred_element_type=jnp.float32) / denom)
        lses.append(m + jnp.log(denom))
    out_BHLc = checkpoint_name(jnp.concatenate(outs, axis=2).astype(q_BLHc.dtype), RESIDUAL_NAME)
    lse_BHL1 = checkpoint_name(jnp.concatenate(lses, axis=2), RESIDUAL_NAME)
    return out_BHLc.transpose(0, 2, 1, 3), (q, k, v, out_BHLc, lse_BHL1)


def _prefix_attention_bwd(scale: float, runs, residuals, dout_BLHc):
    q, k, v, out, lse_BHL1 = residuals
    do = _to_heads(dout_BLHc)
    delta_BHL1 = jnp.sum(do.astype(jnp.float32) * out.astype(jnp.float32), -1, keepdims=True)
    dq_parts = []
    dk, dv = jnp.zeros(k.shape, jnp.float32), jnp.zeros(v.shape, jnp.float32)
    for run in runs:
        begin, end, kv_len = run
        p = jnp.exp(_run_logits(q, k, scale, run) - lse_BHL1[:, :, begin:end])
        do_run = do[:, :, begin:end]
        dv = dv.at[:, :, :kv_len].add(jnp.einsum("bhqk,bhqc->bhkc", p.astype(do.dtype), do_run,
                                                 preferred_element_type=jnp.float32))
        dp = jnp.einsum("bhqc,bhkc->bhqk", do_run, v[:, :, :kv_len],
                        preferred_element_type=jnp.float32)
        ds = (scale * p * (dp - delta_BHL1[:, :, begin:end])).astype(q.dtype)
        dq_parts.append(jnp.einsum("bhqk,bhkc->bhqc", ds, k[:, :, :kv_len],
                                   preferred_element_type=jnp.float32))
        dk = dk.at[:, :, :kv_len].add(jnp.einsum("bhqk,bhqc->bhkc", ds, q[:, :, begin:end],
                                                 preferred_element_type=jnp.float32))
    back = lambda x, like: x.astype(like.dtype).transpose(0, 2, 1, 3)   # noqa: E731
    return back(jnp.concatenate(dq_parts, axis=2), q), back(dk, k), back(dv, v)


@functools.partial(jax.custom_vjp, nondiff_argnums=(3, 4))
def _prefix_attention(q_BLHc, k_BLHc, v_BLHc, scale: float, runs):
    return _prefix_attention_fwd(q_BLHc, k_BLHc, v_BLHc, scale, runs)[0]


_prefix_attention.defvjp(_prefix_attention_fwd, _prefix_attention_bwd)


# ---------------------------------------------------------------------------- TPU: splash
def splash_mask(kv_len_L: np.ndarray, block: int = SPLASH_BLOCK) -> np.ndarray:
    """(Lp, Lp) bool, Lp = L rounded up to `block`: query i < L sees keys [0, kv_len[i]);
    padding queries see every real key (so no row is empty) and no query sees padding keys."""
    L = len(kv_len_L)
    Lp = -(-L // block) * block
    kv_len_Lp = np.concatenate([kv_len_L, np.full(Lp - L, L)])
    return np.arange(Lp)[None, :] < kv_len_Lp[:, None]


def _splash_kernel(kv_len_L: np.ndarray, num_heads: int, interpret: bool):
    """Built per trace: the kernel holds its block-mask tables as (traced) arrays."""
    # local: the TPU Pallas kernels load only where the splash implementation is chosen
    from jax.experimental.pallas.ops.tpu.splash_attention import splash_attention_kernel as sk
    from jax.experimental.pallas.ops.tpu.splash_attention import splash_attention_mask as sm

    head_mask = sm.NumpyMask(splash_mask(kv_len_L))
    return sk.make_splash_mha(sm.MultiHeadMask([head_mask] * num_heads), head_shards=1,
                              q_seq_shards=1, block_sizes=sk.BlockSizes.get_default(),
                              interpret=interpret)


def splash_attention(q_BLHc, k_BLHc, v_BLHc, *, scale: float, kv_len_L: np.ndarray,
                     interpret: bool | None = None):
    """The splash kernel over (B, H, Lp, hd), sharded like the activations when a mesh is set.
    `interpret=None`: the Pallas interpreter unless compiling for TPU."""
    B, L, H, _ = q_BLHc.shape
    if interpret is None:
        interpret = target_platform() != "tpu"
    Lp = -(-L // SPLASH_BLOCK) * SPLASH_BLOCK

    def to_kernel(x_BLHc):   # (B, H, Lp, hd), zero-padded tokens
        return jnp.pad(x_BLHc, ((0, 0), (0, Lp - L), (0, 0), (0, 0))).transpose(0, 2, 1, 3)

    q = to_kernel(q_BLHc * jnp.asarray(scale, q_BLHc.dtype))   # splash applies no scale
    k, v = to_kernel(k_BLHc), to_kernel(v_BLHc)

    mesh = jax.sharding.get_abstract_mesh()
    spec = _kernel_spec(mesh, B, H)
    heads_local = H if spec is None else H // _axes_size(mesh, spec[1])
    kernel = _splash_kernel(kv_len_L, heads_local, interpret)
    run = jax.vmap(kernel)
    if spec is not None:
        run = jax.shard_map(run, mesh=mesh, in_specs=(spec,) * 3, out_specs=spec,
                            check_vma=False)
    return run(q, k, v)[:, :, :L].transpose(0, 2, 1, 3)


def _kernel_spec(mesh, batch: int, num_heads: int) -> P | None:
    """PartitionSpec of (B, H, L, hd) from the logical rules ("batch", "heads"); dims whose
    size the mesh axes do not divide stay whole. None: no mesh (call the kernel directly)."""
    if mesh.empty:
        return None
    spec = list(nn.logical_to_mesh_axes(("batch", "heads", None, None)))
    for i, size in ((0, batch), (1, num_heads)):
        if size % _axes_size(mesh, spec[i]):
            spec[i] = None
    return P(*spec)


def _axes_size(mesh, axes) -> int:
    names = (axes,) if isinstance(axes, str) else tuple(axes or ())
    return int(np.prod([mesh.shape[a] for a in names]))
