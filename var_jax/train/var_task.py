"""Training the VAR transformer: frozen VQ-VAE tokens in, next-scale cross-entropy out."""
from __future__ import annotations

import dataclasses
import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from var_jax import sampling
from var_jax.configs import VARConfig, VQVAEConfig, scale_of_token
from var_jax.convert import load_weights
from var_jax.sharding import MeshConfig
from var_jax.train.accumulate import value_and_grad_accumulated
from var_jax.train.input import DataConfig
from var_jax.train.loop import LoopConfig, Task
from var_jax.train.optimizer import OptimConfig, make_optimizer
from var_jax.var import VAR, init_var_params
from var_jax.vqvae import VQVAE


@dataclasses.dataclass(frozen=True)
class VARTrainConfig:
    """Everything `var-jax train` needs; experiments/*.py return one."""

    var: VARConfig
    vae: VQVAEConfig
    loop: LoopConfig
    optim: OptimConfig
    data: DataConfig
    mesh: MeshConfig = MeshConfig()
    tokenizer: str | None = None      # frozen tokenizer: `var-jax convert` dir or released .pth;
                                      # None = random init (smoke tests only: codes mean nothing)
    label_smoothing: float = 0.0      # "ls"
    prog_fraction: float = 0.0        # "pg": progressive training over this fraction of steps
    prog_first_scale: int = 4         # "pg0": the last scale trained on at the start
    prog_warmup_steps: float | None = None   # "pgwp" in steps: each new stage's tokens ramp
                                      # up over this many steps; None = total_steps / 300 (the
                                      # reference's default, ep/300 epochs)
    sample_classes: tuple[int, ...] = tuple(range(8))   # one image each in the sample grids
                                                        # (() = none)
    sample_cfg: float = 1.5
    sample_top_k: int = 900
    sample_top_p: float = 0.96

    def __post_init__(self):
        self.var.check_compatible(self.vae)
        if self.vae.image_size != self.data.image_size:
            raise ValueError(f"data.image_size={self.data.image_size} differs from the tokenizer's "
                             f"image_size={self.vae.image_size}; make them equal.")
        self.var.check_labels(np.asarray(self.sample_classes, np.int32), allow_null=False)
        if not 0.0 <= self.label_smoothing < 1.0 or not 0.0 <= self.prog_fraction <= 1.0:
            raise ValueError(f"label_smoothing={self.label_smoothing} must be in [0, 1) and "
                             f"prog_fraction={self.prog_fraction} in [0, 1].")
        if self.prog_warmup_steps is not None and not self.prog_warmup_steps > 0:
            raise ValueError(f"prog_warmup_steps={self.prog_warmup_steps} must be > 0, or None "
                             "for the reference's default (total_steps / 300).")


def var_train_flops(cfg: VARConfig) -> float:
    """Model FLOPs of one training image (forward + backward = 3x forward, 2 per multiply-add).

    Per-token matmuls (qkv, proj, fc1, fc2 of every block; word_embed; head) over all L tokens,
    AdaLN projections once per image, and attention scores + values over the full L x L
    (as the reference computes it; the block-causal mask does not skip work). VAR-d16: 0.93 TF.
    """
    C, L, depth = cfg.embed_dim, cfg.seq_len, cfg.depth
    per_token = depth * (4 * C * C + 2 * C * cfg.mlp_dim) + C * cfg.vocab_size + cfg.vae_channels * C
    per_image = (1 if cfg.shared_aln else depth) * 6 * C * C + 2 * C * C
    attention = depth * 2 * (2 * L * L * C)
    return 3.0 * (2 * (per_token * L + per_image) + attention)


def progressive_scale(step, total_steps: int, warmup_steps: int, fraction: float,
                      first_scale: int, num_scales: int):
    """The last scale trained on at `step` (the reference's "pg"): `first_scale` until warm-up
    ends, then rising evenly to the last scale at `fraction` of training."""
    last = num_scales - 1
    if fraction <= 0:
        return jnp.int32(last)
    end = total_steps * fraction
    progress = jnp.clip((step - warmup_steps) / max(end - warmup_steps, 1e-9), 0.0, 1.0)
    si = first_scale + jnp.round(progress * (last - first_scale))
    si = jnp.where(step <= warmup_steps, first_scale, si)
    return jnp.where(step >= end, last, si).astype(jnp.int32)


def progressive_loss_weights(step, scale_L, total_steps: int, warmup_steps: int,
                             fraction: float, first_scale: int, num_scales: int,
                             stage_warmup_steps: float):
    """(L,) per-token loss weights at `step` under progressive training, as the reference's
    trainer: 1/L for tokens up to the current scale, 0 after it; the current scale's tokens
    scaled by clip(steps into this stage / stage_warmup_steps, 0.01, 1) ("pgwp"), except in
    the first stage (already covered by the lr warm-up) and once the last scale is reached."""
    scale = functools.partial(progressive_scale, total_steps=total_steps,
                              warmup_steps=warmup_steps, fraction=fraction,
                              first_scale=first_scale, num_scales=num_scales)
    step = jnp.asarray(step, jnp.int32)
    si = scale(step)

    def bisect(_, lo_hi):   # the stage's first step: the least s <= step with scale(s) >= si
        lo, hi = lo_hi
        mid = (lo + hi) // 2
        ok = scale(mid) >= si
        return jnp.where(ok, lo, mid + 1), jnp.where(ok, mid, hi)
    start, _ = jax.lax.fori_loop(0, 32, bisect, (jnp.int32(0), step))
    ramp = jnp.clip((step - start + 1) / stage_warmup_steps, 0.01, 1.0)
    ramp = jnp.where(si == scale(jnp.int32(0)), 1.0, ramp)
    L = scale_L.shape[0]
    w_L = jnp.where(scale_L <= si, 1.0 / L, 0.0)
    return jnp.where((scale_L == si) & (si < num_scales - 1), w_L * ramp, w_L)


def cross_entropy(logits_BLV, target_BL, label_smoothing: float = 0.0):
    """(smoothed CE, plain NLL), each (B, L): torch's CrossEntropyLoss(label_smoothing=ls)."""
    logp_BLV = jax.nn.log_softmax(logits_BLV.astype(jnp.float32), axis=-1)
    nll_BL = -jnp.take_along_axis(logp_BLV, target_BL[..., None], axis=-1)[..., 0]
    if not label_smoothing:
        return nll_BL, nll_BL
    return (1 - label_smoothing) * nll_BL - label_smoothing * logp_BLV.mean(-1), nll_BL


class VARTask(Task):
    """`Task` for the shared loop: params = the VAR transformer, frozen = the VQ-VAE."""

    def __init__(self, config: VARTrainConfig):
        self.config = config
        self.model, self.vae = VAR(config.var), VQVAE(config.vae)
        self.flops_per_example = var_train_flops(config.var)
        # numpy, not jnp: no JAX call before train_and_evaluate's jax.distributed.initialize()
        self._scale_L = np.asarray(scale_of_token(config.var.patch_nums))

    # ---------------------------------------------------------------- model, optimizer, frozen
    def init(self, rng):
        var_key, vae_key = jax.random.split(rng)
        size = self.config.vae.image_size
        return {"params": init_var_params(self.config.var, var_key, boxed=True),
                "frozen": self.vae.init(vae_key, jnp.zeros((1, size, size, 3)),
                                        train=False)["params"]}

    def optimizer(self):
        loop = self.config.loop
        return make_optimizer(self.config.optim, global_batch=loop.global_batch,
                              total_steps=loop.total_steps)

    def load_frozen(self, shardings):
        if self.config.tokenizer is None:
            return None
        cfg, params = load_weights(self.config.tokenizer, "vae", self.config.vae.patch_nums,
                                   flag="tokenizer=")   # numpy, every host
        if cfg != self.config.vae:
            raise ValueError(f"tokenizer={self.config.tokenizer} holds {cfg}, but the config's "
                             f"vae is {self.config.vae}; make them equal.")
        return jax.tree.map(lambda x, s: jax.make_array_from_callback(x.shape, s, x.__getitem__),
                            params, shardings)

    def check_input(self, stream) -> None:
        info = getattr(stream, "info", None) or {}
        n, have = info.get("num_classes"), self.config.var.num_classes
        if n is not None and int(n) > have:
            raise ValueError(f"the training data ({info.get('source', self.config.data.source)}"
                             f") has {n} classes but the model has var.num_classes={have}: "
                             "labels past it would index outside the class embedding. Set "
                             f"--set var.num_classes={n} (or more), or use data with at most "
                             f"{have} classes.")

    # ---------------------------------------------------------------- loss
    def tokens(self, vae_params, batch):
        """(targets (B, L) int32, teacher-forcing input (B, L - first_l, Cvae)) of a batch of
        images or of pre-tokenized indices."""
        q = {"params": jax.lax.stop_gradient(vae_params)}
        if "idx" in batch:
            idx_BL = batch["idx"].astype(jnp.int32)
            idx_list = [idx_BL[:, b:e] for b, e in self.config.var.begin_ends]
        else:
            idx_list = self.vae.apply(q, batch["image"], method=VQVAE.encode_indices)
            idx_BL = jnp.concatenate(idx_list, axis=1)
        x_BLCv = self.vae.apply(q, idx_list, method=VQVAE.teacher_forcing_input)
        return idx_BL, jax.lax.stop_gradient(x_BLCv)

    def loss(self, params, vae_params, batch, rng, step=None):
        """(objective, metrics). rng=None: no class dropout (evaluation). The objective is the
        CE of every token weighted 1/L (under progressive training as
        `progressive_loss_weights`), summed over tokens and averaged over examples (over
        `batch["mask"]` when present)."""
        cfg = self.config
        target_BL, x_BLCv = self.tokens(vae_params, batch)
        rngs = {} if rng is None else {"dropout": rng}
        logits_BLV = self.model.apply({"params": params}, batch["label"], x_BLCv, rngs=rngs)
        ce_BL, nll_BL = cross_entropy(logits_BLV, target_BL, cfg.label_smoothing)
        L = cfg.var.seq_len
        w_L = jnp.full((L,), 1.0 / L)
        if step is not None and cfg.prog_fraction > 0:
            total = cfg.loop.total_steps
            stage_wp = cfg.prog_warmup_steps or total / 300
            w_L = progressive_loss_weights(step, self._scale_L, total, cfg.optim.warmup_steps,
                                           cfg.prog_fraction, cfg.prog_first_scale,
                                           cfg.var.num_scales, stage_wp)
        mask_B = batch.get("mask", jnp.ones(target_BL.shape[:1], bool)).astype(jnp.float32)
        per_example = lambda x_B: jnp.sum(x_B * mask_B) / jnp.maximum(mask_B.sum(), 1)  # noqa
        hit_BL = (jnp.argmax(logits_BLV, -1) == target_BL).astype(jnp.float32)
        tail = slice(*cfg.var.begin_ends[-1])
        metrics = {
            "loss_mean": per_example(nll_BL.mean(1)), "acc_mean": per_example(hit_BL.mean(1)),
            "loss_tail": per_example(nll_BL[:, tail].mean(1)),
            "acc_tail": per_example(hit_BL[:, tail].mean(1)),
        }
        return per_example(ce_BL @ w_L), metrics

    # ---------------------------------------------------------------- steps
    def train_step(self, state, batch, rng):
        loss_fn = functools.partial(self._grad_loss, vae_params=state.frozen, step=state.step)
        (loss, metrics), grads = value_and_grad_accumulated(
            loss_fn, state.params, batch, rng, self.config.loop.grad_accum)
        metrics.update(loss=loss, grad_norm=optax.tree.norm(grads))
        return state.apply_gradients(grads), metrics

    def _grad_loss(self, params, batch, rng, *, vae_params, step):
        return self.loss(params, vae_params, batch, rng, step)

    def eval_step(self, state, batch):
        loss, metrics = self.loss(state.eval_params, state.frozen, batch, None)
        return {"loss": loss, **metrics}

    def sample(self, state, rng):
        cfg = self.config
        if not cfg.sample_classes:
            return None
        opts = sampling.SamplerOptions(cfg.sample_top_k, cfg.sample_top_p)
        with nn.logical_axis_rules(()):   # a few images: no activation sharding constraints
            return sampling.run_sampler(state.eval_params, state.frozen, cfg.var, cfg.vae,
                                        np.asarray(cfg.sample_classes), rng, cfg.sample_cfg,
                                        opts, spread=False)[0]
