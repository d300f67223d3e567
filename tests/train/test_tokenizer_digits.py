"""A real (small) tokenizer run on the digits: reconstruction error falls, no scale collapses."""
import itertools
import json

import jax
import numpy as np
import pytest

from var_jax.configs import VQVAEConfig
from var_jax.train.input import DataConfig
from var_jax.train.loop import LoopConfig, train_and_evaluate
from var_jax.train.optimizer import OptimConfig
from var_jax.train.state import TrainState
from var_jax.train.tokenizer_config import CodebookConfig, TokenizerTrainConfig
from var_jax.train.tokenizer_task import TokenizerTask

STEPS, BATCH, EVAL_BATCHES = 200, 16, 8
VQ = VQVAEConfig(vocab_size=64, z_channels=8, ch=16, ch_mult=(1, 2), num_res_blocks=1,
                 patch_nums=(1, 2, 3, 4, 6, 8), image_size=16, norm_groups=8, using_sa=False,
                 using_mid_sa=False)
# Floors on the distinct codes per eval batch of 16 images (the 1x1 scale can use at most 16).
# Measured (2 CPU cores, ~100 s): 4.7, 25, 38, 48, 51, 59 codes; without codebook upkeep the
# 1x1 scale collapses to a single code.
MIN_CODES = (3, 12, 20, 20, 20, 20)


@pytest.mark.slow
def test_digits_reconstruction_improves_and_every_scale_keeps_codes(tmp_path):
    data_dir = str(tmp_path / "tfds")
    cfg = TokenizerTrainConfig(
        vqvae=VQ,
        loop=LoopConfig(global_batch=BATCH, total_steps=STEPS, log_every=50,
                        checkpoint_every=STEPS, eval_every=STEPS, eval_batches=EVAL_BATCHES,
                        tensorboard=False, progress_bar=False),
        data=DataConfig(source="digits", image_size=16, eval_split="clf_test", data_dir=data_dir,
                        prefetch=1),
        optim=OptimConfig(base_lr=0.016, b1=0.9, b2=0.99, weight_decay=0.0, warmup_steps=10,
                          schedule="cos", wpe=0.1, grad_clip=1.0, no_decay_keys=("embedding",)),
        codebook=CodebookConfig(dead_window=50, check_every=25, min_usage=0.5))
    task = TokenizerTask(cfg)

    from var_jax.data import make_image_stream
    key = jax.random.key(0)
    untrained = TrainState.create(params=task.init(key)["params"], tx=task.optimizer()[0], rng=key)
    stream = make_image_stream("digits", "clf_test", 16, batch_size=BATCH, seed=0, train=False,
                               data_dir=data_dir, prefetch=1)
    evaluate = jax.jit(task.eval_step)
    before = np.mean([float(evaluate(untrained, b)["l1"])
                      for b in itertools.islice(stream, EVAL_BATCHES)])

    train_and_evaluate(cfg, str(tmp_path / "run"), task)
    with open(tmp_path / "run" / "metrics.jsonl") as f:
        last = [json.loads(line) for line in f][-1]
    after = last["eval_l1"]
    codes = [last[f"eval_usage_s{k}"] * VQ.vocab_size for k in range(VQ.num_scales)]
    print(f"eval L1 {before:.4f} -> {after:.4f}, PSNR {last['eval_psnr']:.2f} dB, "
          f"codes per eval batch per scale {np.round(codes, 1).tolist()}")
    assert after < 0.25 * before and after < 0.15, (before, after)   # measured 0.72 -> 0.071
    for k, (n, floor) in enumerate(zip(codes, MIN_CODES)):
        assert n >= floor, f"scale {k} ({VQ.patch_nums[k]}x{VQ.patch_nums[k]}) uses {n:.1f} codes"
