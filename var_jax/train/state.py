"""The train state every trainer shares: params, optimizer state, EMA, RNG and frozen inputs."""
from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import optax
from flax import struct


class TrainState(struct.PyTreeNode):
    """One pytree holding all a train step reads and writes.

    `frozen` holds arrays the step needs but never updates (a frozen tokenizer, a perceptual
    network); it is rebuilt at start-up rather than checkpointed (see `checkpointed`).
    `rng` is the run's base key: the loop gives step `s` the key `fold_in(rng, s)`.
    `extra` holds trainer-specific arrays the step updates besides params (e.g. the tokenizer's
    codebook statistics); it is checkpointed.
    """

    step: jax.Array
    params: Any
    opt_state: Any
    rng: jax.Array
    ema_params: Any = None
    frozen: Any = None
    extra: Any = None
    tx: optax.GradientTransformation = struct.field(pytree_node=False, default=None)
    ema_decay: float | None = struct.field(pytree_node=False, default=None)

    @classmethod
    def create(cls, *, params, tx: optax.GradientTransformation, rng: jax.Array,
               ema_decay: float | None = None, frozen=None, extra=None) -> "TrainState":
        """`params` may be boxed (nn.LogicallyPartitioned): boxes are kept, also in the
        optimizer state and the EMA built from them, so sharding can read their names."""
        if ema_decay is not None and not 0.0 < ema_decay < 1.0:
            raise ValueError(f"ema_decay={ema_decay} must be in (0, 1), or None for no EMA.")
        if jnp.issubdtype(jnp.asarray(rng).dtype, jax.dtypes.prng_key):
            rng = jax.random.key_data(rng)
        return cls(step=jnp.zeros((), jnp.int32), params=params,
                   opt_state=tx.init(params), rng=jnp.asarray(rng, jnp.uint32),
                   ema_params=params if ema_decay is not None else None, frozen=frozen,
                   extra=extra, tx=tx, ema_decay=ema_decay)

    def apply_gradients(self, grads) -> "TrainState":
        """One optimizer update (and EMA update); increments `step`."""
        updates, opt_state = self.tx.update(grads, self.opt_state, self.params)
        params = optax.apply_updates(self.params, updates)
        ema = self.ema_params
        if self.ema_decay is not None:
            d = self.ema_decay
            ema = jax.tree.map(lambda e, p: d * e + (1 - d) * p, ema, params)
        return self.replace(step=self.step + 1, params=params, opt_state=opt_state, ema_params=ema)

    @property
    def eval_params(self):
        """The weights to evaluate and sample with: the EMA if kept, else the live params."""
        return self.params if self.ema_params is None else self.ema_params

    def step_key(self, step=None) -> jax.Array:
        """The typed PRNG key of `step` (default: the current one)."""
        return jax.random.fold_in(jax.random.wrap_key_data(self.rng),
                                  self.step if step is None else step)

    def checkpointed(self) -> dict:
        """What a checkpoint stores: everything but `frozen` and the static fields."""
        out = {"step": self.step, "params": self.params, "opt_state": self.opt_state,
               "rng": self.rng}
        if self.ema_params is not None:
            out["ema_params"] = self.ema_params
        if self.extra is not None:
            out["extra"] = self.extra
        return out

    def with_checkpointed(self, tree: dict) -> "TrainState":
        """Inverse of `checkpointed`: this state with the restored entries."""
        return self.replace(**tree)
