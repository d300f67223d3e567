"""One process of the multi-host test: trains the tiny VAR on digits with the real loop and input.

  python multihost_worker.py WORKDIR DATA_DIR RESUME_AT TOTAL

Trains to step RESUME_AT (checkpointing every 2 steps), then calls train_and_evaluate again to
resume from that checkpoint and train to TOTAL (RESUME_AT = TOTAL: one straight run). Several
processes join through JAX_COORDINATOR_ADDRESS / JAX_NUM_PROCESSES / JAX_PROCESS_ID, as on a
pod slice. Writes WORKDIR/batches_<process>.npz (the labels and image sums of every host batch
this process read) and, on process 0, WORKDIR/final_params.npz (the whole params, gathered).
"""
import os
import sys

import jax
import numpy as np
from jax.experimental import multihost_utils

from var_jax.configs import VARConfig, VQVAEConfig
from var_jax.sharding import MeshConfig
from var_jax.train.input import DataConfig, default_streams
from var_jax.train.loop import LoopConfig, train_and_evaluate
from var_jax.train.optimizer import OptimConfig
from var_jax.train.var_task import VARTask, VARTrainConfig

PATCH_NUMS = (1, 2, 4)   # 21 tokens of an 8x8 image (two VQ-VAE levels: x2 down)
VAE = VQVAEConfig(vocab_size=32, z_channels=8, ch=8, ch_mult=(1, 1), num_res_blocks=1,
                  patch_nums=PATCH_NUMS, image_size=8, norm_groups=4, using_sa=False,
                  using_mid_sa=False)


def config(data_dir: str, total_steps: int) -> VARTrainConfig:
    """A constant learning rate, so a run stopped at step k and resumed with a larger
    total_steps follows the straight run exactly."""
    return VARTrainConfig(
        var=VARConfig(depth=1, embed_dim=32, num_heads=2, num_classes=10, patch_nums=PATCH_NUMS,
                      vocab_size=VAE.vocab_size, vae_channels=VAE.z_channels,
                      drop_path_rate=0.1),
        vae=VAE,
        loop=LoopConfig(global_batch=8, total_steps=total_steps, log_every=1, checkpoint_every=2,
                        async_checkpoint=True, tensorboard=False, progress_bar=False),
        optim=OptimConfig(base_lr=0.5, schedule="const", weight_decay=0.05),
        data=DataConfig(source="digits", image_size=VAE.image_size, eval_split=None,
                        data_dir=data_dir, prefetch=1),
        mesh=MeshConfig(data=2, fsdp=2),   # params sharded over fsdp, which spans the hosts
        sample_classes=())


class Recorded:
    """A stream that keeps (labels, per-image sums) of every batch it hands out."""

    def __init__(self, stream, log: list):
        self.stream, self.log = stream, log

    def __next__(self):
        batch = next(self.stream)
        self.log.append((batch["label"].copy(), batch["image"].sum(axis=(1, 2, 3))))
        return batch

    def __getattr__(self, name):
        return getattr(self.stream, name)


def main(workdir: str, data_dir: str, resume_at: int, total: int) -> None:
    log: list = []
    streams = lambda cfg, split: Recorded(default_streams(cfg, split), log)  # noqa: E731
    for steps in sorted({resume_at, total}):
        cfg = config(data_dir, steps)
        state = train_and_evaluate(cfg, workdir, VARTask(cfg), streams=streams,
                                   allow_config_change=True)   # total_steps grows on resume
    pid = jax.process_index()
    np.savez(os.path.join(workdir, f"batches_{pid}.npz"),
             labels=np.stack([l for l, _ in log]), sums=np.stack([s for _, s in log]))
    params = multihost_utils.process_allgather(state.params, tiled=True)
    if pid == 0:
        flat = {jax.tree_util.keystr(k): np.asarray(v)
                for k, v in jax.tree_util.tree_leaves_with_path(params)}
        np.savez(os.path.join(workdir, "final_params.npz"), step=int(state.step), **flat)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]))
