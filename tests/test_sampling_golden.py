"""Sampler vs the reference: greedy (top_k=1) indices and images of the golden models."""
import jax
import numpy as np
import pytest

from golden import VAR_NAMES
from var_jax import sample, sampling

TOL = 1e-4


@pytest.mark.parametrize("name", VAR_NAMES)
def test_greedy_sampling_matches_reference_and_compiles_once(name, monkeypatch, golden_var,
                                                            golden_vae):
    var_cfg, var_params, io, cfgs = golden_var(name)
    vae_cfg, vae_params = golden_vae
    traces = []
    filter_logits = sampling.filter_logits
    monkeypatch.setattr(sampling, "filter_logits",
                        lambda *a: traces.append(1) or filter_logits(*a))
    sampling.compiled_sampler.cache_clear()
    for c in cfgs + cfgs[:1]:
        imgs, idx = sample(var_params, vae_params, var_cfg, vae_cfg, io["labels"],
                           rng=jax.random.key(7), cfg=c, top_k=1, top_p=0.0,
                           return_indices=True)
        assert idx.dtype == np.int32 and imgs.dtype == np.float32
        want_idx = io[f"greedy_cfg{c}_idx_BL"]
        mismatch = int((np.asarray(idx) != want_idx).sum())
        assert mismatch == 0, f"{name} cfg={c}: {mismatch} token ids differ from the reference"
        want_img = io[f"greedy_cfg{c}_images"].transpose(0, 2, 3, 1)
        err = np.abs(np.asarray(imgs) - want_img).max()
        assert err <= TOL, f"{name} cfg={c}: image max abs err {err:.3g}"
    # One trace (filter_logits runs once per scale while tracing) for all the calls above.
    assert len(traces) == var_cfg.num_scales, f"traced {len(traces) // var_cfg.num_scales} times"
