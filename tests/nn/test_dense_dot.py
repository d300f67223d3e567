"""Narrow-dtype Dense matmuls: float32 accumulation on CPU, flax's own elsewhere."""
import jax
import jax.numpy as jnp
import numpy as np
from jaxprs import equations

from var_jax.configs import VARConfig
from var_jax.nn import dense_dot
from var_jax.var import VAR, init_kv_cache, init_var_params

SMALL = VARConfig(depth=2, embed_dim=64, num_heads=2, num_classes=10, patch_nums=(1, 2, 3),
                  vocab_size=64, vae_channels=8, dtype="bfloat16")


def test_float32_and_other_backends_keep_flax_matmul(monkeypatch):
    assert dense_dot.dense_dot_general(jnp.float32) is None
    monkeypatch.setattr(dense_dot, "target_platform", lambda: "tpu")
    assert dense_dot.dense_dot_general(jnp.bfloat16) is None


def test_cpu_bf16_matmul_accumulates_exactly_in_float32():
    """bf16 x bf16 products are exact in float32: the result is the float32 matmul of the
    rounded operands, while a bf16-returning matmul is off by bf16 rounding (~4e-3)."""
    rng = np.random.default_rng(0)
    a, b = (jnp.asarray(rng.normal(size=s), jnp.bfloat16) for s in ((64, 512), (512, 96)))
    dot = dense_dot.dense_dot_general(jnp.bfloat16)
    got = dot(a, b, (((1,), (0,)), ((), ())))
    assert got.dtype == jnp.float32
    want = np.asarray(a, np.float64) @ np.asarray(b, np.float64)
    scale = np.abs(want).max()
    assert np.abs(np.asarray(got) - want).max() / scale < 1e-6
    assert np.abs(np.asarray(a @ b, np.float64) - want).max() / scale > 1e-3


def test_bf16_model_on_cpu_has_no_bf16_returning_matmul():
    """Each dot with a bf16 operand, blocks and attention, returns float32; the KV cache is
    float32 there (a bf16 cache made XLA cast the whole cache at every write)."""
    params = init_var_params(SMALL, jax.random.key(0))
    labels = np.arange(2, dtype=np.int32)
    x = np.zeros((2, SMALL.seq_len - 1, SMALL.vae_channels), np.float32)
    jaxpr = jax.make_jaxpr(lambda p: VAR(SMALL).apply({"params": p}, labels, x))(params).jaxpr
    narrow = [e for e in equations(jaxpr) if e.primitive.name == "dot_general"
              and any(v.aval.dtype == jnp.bfloat16 for v in e.invars)]
    assert len(narrow) >= 4 + 2 * len(SMALL.patch_nums)   # qkv, proj, fc1, fc2 + attention
    assert all(e.outvars[0].aval.dtype == jnp.float32 for e in narrow)
    assert init_kv_cache(SMALL, 2).k.dtype == jnp.float32
