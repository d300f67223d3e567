"""VAR-d24 on ImageNet 256x256: 1.0B params, FID 2.33 reported.

Recipe (reference README: --depth=24 --bs=768 --ep=350 --tblr=8e-5 --fp16=1 --alng=1e-4 --wpe=0.01):
  global batch 768, 350 epochs (583,800 steps of 1668 batches), peak lr 8e-05 * 768/256,
  warm-up 350/50 epochs from 0.5% of peak, "lin0" down to wpe=0.01 of peak, weight decay
  0.05 (constant), grad clip 2, class dropout 0.1, drop-path 0.1, bf16 compute.
Model FLOPs: 3.00 TF per training image, 1.35e+21 for the run: about 35 H100-days or
  75 TPU v5p chip-days at 45% MFU (estimates, not measured).
AdaLN gamma init: the reference run's --alng=0.0001 (VARConfig.adaln_gamma_init, set by the
  preset).
  The project brief listed batch 1024 for d24; the reference README uses 768, kept here.

First convert the tokenizer: var-jax convert vae_ch160v4096z32.pth weights/vae_ch160v4096z32
Optionally pre-tokenize ImageNet (var_jax.data.pretokenize) and add --set data.tokens=DIR.

TPU pod slice (e.g. v5p-128; every worker runs the same command and reads its share):
  gcloud compute tpus tpu-vm ssh $TPU --zone $ZONE --worker=all --command="cd var_jax && \\
    .venv/bin/var-jax train --config experiments/var_d24_256.py --workdir gs://$BUCKET/var_d24_256 \\
    --set loop.multihost=True --set tokenizer=gs://$BUCKET/weights/vae_ch160v4096z32 \\
    --set data.data_dir=gs://$BUCKET/tensorflow_datasets"
GPU host (8 GPUs; for several hosts set JAX_COORDINATOR_ADDRESS=host0:1234 JAX_NUM_PROCESSES=N
JAX_PROCESS_ID=i on each):
  var-jax train --config experiments/var_d24_256.py --workdir /ckpt/var_d24_256 \\
    --set data.manual_dir=/data/imagenet_tars
Re-running the same command resumes from the last checkpoint in the work dir.
"""
from var_jax.configs import VARConfig, VQVAEConfig
from var_jax.train.recipes import imagenet_recipe


def get_config():
    return imagenet_recipe(
        VARConfig.d24(dtype="bfloat16"), VQVAEConfig.res256(),
        global_batch=768, epochs=350, base_lr=8e-05, wpe=0.01,
        tokenizer="weights/vae_ch160v4096z32")
