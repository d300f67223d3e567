"""The golden teacher-forcing logits through every attention implementation (float32, 1e-4),
with the block structure seen by the kernels (no dense fallback), scanned and rematerialised."""
import dataclasses
import logging

import jax
import numpy as np
import pytest
from golden import TOL, VAR_NAMES

from var_jax.var import VAR


@pytest.mark.parametrize("attention,remat", [("xla", "none"), ("chunked", "none"),
                                             ("chunked", "full"), ("splash", "dots")])
def test_golden_logits_with_each_attention(attention, remat, caplog, golden_var):
    cfg, params, io, _ = golden_var(VAR_NAMES[0])
    cfg = dataclasses.replace(cfg, attention=attention, remat=remat)
    with caplog.at_level(logging.WARNING, logger="var_jax.nn.block_attention"):
        logits = jax.jit(VAR(cfg).apply)({"params": params}, io["labels"],
                                         io["x_BLCv_wo_first_l"])
    assert not caplog.records, "the block-causal mask reached the attention traced"
    err = np.abs(np.asarray(logits) - io["logits"]).max()
    assert err <= TOL, f"{attention}/{remat}: teacher-forcing logits max abs err {err:.3g}"


def test_unknown_attention_is_refused(golden_var):
    cfg, *_ = golden_var(VAR_NAMES[0])
    with pytest.raises(ValueError, match="attention='flash' is not one of"):
        dataclasses.replace(cfg, attention="flash")
