"""The paper's ImageNet recipe as a VARTrainConfig: epochs -> steps, lr scaling, warm-up ep/50."""
from __future__ import annotations

from var_jax.configs import VARConfig, VQVAEConfig
from var_jax.sharding import MeshConfig
from var_jax.train.input import DataConfig
from var_jax.train.loop import LoopConfig
from var_jax.train.optimizer import OptimConfig
from var_jax.train.var_task import VARTrainConfig

IMAGENET_TRAIN_IMAGES = 1_281_167


def steps_per_epoch(num_examples: int, global_batch: int) -> int:
    """Full global batches per epoch (the train stream drops the incomplete last one)."""
    return num_examples // global_batch


def imagenet_recipe(var: VARConfig, vae: VQVAEConfig, *, global_batch: int, epochs: int,
                    base_lr: float = 1e-4, wpe: float = 0.1, weight_decay: float = 0.05,
                    weight_decay_end: float | None = None, mesh: MeshConfig = MeshConfig(1, -1, 1),
                    tokenizer: str | None = None, **loop_overrides) -> VARTrainConfig:
    """VAR on ImageNet as the reference trains it (`train.py` with the README's flags).

    Warm-up lasts epochs/50 epochs from 0.5% of the peak lr (base_lr * batch/256), then "lin0"
    down to `wpe` of it; weight decay 0.05 (cosine to `weight_decay_end` if given), no decay on
    1-D params, biases and embeddings of positions/levels; grad clip 2; bf16 compute.
    """
    per_epoch = steps_per_epoch(IMAGENET_TRAIN_IMAGES, global_batch)
    loop = dict(global_batch=global_batch, total_steps=epochs * per_epoch, log_every=100,
                checkpoint_every=2000, keep_checkpoints=3, eval_every=5000, eval_batches=20,
                sample_every=5000)
    loop.update(loop_overrides)
    return VARTrainConfig(
        var=var, vae=vae, mesh=mesh, tokenizer=tokenizer,
        loop=LoopConfig(**loop),
        optim=OptimConfig(base_lr=base_lr, weight_decay=weight_decay,
                          weight_decay_end=weight_decay_end, wpe=wpe,
                          warmup_steps=round(epochs / 50 * per_epoch)),
        data=DataConfig(source="imagenet2012", image_size=vae.image_size, eval_split="validation",
                        data_dir=None, manual_dir=None),
    )
