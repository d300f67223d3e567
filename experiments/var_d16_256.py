"""VAR-d16 on ImageNet 256x256: 310M params, FID 3.55 reported.

Recipe (reference README: --depth=16 --bs=768 --ep=200 --fp16=1 --alng=1e-3 --wpe=0.1):
  global batch 768, 200 epochs (333,600 steps of 1668 batches), peak lr 0.0001 * 768/256,
  warm-up 200/50 epochs from 0.5% of peak, "lin0" down to wpe=0.1 of peak, weight decay
  0.05 (constant), grad clip 2, class dropout 0.1, drop-path 0.06667, bf16 compute.
Model FLOPs: 0.93 TF per training image, 2.38e+20 for the run: about 6 H100-days or
  13 TPU v5p chip-days at 45% MFU (estimates, not measured).
AdaLN gamma init: the reference run's --alng=0.001 (VARConfig.adaln_gamma_init, set by the
  preset).

remat="dots": compiled ahead of time for v5e:8x8 at batch 768 it needs 4.1 of 16 GiB per chip
  (16.6 GiB without remat; experiments/aot_compile.py, README "Ahead-of-time memory proof").
First convert the tokenizer: var-jax convert vae_ch160v4096z32.pth weights/vae_ch160v4096z32
Optionally pre-tokenize ImageNet (var_jax.data.pretokenize) and add --set data.tokens=DIR.

TPU pod slice (e.g. v5p-32; every worker runs the same command and reads its share):
  gcloud compute tpus tpu-vm ssh $TPU --zone $ZONE --worker=all --command="cd var_jax && \\
    .venv/bin/var-jax train --config experiments/var_d16_256.py --workdir gs://$BUCKET/var_d16_256 \\
    --set loop.multihost=True --set tokenizer=gs://$BUCKET/weights/vae_ch160v4096z32 \\
    --set data.data_dir=gs://$BUCKET/tensorflow_datasets"
GPU host (8 GPUs; for several hosts set JAX_COORDINATOR_ADDRESS=host0:1234 JAX_NUM_PROCESSES=N
JAX_PROCESS_ID=i on each):
  var-jax train --config experiments/var_d16_256.py --workdir /ckpt/var_d16_256 \\
    --set data.manual_dir=/data/imagenet_tars
Re-running the same command resumes from the last checkpoint in the work dir.
"""
from var_jax.configs import VARConfig, VQVAEConfig
from var_jax.train.recipes import imagenet_recipe


def get_config():
    return imagenet_recipe(
        VARConfig.d16(dtype="bfloat16", remat="dots"), VQVAEConfig.res256(),
        global_batch=768, epochs=200, base_lr=0.0001, wpe=0.1,
        tokenizer="weights/vae_ch160v4096z32")
