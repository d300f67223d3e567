"""VAR-d36 on ImageNet 512x512: 2.3B params, shared AdaLN, FID 2.63 reported.

Recipe (reference README: --depth=36 --saln=1 --pn=512 --bs=768 --ep=350 --tblr=8e-5 --fp16=1 --alng=5e-6 --wpe=0.01 --twde=0.08):
  global batch 768, 350 epochs (583,800 steps of 1668 batches), peak lr 8e-05 * 768/256,
  warm-up 350/50 epochs from 0.5% of peak, "lin0" down to wpe=0.01 of peak, weight decay
  0.05, cosine to 0.08 ("twde"), grad clip 2, class dropout 0.1, drop-path 0.15, bf16 compute.
Model FLOPs: 35.94 TF per training image, 1.61e+22 for the run: about 419 H100-days or
  903 TPU v5p chip-days at 45% MFU (estimates, not measured).
AdaLN gamma init: the reference run's --alng=5e-06 (VARConfig.adaln_gamma_init, set by the
  preset).
  At 512px an image is 2240 tokens: add --set loop.grad_accum=2 (or more) if activations
  do not fit.

remat="dots": compiled ahead of time for v5p:4x4x4 at batch 512 it needs 37.8 of 95 GiB per chip
  (178.8 GiB without remat; experiments/aot_compile.py, README "Ahead-of-time memory proof").
First convert the tokenizer: var-jax convert vae_ch160v4096z32.pth weights/vae_ch160v4096z32
Optionally pre-tokenize ImageNet (var_jax.data.pretokenize) and add --set data.tokens=DIR.

TPU pod slice (e.g. v5p-512; every worker runs the same command and reads its share):
  gcloud compute tpus tpu-vm ssh $TPU --zone $ZONE --worker=all --command="cd var_jax && \\
    .venv/bin/var-jax train --config experiments/var_d36_512.py --workdir gs://$BUCKET/var_d36_512 \\
    --set loop.multihost=True --set tokenizer=gs://$BUCKET/weights/vae_ch160v4096z32 \\
    --set data.data_dir=gs://$BUCKET/tensorflow_datasets"
GPU host (8 GPUs; for several hosts set JAX_COORDINATOR_ADDRESS=host0:1234 JAX_NUM_PROCESSES=N
JAX_PROCESS_ID=i on each):
  var-jax train --config experiments/var_d36_512.py --workdir /ckpt/var_d36_512 \\
    --set data.manual_dir=/data/imagenet_tars
Re-running the same command resumes from the last checkpoint in the work dir.
"""
from var_jax.configs import VARConfig, VQVAEConfig
from var_jax.train.recipes import imagenet_recipe


def get_config():
    return imagenet_recipe(
        VARConfig.d36(dtype="bfloat16", remat="dots"), VQVAEConfig.res512(),
        global_batch=768, epochs=350, base_lr=8e-05, wpe=0.01, weight_decay_end=0.08,
        tokenizer="weights/vae_ch160v4096z32")
