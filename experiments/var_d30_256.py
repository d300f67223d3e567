"""VAR-d30 on ImageNet 256x256: 2.0B params, FID 1.97 reported.

Recipe (reference README: --depth=30 --bs=1024 --ep=350 --tblr=8e-5 --fp16=1 --alng=1e-5 --wpe=0.01 --twde=0.08):
  global batch 1024, 350 epochs (437,850 steps of 1251 batches), peak lr 8e-05 * 1024/256,
  warm-up 350/50 epochs from 0.5% of peak, "lin0" down to wpe=0.01 of peak, weight decay
  0.05, cosine to 0.08 ("twde"), grad clip 2, class dropout 0.1, drop-path 0.125, bf16 compute.
Model FLOPs: 5.77 TF per training image, 2.59e+21 for the run: about 67 H100-days or
  145 TPU v5p chip-days at 45% MFU (estimates, not measured).
AdaLN gamma init: the reference run's --alng=1e-5 (VARConfig.adaln_gamma_init, set by the
  preset).

remat="dots": compiled ahead of time for v4:4x4x4 at batch 1024 it needs 16.9 of 32 GiB per chip
  (76.9 GiB without remat; experiments/aot_compile.py, README "Ahead-of-time memory proof").
First convert the tokenizer: var-jax convert vae_ch160v4096z32.pth weights/vae_ch160v4096z32
Optionally pre-tokenize ImageNet (var_jax.data.pretokenize) and add --set data.tokens=DIR.

TPU pod slice (e.g. v5p-256; every worker runs the same command and reads its share):
  gcloud compute tpus tpu-vm ssh $TPU --zone $ZONE --worker=all --command="cd var_jax && \\
    .venv/bin/var-jax train --config experiments/var_d30_256.py --workdir gs://$BUCKET/var_d30_256 \\
    --set loop.multihost=True --set tokenizer=gs://$BUCKET/weights/vae_ch160v4096z32 \\
    --set data.data_dir=gs://$BUCKET/tensorflow_datasets"
GPU host (8 GPUs; for several hosts set JAX_COORDINATOR_ADDRESS=host0:1234 JAX_NUM_PROCESSES=N
JAX_PROCESS_ID=i on each):
  var-jax train --config experiments/var_d30_256.py --workdir /ckpt/var_d30_256 \\
    --set data.manual_dir=/data/imagenet_tars
Re-running the same command resumes from the last checkpoint in the work dir.
"""
from var_jax.configs import VARConfig, VQVAEConfig
from var_jax.train.recipes import imagenet_recipe


def get_config():
    return imagenet_recipe(
        VARConfig.d30(dtype="bfloat16", remat="dots"), VQVAEConfig.res256(),
        global_batch=1024, epochs=350, base_lr=8e-05, wpe=0.01, weight_decay_end=0.08,
        tokenizer="weights/vae_ch160v4096z32")
