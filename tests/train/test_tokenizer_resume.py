"""Tokenizer training on the shared loop: an interrupted run resumes to exactly the uninterrupted
result (GAN, dead-code statistics and EMA included); the export loads as converted weights."""
import json
import os

import jax
import numpy as np
import pytest

from var_jax.configs import VQVAEConfig
from var_jax.train.input import DataConfig
from var_jax.train.loop import LoopConfig, train_and_evaluate
from var_jax.train.tokenizer_config import (CodebookConfig, TokenizerLossConfig,
                                            TokenizerTrainConfig)
from var_jax.train.tokenizer_task import TokenizerTask, export_tokenizer

VQ = VQVAEConfig(vocab_size=32, z_channels=8, ch=16, ch_mult=(1, 2), num_res_blocks=1,
                 patch_nums=(1, 2, 4, 8), image_size=16, norm_groups=8, using_sa=False,
                 using_mid_sa=False)
TOTAL = 4
TIMING = ("examples_per_s", "step_time_s", "mfu")


class Preempted(RuntimeError):
    pass


class ImageStream:
    """Smooth random images in a seeded order; resumable; raises Preempted at batch `stop_at`."""

    def __init__(self, batch_size, seed, stop_at=None):
        rng = np.random.default_rng(7)
        coarse = rng.uniform(-1, 1, (64, 4, 4, 3)).astype(np.float32)
        self.pool = np.repeat(np.repeat(coarse, 4, axis=1), 4, axis=2)
        self.batch_size, self.seed, self.stop_at, self.index = batch_size, seed, stop_at, 0

    def __iter__(self):
        return self

    def __next__(self):
        if self.index == self.stop_at:
            raise Preempted(f"stream stopped at batch {self.index}")
        order = np.random.default_rng([self.seed, self.index]).permutation(len(self.pool))
        self.index += 1
        return {"image": self.pool[order[:self.batch_size]], "label": np.zeros(self.batch_size,
                                                                               np.int32)}

    def get_state(self):
        return {"index": self.index}

    def set_state(self, state):
        self.index = int(state["index"])


def streams(stop_at=None):
    return lambda config, split: ImageStream(config.loop.global_batch, config.loop.seed, stop_at)


def config():
    return TokenizerTrainConfig(
        vqvae=VQ, loop=LoopConfig(global_batch=4, total_steps=TOTAL, log_every=1,
                                  checkpoint_every=2, async_checkpoint=False, ema_decay=0.5,
                                  tensorboard=False, progress_bar=False),
        data=DataConfig(source="digits", image_size=16),
        loss=TokenizerLossConfig(disc_weight=0.5, disc_start=2, disc_channels=16, disc_layers=2,
                                 disc_norm_groups=8),
        codebook=CodebookConfig(dead_window=1, check_every=1))


def rows(workdir):
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        return [{k: v for k, v in json.loads(line).items() if k not in TIMING} for line in f]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """(straight state, resumed state, their workdirs); XLA programs cached between the runs."""
    cache_dir = str(tmp_path_factory.mktemp("xla_cache"))
    saved = {k: jax.config.values[k] for k in ("jax_compilation_cache_dir",
                                               "jax_persistent_cache_min_compile_time_secs")}
    jax.config.update("jax_compilation_cache_dir", cache_dir)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0)
    try:
        cfg = config()
        a, b = str(tmp_path_factory.mktemp("straight")), str(tmp_path_factory.mktemp("resumed"))
        straight = train_and_evaluate(cfg, a, TokenizerTask(cfg), streams=streams())
        with pytest.raises(Preempted):
            train_and_evaluate(cfg, b, TokenizerTask(cfg), streams=streams(stop_at=3))
        resumed = train_and_evaluate(cfg, b, TokenizerTask(cfg), streams=streams())
    finally:
        for k, v in saved.items():
            jax.config.update(k, v)
    return cfg, straight, resumed, a, b


def test_resume_gives_identical_continuation(runs):
    _, straight, resumed, a, b = runs
    assert [r["step"] for r in rows(b)] == list(range(1, TOTAL + 1))
    assert rows(a) == rows(b)
    assert rows(a)[-1]["d_loss"] > 0 and rows(a)[0]["d_loss"] == 0   # GAN on from step 3
    sa, sb = jax.device_get(straight.checkpointed()), jax.device_get(resumed.checkpointed())
    assert set(sa) == {"step", "params", "opt_state", "rng", "ema_params", "extra"}
    la, lb = jax.tree_util.tree_leaves_with_path(sa), jax.tree_util.tree_leaves_with_path(sb)
    assert [p for p, _ in la] == [p for p, _ in lb]
    for (path, x), (_, y) in zip(la, lb):
        np.testing.assert_array_equal(x, y, err_msg=jax.tree_util.keystr(path))


def test_export_loads_as_converted_weights(runs, tmp_path):
    from var_jax.convert import load_weights
    from var_jax.vqvae import VQVAE

    cfg, straight, _, _, _ = runs
    path = export_tokenizer(straight, cfg, str(tmp_path / "tokenizer"))
    export_tokenizer(straight, cfg, path)                # a second export replaces the first
    loaded_cfg, params = load_weights(path, cfg.vqvae)
    assert loaded_cfg == cfg.vqvae
    want = jax.device_get(straight.ema_params["vqvae"])  # EMA weights are the ones exported
    jax.tree.map(np.testing.assert_array_equal, params, want)
    x = ImageStream(2, 0).__next__()["image"][:2]
    idx = VQVAE(cfg.vqvae).apply({"params": params}, x, method=VQVAE.encode_indices)
    assert [i.shape for i in idx] == [(2, p * p) for p in VQ.patch_nums]
