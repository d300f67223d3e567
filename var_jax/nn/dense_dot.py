"""The matmul of a Dense layer that computes in a narrow dtype (bf16/fp16), per backend.

XLA:CPU multiplies bf16 x bf16 -> bf16 at about float32 speed, but bf16 x bf16 -> float32 on
the AMX / AVX-512-BF16 units at 4-5x that (5440x512 @ 512x2048 on the 2-core CI machine: 958
vs 257 GFLOP/s for float32), and it computes bf16 elementwise ops by converting to float32 and
back. So on CPU a narrow layer multiplies narrow operands into float32 and its output stays
float32: the activations between the matmuls are float32 there (more exact than bf16, and
faster). TPU and GPU accumulate in float32 inside the MXU / tensor cores anyway and have native
bf16 elementwise ops; there flax's plain matmul is kept, so activations and the residuals a
rematerialised block saves stay narrow.
"""
from __future__ import annotations

import jax.numpy as jnp
from jax import lax

from var_jax.nn.platform import target_platform


def dense_dot_general(dtype):
    """`dot_general` for `nn.Dense(dtype=dtype)`: float32-accumulating and -returning on CPU
    for a narrow dtype; None (flax's default) for float32 and on other backends."""
    if jnp.dtype(dtype) == jnp.float32 or target_platform() != "cpu":
        return None

    def into_float32(lhs, rhs, dimension_numbers, precision=None):
        return lax.dot_general(lhs, rhs, dimension_numbers, precision=precision,
                               preferred_element_type=jnp.float32)
    return into_float32
