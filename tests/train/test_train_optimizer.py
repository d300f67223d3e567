"""The paper's lr / weight-decay schedules, the no-decay mask, clipping, and gradient accumulation."""
import math

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from var_jax.train.accumulate import split_micro_batches, value_and_grad_accumulated
from var_jax.train.optimizer import (OptimConfig, decay_mask, lr_schedule, make_optimizer,
                                     peak_lr, wd_schedule)


def reference_lr(cfg: OptimConfig, peak: float, it: int, total: int) -> float:
    """The reference's lr_wd_annealing for "lin0", written out independently."""
    wp = cfg.warmup_steps
    if it < wp:
        return peak * (cfg.wp0 + (1 - cfg.wp0) * it / wp)
    pasd = (it - wp) / (total - 1 - wp)
    ratio = 1.0 if pasd < 0.05 else cfg.wpe + (1 - cfg.wpe) * (1 - pasd) / 0.95
    return peak * ratio


def test_peak_lr_scales_with_the_global_batch():
    assert peak_lr(OptimConfig(base_lr=1e-4), 768) == pytest.approx(3e-4)
    assert peak_lr(OptimConfig(base_lr=8e-5), 1024) == pytest.approx(3.2e-4)


@pytest.mark.parametrize("wpe", [0.1, 0.01])
def test_lin0_schedule_at_its_landmarks(wpe):
    cfg, total, peak = OptimConfig(warmup_steps=100, wpe=wpe), 2000, 3e-4
    lr = lr_schedule(cfg, peak, total)
    assert float(lr(0)) == pytest.approx(0.005 * peak)                 # warm-up start
    assert float(lr(99)) == pytest.approx(peak * (0.005 + 0.995 * 99 / 100), rel=1e-6)
    assert float(lr(100)) == pytest.approx(peak)                       # warm-up end
    flat_end = 100 + 0.05 * (total - 1 - 100)
    assert float(lr(int(flat_end))) == pytest.approx(peak)              # still flat
    assert float(lr(total - 1)) == pytest.approx(wpe * peak, rel=1e-5)  # end of training
    for it in (0, 37, 100, 150, 194, 195, 800, 1500, 1999):
        assert float(lr(it)) == pytest.approx(reference_lr(cfg, peak, it, total), rel=1e-5), it


def test_weight_decay_cosine_and_constant():
    cfg = OptimConfig(weight_decay=0.05, weight_decay_end=0.08)
    wd = wd_schedule(cfg, 1001)
    assert float(wd(0)) == pytest.approx(0.05)
    assert float(wd(500)) == pytest.approx(0.065)
    assert float(wd(1000)) == pytest.approx(0.08)
    assert wd_schedule(OptimConfig(weight_decay=0.05), 1000) == 0.05


def test_bad_settings_name_the_value():
    with pytest.raises(ValueError, match="schedule='linear'"):
        OptimConfig(schedule="linear")
    with pytest.raises(ValueError, match="total_steps=10 must exceed warmup_steps=20"):
        lr_schedule(OptimConfig(warmup_steps=20), 1.0, 10)


def test_no_decay_mask_follows_the_reference_groups():
    p = lambda *s: jnp.zeros(s)  # noqa: E731
    params = {"word_embed": {"kernel": p(8, 4), "bias": p(4)}, "pos_start": p(1, 1, 4),
              "pos_1LC": p(1, 5, 4), "lvl_embed": {"embedding": p(3, 4)},
              "class_emb": {"embedding": p(11, 4)},
              # the scanned blocks: stacked over a leading layers axis (depth 3)
              "blocks": {"attn": {"mat_qkv": {"kernel": p(3, 4, 12)}, "q_bias": p(3, 4),
                                  "scale_mul_1H11": p(3, 1, 2, 1, 1)},
                         "ada_gss": p(3, 1, 1, 6, 4), "norm_scale": p(3, 4)}}
    mask = decay_mask(params)
    blk = mask["blocks"]
    assert mask["word_embed"] == {"kernel": True, "bias": False}
    assert mask["class_emb"]["embedding"] and blk["attn"]["mat_qkv"]["kernel"]
    assert not any([mask["pos_start"], mask["pos_1LC"], mask["lvl_embed"]["embedding"],
                    blk["attn"]["q_bias"], blk["attn"]["scale_mul_1H11"], blk["ada_gss"],
                    blk["norm_scale"]])   # per block 1-D: no decay, as in the reference


def test_one_adamw_step_by_hand():
    """Clipped gradient, bias-corrected Adam, decoupled decay on the 2-D weight only."""
    cfg = OptimConfig(base_lr=0.1, warmup_steps=0, weight_decay=0.5, grad_clip=1.0,
                      schedule="const")
    tx, lr = make_optimizer(cfg, global_batch=256, total_steps=10)
    params = {"w": jnp.full((2, 2), 2.0), "bias": jnp.full((2,), 2.0)}
    grads = {"w": jnp.full((2, 2), 3.0), "bias": jnp.full((2,), 4.0)}
    updates, _ = tx.update(grads, tx.init(params), params)
    norm = math.sqrt(4 * 9 + 2 * 16)
    g = {k: v / norm for k, v in grads.items()}                   # clipped to norm 1
    adam = {k: v / (jnp.abs(v) + 1e-8) for k, v in g.items()}    # first step: m/sqrt(v) = sign
    want = {"w": -0.1 * (adam["w"] + 0.5 * params["w"]), "bias": -0.1 * adam["bias"]}
    chex.assert_trees_all_close(updates, want, rtol=1e-5)
    assert float(lr(0)) == pytest.approx(0.1)


def _quadratic_loss(params, batch, rng):
    """Mean squared error plus rng-dependent noise; metrics are means over the batch."""
    pred = batch["x"] @ params["w"] + 0.01 * jax.random.normal(rng, (batch["x"].shape[0],))
    loss = jnp.mean((pred - batch["y"]) ** 2)
    return loss, {"mean_pred": jnp.mean(pred)}


def test_accumulated_gradients_equal_the_full_batch_ones():
    rng = np.random.default_rng(0)
    batch = {"x": jnp.asarray(rng.normal(size=(12, 3)), jnp.float32),
             "y": jnp.asarray(rng.normal(size=(12,)), jnp.float32)}
    params = {"w": jnp.asarray([0.5, -1.0, 2.0])}

    def loss_fn(p, b, rng):   # deterministic, so full batch and micro-batches must agree
        err = b["x"] @ p["w"] - b["y"]
        return jnp.mean(err ** 2), {"mean_abs_err": jnp.mean(jnp.abs(err))}

    full = value_and_grad_accumulated(loss_fn, params, batch, jax.random.key(0), 1)
    acc = jax.jit(value_and_grad_accumulated, static_argnums=(0, 4))(
        loss_fn, params, batch, jax.random.key(0), 3)
    chex.assert_trees_all_close(acc, full, rtol=1e-5)
    micro = split_micro_batches(batch, 3)
    np.testing.assert_array_equal(micro["y"][1], batch["y"][1::3])   # strided micro-batches
    with pytest.raises(ValueError, match="cannot be split into 5 micro-batches"):
        split_micro_batches(batch, 5)


def test_accumulation_gives_each_micro_batch_its_own_key():
    batch = {"x": jnp.ones((4, 3)), "y": jnp.zeros((4,))}
    params = {"w": jnp.zeros(3)}
    (_, aux), _ = value_and_grad_accumulated(_quadratic_loss, params, batch, jax.random.key(1), 2)
    key0 = jax.random.fold_in(jax.random.key(1), 0)
    key1 = jax.random.fold_in(jax.random.key(1), 1)
    want = np.mean([float(_quadratic_loss(params, jax.tree.map(lambda x: x[i::2], batch), k)[1]
                          ["mean_pred"]) for i, k in ((0, key0), (1, key1))])
    assert float(aux["mean_pred"]) == pytest.approx(want, rel=1e-5)
