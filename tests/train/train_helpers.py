"""Test helpers: a tiny classifier task, an in-memory resumable stream, an 8-fake-device runner."""
from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from var_jax.configs import VARConfig, VQVAEConfig
from var_jax.sharding import MeshConfig
from var_jax.train.accumulate import value_and_grad_accumulated
from var_jax.train.input import DataConfig
from var_jax.train.loop import LoopConfig, Task, train_and_evaluate
from var_jax.train.optimizer import OptimConfig, make_optimizer

DIM, HIDDEN, CLASSES = 16, 32, 8

# The smallest real VAR + tokenizer pair: 3 scales (14 tokens), 32 codes, a 1-level VQ-VAE.
TINY_PATCH_NUMS = (1, 2, 3)
TINY_VAE = VQVAEConfig(vocab_size=32, z_channels=8, ch=8, ch_mult=(1,), num_res_blocks=1,
                       patch_nums=TINY_PATCH_NUMS, image_size=3, norm_groups=4, using_sa=False,
                       using_mid_sa=False)
TINY_VAR = VARConfig(depth=1, embed_dim=32, num_heads=2, num_classes=4,
                     patch_nums=TINY_PATCH_NUMS, vocab_size=32, vae_channels=8,
                     drop_path_rate=0.1)


def tiny_var_config(**loop):
    """A VARTrainConfig of the tiny pair (random frozen tokenizer; data is not read)."""
    from var_jax.train.var_task import VARTrainConfig
    return VARTrainConfig(
        var=TINY_VAR, vae=TINY_VAE,
        loop=LoopConfig(**{"global_batch": 8, "total_steps": 200, **loop}),
        optim=OptimConfig(base_lr=0.1, warmup_steps=10, wpe=0.1),
        data=DataConfig(source="digits", image_size=TINY_VAE.image_size),
        sample_classes=(0, 3), sample_top_k=5)
_lp = nn.with_logical_partitioning


class ToyModel(nn.Module):
    """Two dense layers with logical axis names, like the transformer's FFN."""

    @nn.compact
    def __call__(self, x_BD):
        init = nn.initializers.lecun_normal()
        h = nn.Dense(HIDDEN, kernel_init=_lp(init, ("embed", "mlp")),
                     bias_init=_lp(nn.initializers.zeros, ("mlp",)))(x_BD)
        h = nn.with_logical_constraint(nn.gelu(h), ("batch", "mlp"))
        return nn.Dense(CLASSES, kernel_init=_lp(init, ("mlp", "vocab")),
                        bias_init=_lp(nn.initializers.zeros, ("vocab",)))(h)


@dataclasses.dataclass(frozen=True)
class ToyConfig:
    loop: LoopConfig
    mesh: MeshConfig = MeshConfig()
    optim: OptimConfig = OptimConfig(base_lr=0.05, warmup_steps=2, wpe=0.1)
    data: str = "toy"
    input_noise: float = 0.0   # dropout-like input noise, drawn from the step key


class ToyTask(Task):
    flops_per_example = 6.0 * (DIM * HIDDEN + HIDDEN * CLASSES)

    def __init__(self, config: ToyConfig):
        self.config = config
        self.model = ToyModel()

    def init(self, rng):
        return {"params": self.model.init(rng, jnp.zeros((1, DIM)))["params"]}

    def optimizer(self):
        loop = self.config.loop
        return make_optimizer(self.config.optim, global_batch=loop.global_batch,
                              total_steps=loop.total_steps)

    def _loss(self, params, batch, rng):
        x = batch["x"] + self.config.input_noise * jax.random.normal(rng, batch["x"].shape)
        logits = self.model.apply({"params": params}, x)
        loss = -jnp.mean(jnp.take_along_axis(jax.nn.log_softmax(logits), batch["y"][:, None], 1))
        return loss, {"acc": jnp.mean(jnp.argmax(logits, -1) == batch["y"])}

    def train_step(self, state, batch, rng):
        (loss, aux), grads = value_and_grad_accumulated(self._loss, state.params, batch, rng,
                                                        self.config.loop.grad_accum)
        new = state.apply_gradients(grads)
        return new, {"loss": loss, **aux}

    def eval_step(self, state, batch):
        loss, aux = self._loss(state.eval_params, batch, jax.random.key(0))
        return {"loss": loss, **aux}


class ArrayStream:
    """Batches of a fixed labelled gaussian-mixture set in a seeded order; resumable."""

    def __init__(self, batch_size: int, seed: int = 0, size: int = 512, poison_at: int = -1):
        rng = np.random.default_rng(1234)
        centers = rng.normal(size=(CLASSES, DIM)) * 2
        self.y = rng.integers(0, CLASSES, size).astype(np.int32)
        self.x = (centers[self.y] + rng.normal(size=(size, DIM))).astype(np.float32)
        self.batch_size, self.seed, self.index, self.poison_at = batch_size, seed, 0, poison_at

    def __iter__(self):
        return self

    def __next__(self):
        epoch, i = divmod(self.index * self.batch_size, len(self.y))
        order = np.random.default_rng([self.seed, epoch]).permutation(len(self.y))
        take = order[np.arange(i, i + self.batch_size) % len(self.y)]
        self.index += 1
        x = self.x[take]
        if self.index == self.poison_at:
            x = np.full_like(x, np.nan)
        return {"x": x, "y": self.y[take]}

    def get_state(self) -> dict:
        return {"index": self.index}

    def set_state(self, state: dict) -> None:
        self.index = int(state["index"])


def toy_streams(poison_at: int = -1):
    def streams(config, split):
        return ArrayStream(config.loop.global_batch // jax.process_count(),
                           seed=config.loop.seed if split == "train" else 99,
                           poison_at=poison_at if split == "train" else -1)
    return streams


def toy_config(total_steps: int = 4, **loop) -> ToyConfig:
    """Checkpoints every 2 steps (all kept), no TensorBoard: a run of a few seconds."""
    kw = dict(global_batch=8, total_steps=total_steps, log_every=1, checkpoint_every=2,
              keep_checkpoints=5, tensorboard=False, progress_bar=False, async_checkpoint=False)
    return ToyConfig(loop=LoopConfig(**{**kw, **loop}))


def train_toy(workdir, cfg=None, task=None, **kwargs):
    cfg = cfg or toy_config()
    return train_and_evaluate(cfg, str(workdir), task or ToyTask(cfg), streams=toy_streams(),
                              **kwargs)


TESTS = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


# Tests compile more than they compute: unoptimised CPU code halves their compile time.
FAST_COMPILE = "--xla_backend_optimization_level=0"


def run_with_8_devices(script: str, *args: str, timeout: int = 300) -> dict:
    """Run `script` with 8 fake CPU devices (XLA_FLAGS set before JAX starts); returns the JSON
    object it prints on its last line."""
    path = os.pathsep.join([os.path.join(TESTS, "train"), os.path.dirname(TESTS)])
    env = {**os.environ, "XLA_FLAGS": f"--xla_force_host_platform_device_count=8 {FAST_COMPILE}",
           "JAX_PLATFORMS": "cpu", "PYTHONPATH": path}
    out = subprocess.run([sys.executable, script, *args], env=env, capture_output=True,
                         text=True, timeout=timeout)
    assert out.returncode == 0, (f"{script} {args} failed:\n{out.stdout[-3000:]}\n"
                                 f"{out.stderr[-5000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


class SlowStream(ArrayStream):
    """An ArrayStream that takes `delay` seconds per batch (so a test can kill between steps)."""

    def __init__(self, *args, delay: float = 0.0, **kwargs):
        super().__init__(*args, **kwargs)
        self.delay = delay

    def __next__(self):
        import time
        time.sleep(self.delay)
        return super().__next__()


def run_toy(workdir: str, total_steps: int, delay: float) -> None:
    """Train the toy task (checkpoint every 10 steps, a metrics row every step) and write the
    final params to workdir/final_params.npz."""

    cfg = ToyConfig(loop=LoopConfig(global_batch=16, total_steps=total_steps, log_every=1,
                                    checkpoint_every=10, tensorboard=False, progress_bar=False,
                                    ema_decay=0.8, grad_accum=2), input_noise=0.3)
    streams = lambda config, split: SlowStream(16, seed=5, delay=delay)  # noqa: E731
    state = train_and_evaluate(cfg, workdir, ToyTask(cfg), streams=streams)
    flat = {jax.tree_util.keystr(k): np.asarray(v) for k, v in
            jax.tree_util.tree_leaves_with_path(state.checkpointed())}
    np.savez(os.path.join(workdir, "final_params.npz"), **flat)


if __name__ == "__main__":
    run_toy(sys.argv[1], int(sys.argv[2]), float(sys.argv[3]))
