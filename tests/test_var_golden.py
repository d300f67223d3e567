"""VAR vs the reference: golden logits of the tiny models; the released checkpoints' keys."""
import json

import jax
import numpy as np
import pytest

from golden import GOLDEN, TOL, VAR_NAMES
from var_jax.configs import VARConfig
from var_jax.convert import var_params_from_torch
from var_jax.var import VAR
from var_jax.weights.var_keys import expected_var_params


@pytest.mark.parametrize("name", VAR_NAMES)
def test_teacher_forcing_logits_match_reference(name, golden_var):
    cfg, params, io, _ = golden_var(name)
    apply = jax.jit(VAR(cfg).apply)
    logits = np.asarray(apply({"params": params}, io["labels"], io["x_BLCv_wo_first_l"]))
    assert logits.dtype == np.float32
    err = np.abs(logits - io["logits"]).max()
    assert err <= TOL, f"{name}: teacher-forcing logits max abs err {err:.3g}"
    null = np.full_like(io["labels"], cfg.num_classes)
    logits = np.asarray(apply({"params": params}, null, io["x_BLCv_wo_first_l"]))
    err = np.abs(logits - io["logits_null_class"]).max()
    assert err <= TOL, f"{name}: null-class logits max abs err {err:.3g}"


# ---------------------------------------------------------------- released checkpoints' keys
RELEASED = json.loads((GOLDEN / "released_checkpoint_keys.json").read_text())
PRESETS = {"var_d16": VARConfig.d16, "var_d20": VARConfig.d20, "var_d24": VARConfig.d24,
           "var_d30": VARConfig.d30, "var_d36": VARConfig.d36}


def _fake_state_dict(shapes: dict) -> dict:
    # Zero-stride arrays: every released shape without allocating gigabytes.
    return {k: np.broadcast_to(np.float32(0.5), tuple(s)) for k, s in shapes.items()}


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_converter_accepts_every_released_key(name):
    cfg = PRESETS[name]()
    params = var_params_from_torch(_fake_state_dict(RELEASED[name]), cfg)
    expected = expected_var_params(cfg)
    got = jax.tree.map(lambda a: (a.shape, a.dtype), params)
    want = jax.tree.map(lambda a: (a.shape, a.dtype), expected)
    assert got == want
    n = sum(int(np.prod(a.shape)) for a in jax.tree.leaves(expected))
    n_torch = sum(int(np.prod(s)) for k, s in RELEASED[name].items()
                  if not k.endswith(("attn_bias_for_masking", "lvl_1L", "zero_k_bias")))
    assert n == n_torch, f"{name}: {n} params here vs {n_torch} in the checkpoint"


def test_converter_names_the_bad_key_and_both_shapes():
    cfg = VARConfig.d16()
    sd = _fake_state_dict(RELEASED["var_d16"])
    sd["blocks.3.ffn.fc1.weight"] = np.zeros((4096, 1000), np.float32)
    bad_shape = r"(?s)blocks\.3\.ffn\.fc1\.weight.*\(4096, 1000\).*\(1024, 4096\)"
    with pytest.raises(ValueError, match=bad_shape):
        var_params_from_torch(sd, cfg)
    sd = _fake_state_dict(RELEASED["var_d16"])
    del sd["blocks.15.attn.q_bias"]
    with pytest.raises(ValueError, match=r"(?s)missing.*blocks_15/attn/q_bias"):
        var_params_from_torch(sd, cfg)
    sd = _fake_state_dict(RELEASED["var_d16"])
    wrong_variant = r"(?s)unexpected.*blocks\.0\.ada_lin\.1\.weight.*missing.*shared_ada_lin/kernel"
    with pytest.raises(ValueError, match=wrong_variant):
        var_params_from_torch(sd, VARConfig.d16(shared_aln=True))
