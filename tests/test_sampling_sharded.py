"""Sampler with the batch sharded over 8 fake CPU devices still matches the reference."""
import os
import pathlib
import subprocess
import sys
import textwrap

SCRIPT = textwrap.dedent("""
    import sys
    import jax
    import numpy as np
    sys.path.insert(0, {tests!r})   # a fresh interpreter: pytest's import path is not here
    from golden import load_vae, load_var
    from var_jax import sample, sharding

    assert jax.local_device_count() == 8, jax.devices()
    assert sharding.batch_mesh().shape == {{"data": 8}}
    var_cfg, var_params, io, _ = load_var("var_tiny_l2norm")
    vae_cfg, vae_params = load_vae()
    # B=3 is padded to 8 images, one per device; the padding is dropped.
    imgs, idx = sample(var_params, vae_params, var_cfg, vae_cfg, io["labels"],
                       rng=jax.random.key(0), cfg=1.5, top_k=1, top_p=0.0, return_indices=True)
    assert imgs.shape == (3, 64, 64, 3), imgs.shape
    np.testing.assert_array_equal(np.asarray(idx), io["greedy_cfg1.5_idx_BL"])
    err = np.abs(np.asarray(imgs) - io["greedy_cfg1.5_images"].transpose(0, 2, 3, 1)).max()
    assert err <= 1e-4, err
    print("OK", err)
""")


def test_sharded_sampling_matches_reference_on_8_devices():
    tests = str(pathlib.Path(__file__).parent)
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=8",
               JAX_PLATFORMS="cpu")
    proc = subprocess.run([sys.executable, "-c", SCRIPT.format(tests=tests)], env=env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0 and "OK" in proc.stdout, proc.stdout + proc.stderr
