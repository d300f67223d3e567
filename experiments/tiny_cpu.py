"""Tiny VAR on scikit-learn's handwritten digits: the whole training pipeline, offline, on a laptop CPU.

  var-jax train --config experiments/tiny_cpu.py --workdir /tmp/var_tiny_cpu

Data: the bundled 8x8 digits upscaled to 32x32 ("digits" source, 1197 train images; eval on the
disjoint "clf_test" split), batch 16. Model: a 3-block, 96-wide VAR over 6 scales (1..8, 130
tokens) of a small VQ-VAE. The tokenizer is randomly initialised and frozen unless a trained one is
given (--set tokenizer=DIR, a converted/exported tokenizer with the VQVAEConfig below); with random
weights its codes are a fixed hashing of the images, which the transformer still learns to predict:
the point is exercising sharding, checkpoints, resume, evals and sample grids.
Measured (2 CPU cores shared with other jobs, load ~10): 400 steps in 6.6 min wall, 2.7 CPU-min;
train loss 5.53 (steps 1-20; ln 256 = 5.55) -> 3.96 (381-400), eval loss 4.57 (step 100) -> 3.97.
With a random tokenizer the sample grids are noise: train one first for pictures of digits.
"""
from var_jax.configs import VARConfig, VQVAEConfig
from var_jax.sharding import MeshConfig
from var_jax.train.input import DataConfig
from var_jax.train.loop import LoopConfig
from var_jax.train.optimizer import OptimConfig
from var_jax.train.var_task import VARTrainConfig

PATCH_NUMS = (1, 2, 3, 4, 6, 8)
TOKENIZER = VQVAEConfig(vocab_size=256, z_channels=16, ch=32, ch_mult=(1, 2, 2), num_res_blocks=1,
                        patch_nums=PATCH_NUMS, image_size=32, norm_groups=8)


def get_config():
    return VARTrainConfig(
        var=VARConfig(depth=3, embed_dim=96, num_heads=3, num_classes=10, patch_nums=PATCH_NUMS,
                      vocab_size=TOKENIZER.vocab_size, vae_channels=TOKENIZER.z_channels,
                      drop_path_rate=0.0),
        vae=TOKENIZER,
        loop=LoopConfig(global_batch=16, total_steps=400, log_every=20, checkpoint_every=100,
                        eval_every=100, eval_batches=4, sample_every=200),
        optim=OptimConfig(base_lr=2e-3, warmup_steps=20, wpe=0.1),
        data=DataConfig(source="digits", image_size=TOKENIZER.image_size, eval_split="clf_test",
                        prefetch=1),
        mesh=MeshConfig(data=-1),
        sample_classes=tuple(range(10)),
        sample_top_k=0, sample_top_p=0.0,
    )
