"""AdamW with the paper's schedules: warm-up then "lin0" learning rate, cosine weight decay, no-decay mask."""
from __future__ import annotations

import dataclasses
import math
import re
from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

# Parameters whose path contains one of these never decay (besides 1-D params and biases).
NO_DECAY_KEYS = ("pos_start", "pos_1LC", "lvl_embed", "ada_gss", "scale_mul")
SCHEDULES = ("lin0", "lin", "cos", "const")


@dataclasses.dataclass(frozen=True)
class OptimConfig:
    """AdamW hyper-parameters; peak lr = base_lr * global_batch / 256."""

    base_lr: float = 1e-4             # "tblr": lr per 256 images
    b1: float = 0.9
    b2: float = 0.95
    eps: float = 1e-8
    weight_decay: float = 0.05        # "twd"
    weight_decay_end: float | None = None  # "twde": cosine from weight_decay to it; None = constant
    warmup_steps: int = 0             # linear warm-up from wp0 * peak to peak
    wp0: float = 0.005                # lr ratio at the start of warm-up
    wpe: float = 0.01                 # lr ratio at the end of training
    schedule: str = "lin0"            # after warm-up: lin0 | lin | cos | const
    grad_clip: float = 2.0            # global-norm clip; <= 0 disables
    no_decay_keys: tuple[str, ...] = NO_DECAY_KEYS

    def __post_init__(self):
        if self.schedule not in SCHEDULES:
            raise ValueError(f"OptimConfig.schedule={self.schedule!r} is not one of {SCHEDULES}.")
        if self.base_lr <= 0 or self.warmup_steps < 0:
            raise ValueError(f"OptimConfig: base_lr={self.base_lr} must be > 0 and "
                             f"warmup_steps={self.warmup_steps} >= 0.")


def peak_lr(cfg: OptimConfig, global_batch: int) -> float:
    return cfg.base_lr * global_batch / 256


def lr_schedule(cfg: OptimConfig, peak: float, total_steps: int) -> optax.Schedule:
    """lr at update `count` (0-based), as the reference's `lr_wd_annealing`.

    Warm-up: peak * (wp0 + (1 - wp0) * count / warmup). Then with progress
    p = (count - warmup) / (total - 1 - warmup): "lin0" stays at peak for p < 0.05 and falls
    linearly to wpe * peak at p = 1 ("lin": the same with 0.15); "cos" is a half cosine to wpe.
    """
    warm = int(cfg.warmup_steps)
    if total_steps - 1 <= warm:
        raise ValueError(f"total_steps={total_steps} must exceed warmup_steps={warm} + 1.")
    flat = {"lin0": 0.05, "lin": 0.15}.get(cfg.schedule, 0.0)

    def schedule(count):
        count = jnp.asarray(count, jnp.float32)
        warm_ratio = cfg.wp0 + (1 - cfg.wp0) * count / max(warm, 1)
        p = jnp.clip((count - warm) / (total_steps - 1 - warm), 0.0, 1.0)
        if cfg.schedule == "cos":
            ratio = cfg.wpe + (1 - cfg.wpe) * (0.5 + 0.5 * jnp.cos(math.pi * p))
        elif cfg.schedule == "const":
            ratio = jnp.ones_like(p)
        else:
            ratio = jnp.where(p < flat, 1.0, cfg.wpe + (1 - cfg.wpe) * (1 - p) / (1 - flat))
        return peak * jnp.where(count < warm, warm_ratio, ratio)
    return schedule


def wd_schedule(cfg: OptimConfig, total_steps: int) -> optax.Schedule | float:
    """Weight decay: constant, or a half cosine from weight_decay to weight_decay_end."""
    end = cfg.weight_decay_end
    if end is None or end == cfg.weight_decay:
        return cfg.weight_decay

    def schedule(count):
        p = jnp.asarray(count, jnp.float32) / max(total_steps - 1, 1)
        return end + (cfg.weight_decay - end) * (0.5 + 0.5 * jnp.cos(math.pi * p))
    return schedule


def _path_names(path) -> list[str]:
    return [str(getattr(k, "key", getattr(k, "name", getattr(k, "idx", k)))) for k in path]


def decay_mask(params, no_decay_keys: Sequence[str] = NO_DECAY_KEYS):
    """True where weight decay applies: not 1-D, not a bias, no `no_decay_keys` in the path.

    Under VAR's stacked `blocks` the leading (layers) axis does not count as a dimension.
    """
    pattern = re.compile("|".join(map(re.escape, no_decay_keys))) if no_decay_keys else None

    def decays(path, x) -> bool:
        x = x.value if isinstance(x, nn.LogicallyPartitioned) else x   # boxed at init
        names = _path_names(path)
        ndim = x.ndim - (names[0] == "blocks")
        if ndim <= 1 or names[-1] == "bias" or names[-1].endswith("_bias"):
            return False
        return not (pattern and any(pattern.search(n) for n in names))
    return jax.tree_util.tree_map_with_path(decays, params,
                                            is_leaf=lambda x: isinstance(x, nn.LogicallyPartitioned))


def make_optimizer(cfg: OptimConfig, *, global_batch: int, total_steps: int,
                   mask=None) -> tuple[optax.GradientTransformation, optax.Schedule]:
    """(AdamW with clipping and schedules, the lr schedule for logging).

    `mask` (a tree or callable, default `decay_mask`) says which params decay.
    """
    lr = lr_schedule(cfg, peak_lr(cfg, global_batch), total_steps)
    if mask is None:
        mask = lambda params: decay_mask(params, cfg.no_decay_keys)  # noqa: E731
    adamw = optax.adamw(lr, b1=cfg.b1, b2=cfg.b2, eps=cfg.eps,
                        weight_decay=wd_schedule(cfg, total_steps), mask=mask)
    if cfg.grad_clip > 0:
        return optax.chain(optax.clip_by_global_norm(cfg.grad_clip), adamw), lr
    return adamw, lr
