"""Shared by the tokenizer-training tests: a tiny VQ-VAE config, task and state builders, an
in-memory resumable image stream, and (run as a script) the interrupted-and-resumed runs."""
import dataclasses
import json
import os
import sys

import jax
import numpy as np

from var_jax.configs import VQVAEConfig
from var_jax.sharding import MeshConfig
from var_jax.train.input import DataConfig
from var_jax.train.loop import LoopConfig
from var_jax.train.state import TrainState
from var_jax.train.tokenizer_config import (CodebookConfig, TokenizerLossConfig,
                                            TokenizerTrainConfig)
from var_jax.train.tokenizer_task import TokenizerTask

VQ = VQVAEConfig(vocab_size=32, z_channels=8, ch=16, ch_mult=(1, 2), num_res_blocks=1,
                 patch_nums=(1, 2, 4, 8), image_size=16, norm_groups=8, using_sa=False,
                 using_mid_sa=False)
GAN = dict(disc_weight=0.5, disc_channels=16, disc_layers=2, disc_norm_groups=8)
RESUME_STEPS = 4
# Compile-time over run-time: these tests run tiny programs once (LLVM at -O0: ~3x faster builds).
FAST = {"xla_backend_optimization_level": 0}


def fast_jit(fn):
    return jax.jit(fn, compiler_options=FAST)


def make_task(loss=TokenizerLossConfig(), codebook=CodebookConfig(), total_steps=10):
    return TokenizerTask(TokenizerTrainConfig(
        vqvae=VQ, loop=LoopConfig(global_batch=4, total_steps=total_steps),
        data=DataConfig(source="digits", image_size=VQ.image_size), loss=loss,
        codebook=codebook))


def make_state(task, seed=0):
    key = jax.random.key(seed)
    return TrainState.create(**task.init(key), tx=task.optimizer()[0], rng=key)


def images(seed=1, n=4):
    return jax.random.uniform(jax.random.key(seed), (n, 16, 16, 3), minval=-1, maxval=1)


class Preempted(RuntimeError):
    pass


class ImageStream:
    """Smooth random images in a seeded order; resumable; raises Preempted at batch `stop_at`."""

    def __init__(self, batch_size, seed, stop_at=None):
        coarse = np.random.default_rng(7).uniform(-1, 1, (64, 4, 4, 3)).astype(np.float32)
        self.pool = np.repeat(np.repeat(coarse, 4, axis=1), 4, axis=2)
        self.batch_size, self.seed, self.stop_at, self.index = batch_size, seed, stop_at, 0

    def __iter__(self):
        return self

    def __next__(self):
        if self.index == self.stop_at:
            raise Preempted(f"stream stopped at batch {self.index}")
        order = np.random.default_rng([self.seed, self.index]).permutation(len(self.pool))
        self.index += 1
        take = order[:self.batch_size]
        return {"image": self.pool[take], "label": np.zeros(len(take), np.int32)}

    def get_state(self):
        return {"index": self.index}

    def set_state(self, state):
        self.index = int(state["index"])


def resume_config():
    """GAN from step 3, codebook upkeep every step, EMA, cosine lookup: every piece of state a
    resume restores; on a data=2 x fsdp=4 mesh of 8 (fake) devices."""
    return TokenizerTrainConfig(
        vqvae=dataclasses.replace(VQ, using_znorm=True),
        loop=LoopConfig(global_batch=8, total_steps=RESUME_STEPS, log_every=1,
                        checkpoint_every=2, async_checkpoint=False, ema_decay=0.5,
                        tensorboard=False, progress_bar=False),
        mesh=MeshConfig(data=2, fsdp=4),
        data=DataConfig(source="digits", image_size=VQ.image_size),
        loss=TokenizerLossConfig(**GAN, disc_start=2),
        codebook=CodebookConfig(dead_window=1, check_every=1))


def run_interrupted_and_straight(root: str) -> None:
    """root/straight: 4 steps; root/resumed: preempted after the step-2 checkpoint, then the same
    command again. Writes each final state (npz) and exports the straight run's tokenizer."""
    from var_jax.train.loop import train_and_evaluate
    from var_jax.train.tokenizer_task import export_tokenizer

    def streams(stop_at=None):
        return lambda config, split: ImageStream(config.loop.global_batch, config.loop.seed,
                                                 stop_at)

    cfg = resume_config()
    straight = train_and_evaluate(cfg, os.path.join(root, "straight"), TokenizerTask(cfg),
                                  streams=streams())
    try:
        train_and_evaluate(cfg, os.path.join(root, "resumed"), TokenizerTask(cfg),
                           streams=streams(stop_at=3))
        raise AssertionError("the preempted run did not stop")
    except Preempted:
        pass
    resumed = train_and_evaluate(cfg, os.path.join(root, "resumed"), TokenizerTask(cfg),
                                 streams=streams())
    for name, state in (("straight", straight), ("resumed", resumed)):
        flat = {jax.tree_util.keystr(k): np.asarray(v) for k, v in
                jax.tree_util.tree_leaves_with_path(jax.device_get(state.checkpointed()))}
        np.savez(os.path.join(root, f"{name}_state.npz"), **flat)
    export_tokenizer(straight, cfg, os.path.join(root, "export"))
    export_tokenizer(straight, cfg, os.path.join(root, "export"))   # a re-export replaces it
    specs = {name: str(leaf.sharding.spec) for name, leaf in (
        ("codebook", straight.params["vqvae"]["quantize"]["embedding"]),
        ("decoder_conv_in", straight.params["vqvae"]["decoder"]["conv_in"]["kernel"]),
        ("disc_conv_2", straight.params["disc"]["conv_2"]["kernel"]))}
    print(json.dumps({"devices": jax.device_count(), "specs": specs}))


if __name__ == "__main__":
    jax.config.update("jax_compilation_cache_dir", sys.argv[2])   # the 3 runs compile once
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0)
    run_interrupted_and_straight(sys.argv[1])
