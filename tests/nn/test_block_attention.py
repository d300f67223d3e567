"""Block-causal attention: every implementation against a float64 reference (splash in the
Pallas interpreter), the mask/prefix structure, the per-backend choice and the cuDNN call."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jaxprs import equations

from var_jax import sharding
from var_jax.nn import block_attention as ba
from var_jax.nn.attention import block_causal_mask
from var_jax.var import REMAT

PATCH_NUMS = (1, 2, 3)           # L = 14: scales end at 1, 5, 14
B, L, H, D = 2, 14, 2, 8
BF16_TOL = 2e-2                  # bf16 vs the float64 reference, unit-scale outputs


def _qkv(dtype=jnp.float32, seed=0):
    rng = np.random.default_rng(seed)
    return [jnp.asarray(rng.normal(size=(B, L, H, D)), dtype) for _ in range(3)]


def _reference(q, k, v, scale, mask_LL):
    q, k, v = (np.asarray(x, np.float64) for x in (q, k, v))
    s = np.einsum("blhd,bmhd->bhlm", q, k) * scale + np.where(mask_LL, 0.0, -np.inf)
    p = np.exp(s - s.max(-1, keepdims=True))
    p /= p.sum(-1, keepdims=True)
    return np.einsum("bhlm,bmhd->blhd", p, v)


def _run(impl, q, k, v, scale=0.7):
    mask = block_causal_mask(PATCH_NUMS)
    fn = jax.jit(lambda q, k, v: ba.block_causal_attention(q, k, v, scale=scale, mask_11LL=mask,
                                                           implementation=impl))
    return np.asarray(fn(q, k, v).astype(jnp.float32))


def test_prefix_lengths_and_splash_mask():
    mask = block_causal_mask(PATCH_NUMS)[0, 0]
    np.testing.assert_array_equal(ba.prefix_lengths(mask), [1] + [5] * 4 + [14] * 9)
    assert ba.prefix_lengths(np.tril(np.ones((4, 4), bool))[:, ::-1]) is None   # a suffix mask
    sm = ba.splash_mask(ba.prefix_lengths(mask), block=8)
    assert sm.shape == (16, 16)
    np.testing.assert_array_equal(sm[:L, :L], mask)
    assert not sm[:, L:].any()            # padding keys are never seen
    assert sm[L:, :L].all()               # padding queries see every real key: no empty row
    # 256px: the chunked path does 62% of the dense work
    kv = ba.prefix_lengths(block_causal_mask((1, 2, 3, 4, 5, 6, 8, 10, 13, 16))[0, 0])
    assert abs(kv.sum() / len(kv) ** 2 - 0.619) < 1e-3


@pytest.mark.parametrize("impl", ["xla", "chunked", "splash"])
def test_float32_matches_reference_forward_and_gradient(impl):
    q, k, v = _qkv()
    mask = block_causal_mask(PATCH_NUMS)[0, 0]
    got = _run(impl, q, k, v)
    assert np.abs(got - _reference(q, k, v, 0.7, mask)).max() < 1e-5

    def loss(impl, q, k, v):
        out = ba.block_causal_attention(q, k, v, scale=0.7, mask_11LL=mask[None, None],
                                        implementation=impl)
        return jnp.sum(out * jnp.arange(D, dtype=out.dtype))
    g = jax.jit(jax.grad(loss, argnums=(1, 2, 3)), static_argnums=0)
    for a, b in zip(g(impl, q, k, v), g("xla", q, k, v)):
        assert np.abs(np.asarray(a) - np.asarray(b)).max() < 1e-5


@pytest.mark.parametrize("impl", ["xla", "chunked", "splash"])
def test_bfloat16_within_documented_tolerance(impl):
    q, k, v = _qkv(jnp.bfloat16)
    want = _reference(q, k, v, 0.7, block_causal_mask(PATCH_NUMS)[0, 0])
    assert np.abs(_run(impl, q, k, v) - want).max() < BF16_TOL


def test_splash_per_shard_under_a_mesh():
    q, k, v = _qkv()
    mesh = sharding.make_mesh(sharding.MeshConfig(1, 1, 1))
    with sharding.activate(mesh):
        got = _run("splash", q, k, v)
    assert np.abs(got - _run("xla", q, k, v)).max() < 1e-5


def test_backend_choice_and_bad_name():
    bf16, f32 = jnp.bfloat16, jnp.float32
    assert ba.resolve("auto", bf16, 680, 64, "tpu") == "splash"
    assert ba.resolve("auto", bf16, 680, 64, "gpu") == "cudnn"
    assert ba.resolve("auto", f32, 680, 64, "gpu") == "xla"       # cuDNN flash: bf16/fp16 only
    assert ba.resolve("auto", bf16, 681, 64, "gpu") == "xla"      # odd length with a bias
    assert ba.resolve("auto", f32, 680, 64, "cpu") == ba.CPU_DEFAULT
    assert ba.resolve("xla", f32, 680, 64, "tpu") == "xla"
    assert ba.target_platform() == "cpu"
    with pytest.raises(ValueError, match="not one of"):
        ba.resolve("flash", f32, 680, 64, "cpu")


def test_cudnn_path_passes_the_block_causal_mask(monkeypatch):
    """No GPU here: check what the cuDNN path hands to jax.nn.dot_product_attention."""
    calls = []
    real = jax.nn.dot_product_attention

    def record(q, k, v, *, mask, scale, implementation):
        calls.append((np.asarray(mask), implementation))
        return real(q, k, v, mask=mask, scale=scale, implementation="xla")
    monkeypatch.setattr(jax.nn, "dot_product_attention", record)
    q, k, v = _qkv(jnp.bfloat16)
    got = _run("cudnn", q, k, v)
    (mask, impl), = calls
    assert impl == "cudnn"
    np.testing.assert_array_equal(mask, block_causal_mask(PATCH_NUMS))
    assert np.abs(got - _reference(q, k, v, 0.7, mask[0, 0])).max() < BF16_TOL


def test_xla_fallback_lowers_and_traced_mask_falls_back():
    q, k, v = _qkv(jnp.bfloat16)
    mask = jnp.asarray(block_causal_mask(PATCH_NUMS))
    fn = jax.jit(lambda q, k, v, m: ba.block_causal_attention(q, k, v, scale=0.7, mask_11LL=m,
                                                              implementation="splash"))
    assert "custom_call" not in fn.lower(q, k, v, mask).as_text()   # traced mask: dense XLA


def test_remat_dots_keeps_the_chunked_forward():
    """Under the "dots" policy the chunked VJP's output and log-sum-exp are saved by name, so
    the gradient recomputes no forward softmax: as many exps as with no remat at all, and
    fewer than with the plain no-batch-dims dots policy."""
    q, k, v = _qkv()
    mask = block_causal_mask(PATCH_NUMS)

    def exps(policy) -> int:
        def f(q, k, v):
            return ba.block_causal_attention(q, k, v, scale=0.7, mask_11LL=mask,
                                             implementation="chunked").sum()
        if policy is not None:
            f = jax.checkpoint(f, policy=policy)
        jaxpr = jax.make_jaxpr(jax.grad(f, argnums=(0, 1, 2)))(q, k, v).jaxpr
        return sum(e.primitive.name == "exp" for e in equations(jaxpr))

    plain_dots = jax.checkpoint_policies.dots_with_no_batch_dims_saveable
    assert exps(REMAT["dots"]) == exps(None) < exps(plain_dots)
