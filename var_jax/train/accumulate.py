"""Gradient accumulation: the mean loss, metrics and gradients of a batch taken in micro-batches."""
from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp


def split_micro_batches(batch, num: int):
    """(B, ...) leaves -> (num, B // num, ...), micro-batch i = examples i, i + num, i + 2 num...

    Strided rather than contiguous, so that each micro-batch keeps the batch's sharding over
    devices (every device holds B / num / devices examples of each one).
    """
    def one(x):
        if x.shape[0] % num:
            raise ValueError(f"batch of {x.shape[0]} examples cannot be split into {num} "
                             "micro-batches; make the per-step batch a multiple of grad_accum.")
        return jnp.swapaxes(x.reshape(x.shape[0] // num, num, *x.shape[1:]), 0, 1)
    return jax.tree.map(one, batch)


def value_and_grad_accumulated(loss_fn: Callable, params, batch, rng: jax.Array, num: int = 1):
    """((loss, metrics), grads) of `loss_fn(params, batch, rng) -> (loss, metrics)`.

    With `num` > 1 the batch is processed as `num` micro-batches in a `lax.scan` (activations of
    one micro-batch in memory at a time; micro-batch i gets the key `fold_in(rng, i)`); loss,
    metrics and gradients are the means over micro-batches.
    """
    grad_fn = jax.value_and_grad(loss_fn, has_aux=True)
    if num == 1:
        return grad_fn(params, batch, rng)
    micro = split_micro_batches(batch, num)

    def body(total, xs):
        mb, i = xs
        out = grad_fn(params, mb, jax.random.fold_in(rng, i))
        return jax.tree.map(jnp.add, total, out), None

    first = jax.tree.map(lambda x: x[0], micro)
    zeros = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype),
                         jax.eval_shape(grad_fn, params, first, rng))
    total, _ = jax.lax.scan(body, zeros, (micro, jnp.arange(num)))
    return jax.tree.map(lambda x: x / num, total)
