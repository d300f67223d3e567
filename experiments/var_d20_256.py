"""VAR-d20 on ImageNet 256x256: 600M params, FID 2.95 reported.

Recipe (reference README: --depth=20 --bs=768 --ep=250 --fp16=1 --alng=1e-3 --wpe=0.1):
  global batch 768, 250 epochs (417,000 steps of 1668 batches), peak lr 0.0001 * 768/256,
  warm-up 250/50 epochs from 0.5% of peak, "lin0" down to wpe=0.1 of peak, weight decay
  0.05 (constant), grad clip 2, class dropout 0.1, drop-path 0.08333, bf16 compute.
Model FLOPs: 1.77 TF per training image, 5.67e+20 for the run: about 15 H100-days or
  32 TPU v5p chip-days at 45% MFU (estimates, not measured).
AdaLN gamma init: the reference run's --alng=0.001 (VARConfig.adaln_gamma_init, set by the
  preset).

First convert the tokenizer: var-jax convert vae_ch160v4096z32.pth weights/vae_ch160v4096z32
Optionally pre-tokenize ImageNet (var_jax.data.pretokenize) and add --set data.tokens=DIR.

TPU pod slice (e.g. v5p-64; every worker runs the same command and reads its share):
  gcloud compute tpus tpu-vm ssh $TPU --zone $ZONE --worker=all --command="cd var_jax && \\
    .venv/bin/var-jax train --config experiments/var_d20_256.py --workdir gs://$BUCKET/var_d20_256 \\
    --set loop.multihost=True --set tokenizer=gs://$BUCKET/weights/vae_ch160v4096z32 \\
    --set data.data_dir=gs://$BUCKET/tensorflow_datasets"
GPU host (8 GPUs; for several hosts set JAX_COORDINATOR_ADDRESS=host0:1234 JAX_NUM_PROCESSES=N
JAX_PROCESS_ID=i on each):
  var-jax train --config experiments/var_d20_256.py --workdir /ckpt/var_d20_256 \\
    --set data.manual_dir=/data/imagenet_tars
Re-running the same command resumes from the last checkpoint in the work dir.
"""
from var_jax.configs import VARConfig, VQVAEConfig
from var_jax.train.recipes import imagenet_recipe


def get_config():
    return imagenet_recipe(
        VARConfig.d20(dtype="bfloat16"), VQVAEConfig.res256(),
        global_batch=768, epochs=250, base_lr=0.0001, wpe=0.1,
        tokenizer="weights/vae_ch160v4096z32")
