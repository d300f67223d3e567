"""The released tokenizer's architecture (vae_ch160v4096z32: 109M params, 4096 codes, 256px, scales
1..16) trained from scratch on ImageNet with L1 + VQ + LPIPS + PatchGAN (taming-transformers' VQGAN
recipe: Adam (0.5, 0.9), constant lr, adaptive GAN weight 0.8 switched on at step 50k).

Needs accelerators: 1.8 TFLOP per training image for the VQ-VAE alone (0.60 forward, x3), plus
LPIPS (0.08 per image pair forward) and the discriminator (0.006): about 2.1 TFLOP per image.
300k steps at batch 256 is about 1.6e20 FLOPs: one to two days on 8 H100s at 30-40% of their
TF32 peak (an estimate from the FLOP count, not a measured run: nothing in this repository has
been trained with this config yet, and no accelerator was available to time a step).

The perceptual loss needs the VGG16 and LPIPS weight files (nothing is downloaded), e.g.
torchvision's vgg16-397923af.pth and the lpips package's weights/v0.1/vgg.pth; without them it is
off (a warning says so) and the run trains with L1 + VQ + GAN only.

GPU host (all local GPUs; for several hosts set JAX_COORDINATOR_ADDRESS=host0:1234
JAX_NUM_PROCESSES=N JAX_PROCESS_ID=i on each):
  var-jax train-tokenizer --config experiments/tokenizer_imagenet256.py --workdir /ckpt/tok256 \\
    --set data.manual_dir=/data/imagenet_tars \\
    --set loss.perceptual_weights=/weights/vgg16-397923af.pth,/weights/lpips_vgg.pth
TPU pod slice (every worker runs the same command and reads its share of the data):
  gcloud compute tpus tpu-vm ssh $TPU --zone $ZONE --worker=all --command="cd var_jax && \\
    .venv/bin/var-jax train-tokenizer --config experiments/tokenizer_imagenet256.py \\
    --workdir gs://$BUCKET/tok256 --export /tmp/tok256 --set loop.multihost=True \\
    --set data.data_dir=gs://$BUCKET/tensorflow_datasets \\
    --set loss.perceptual_weights=/weights/vgg16-397923af.pth,/weights/lpips_vgg.pth"
Re-running the same command resumes. The export (WORKDIR/tokenizer, or --export) is a converted
weights directory with VQVAEConfig.res256(): use it as `--set tokenizer=DIR` of the
experiments/var_d*_256.py configs and with `var-jax sample`.
"""
from var_jax.configs import VQVAEConfig
from var_jax.sharding import MeshConfig
from var_jax.train.input import DataConfig
from var_jax.train.loop import LoopConfig
from var_jax.train.optimizer import OptimConfig
from var_jax.train.tokenizer_config import (CodebookConfig, TokenizerLossConfig,
                                            TokenizerTrainConfig)

ADAM = OptimConfig(base_lr=1e-4, b1=0.5, b2=0.9, weight_decay=0.0, warmup_steps=2000,
                   wp0=0.01, schedule="const", grad_clip=0.0, no_decay_keys=("embedding",))


def get_config():
    vqvae = VQVAEConfig.res256()
    return TokenizerTrainConfig(
        vqvae=vqvae,
        loop=LoopConfig(global_batch=256, total_steps=300_000, log_every=100,
                        checkpoint_every=5000, eval_every=5000, eval_batches=16),
        data=DataConfig(source="imagenet2012", image_size=vqvae.image_size),
        mesh=MeshConfig(data=-1),
        optim=ADAM,
        disc_optim=ADAM,
        loss=TokenizerLossConfig(l1_weight=1.0, l2_weight=0.0, vq_weight=1.0,
                                 perceptual_weight=1.0, disc_weight=0.8, disc_start=50_000),
        codebook=CodebookConfig(dead_window=1000, check_every=500, min_usage=0.5),
    )
