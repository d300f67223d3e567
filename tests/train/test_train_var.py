"""The VAR training task: FLOPs, loss pieces, tokenization paths, and a real run that learns."""
import dataclasses
import os
import subprocess
import sys

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from train_helpers import TINY_VAE, TINY_VAR, tiny_var_config
from var_jax import sharding
from var_jax.configs import VARConfig
from var_jax.train import loop as loop_lib
from var_jax.train.input import DataConfig
from var_jax.configs import scale_begin_ends, scale_of_token
from var_jax.train.var_task import (VARTask, cross_entropy, progressive_loss_weights,
                                    progressive_scale, var_train_flops)

@pytest.mark.parametrize("preset, tflops", [(VARConfig.d16, 0.93), (VARConfig.d30, 5.77)])
def test_training_flops_match_the_published_per_image_figures(preset, tflops):
    assert var_train_flops(preset()) / 1e12 == pytest.approx(tflops, rel=0.01)


def test_label_smoothed_cross_entropy_is_torch_s():
    rng = np.random.default_rng(0)
    logits = jnp.asarray(rng.normal(size=(2, 5, 7)), jnp.float32)
    target = jnp.asarray(rng.integers(0, 7, (2, 5)), jnp.int32)
    ce, nll = cross_entropy(logits, target, 0.1)
    want = optax.softmax_cross_entropy(logits, optax.smooth_labels(jax.nn.one_hot(target, 7), 0.1))
    chex.assert_trees_all_close(ce, want, rtol=1e-5)
    chex.assert_trees_all_close(nll, optax.softmax_cross_entropy_with_integer_labels(logits,
                                                                                    target),
                                rtol=1e-5)


def test_progressive_scale_schedule():
    at = lambda step: int(progressive_scale(step, total_steps=1000, warmup_steps=100,  # noqa
                                            fraction=0.5, first_scale=4, num_scales=10))
    assert [at(0), at(100), at(300), at(500), at(900)] == [4, 4, 6, 9, 9]
    assert int(progressive_scale(0, 1000, 100, 0.0, 4, 10)) == 9   # off: every scale


def _reference_loss_weights(patch_nums, max_it, wp_it, pg, pg0, prog_wp_it):
    """The reference's per-step loss weights: train.py's prog_si, then trainer.py's prog_it /
    first_prog bookkeeping and its `lw` (loss_weight = 1/L), transcribed step by step."""
    L, K = sum(p * p for p in patch_nums), len(patch_nums)
    begin_ends = scale_begin_ends(patch_nums)
    last_prog_si, first_prog, prog_it, out = -1, True, 0, []
    for g_it in range(max_it):
        if g_it <= wp_it:
            prog_si = pg0
        elif g_it >= max_it * pg:
            prog_si = K - 1
        else:
            delta = K - 1 - pg0
            progress = min(max((g_it - wp_it) / (max_it * pg - wp_it), 0), 1)
            prog_si = pg0 + round(progress * delta)
        if last_prog_si != prog_si:
            if last_prog_si != -1:
                first_prog = False
            last_prog_si, prog_it = prog_si, 0
        prog_it += 1
        prog_wp = max(min(prog_it / prog_wp_it, 1), 0.01)
        if first_prog:
            prog_wp = 1
        if prog_si == K - 1:
            prog_si = -1
        lw = np.full(L, 1.0 / L)
        if prog_si >= 0:
            bg, ed = begin_ends[prog_si]
            lw[ed:] = 0.0
            lw[bg:ed] *= min(max(prog_wp, 0), 1)
        out.append(lw)
    return np.stack(out)


@pytest.mark.parametrize("wp_it, prog_wp_it", [(20, 7.3), (0, 30.0), (5, 1.0)])
def test_progressive_loss_weights_follow_the_reference_pgwp(wp_it, prog_wp_it):
    patch_nums, max_it, pg, pg0 = (1, 2, 3, 4, 5, 6), 240, 0.6, 1
    want = _reference_loss_weights(patch_nums, max_it, wp_it, pg, pg0, prog_wp_it)
    scale_L = jnp.asarray(scale_of_token(patch_nums))
    got = jax.jit(jax.vmap(lambda step: progressive_loss_weights(
        step, scale_L, max_it, wp_it, pg, pg0, len(patch_nums), prog_wp_it)))(jnp.arange(max_it))
    np.testing.assert_allclose(np.asarray(got), want, rtol=1e-6, atol=1e-9)
    ramped = want.min(initial=1, where=want > 0) < 1.0 / want.shape[1]
    assert ramped == (prog_wp_it > 1)   # a ramp happened (none when it lasts one step)


def test_loss_weighs_every_token_1_over_L(tiny_var):
    """Without progressive training the objective is sum_l CE_l / L, averaged over images."""
    task, state, _, _ = tiny_var
    rng = np.random.default_rng(1)
    batch = {"idx": jnp.asarray(rng.integers(0, TINY_VAR.vocab_size, (3, TINY_VAR.seq_len)),
                                jnp.int32), "label": jnp.asarray([0, 1, 2], jnp.int32)}
    params = jax.tree.map(lambda a: a + 0.1 * jnp.cos(jnp.arange(a.size).reshape(a.shape)),
                          state.params)
    value, _ = jax.jit(task.loss)(params, state.frozen, batch, None)
    target, x = task.tokens(state.frozen, batch)
    logits = task.model.apply({"params": params}, batch["label"], x)
    nll = -jnp.take_along_axis(jax.nn.log_softmax(logits), target[..., None], -1)[..., 0]
    assert float(value) == pytest.approx(float(nll.sum(1).mean() / TINY_VAR.seq_len), rel=1e-5)


def test_bad_pairing_of_configs_is_refused():
    with pytest.raises(ValueError, match="disagree"):
        dataclasses.replace(tiny_var_config(), vae=dataclasses.replace(TINY_VAE, vocab_size=16))
    with pytest.raises(ValueError, match="data.image_size=32 differs"):
        dataclasses.replace(tiny_var_config(), data=DataConfig(source="digits", image_size=32))
    with pytest.raises(ValueError, match=r"labels \[7\] are outside \[0, 3\]"):
        dataclasses.replace(tiny_var_config(), sample_classes=(1, 7))
    with pytest.raises(ValueError, match=r"prog_warmup_steps=0 must be > 0"):
        dataclasses.replace(tiny_var_config(), prog_warmup_steps=0)


def test_images_and_pre_tokenized_batches_give_the_same_loss(tiny_var):
    task, state, _, _ = tiny_var
    rng = np.random.default_rng(0)
    images = jnp.asarray(rng.uniform(-1, 1, (4, 3, 3, 3)), jnp.float32)
    labels = jnp.asarray([0, 1, 2, 3], jnp.int32)

    @jax.jit
    def losses(params, frozen, key):
        idx_BL, _ = task.tokens(frozen, {"image": images})
        pairs = jnp.array([0, 1, 0, 1])
        return idx_BL, {
            "images": task.loss(params, frozen, {"image": images, "label": labels}, key),
            "tokens": task.loss(params, frozen, {"idx": idx_BL, "label": labels}, key),
            "masked": task.loss(params, frozen, {"idx": idx_BL, "label": labels,
                                                 "mask": jnp.array([1, 1, 0, 0], bool)}, None),
            "pairs": task.loss(params, frozen, {"idx": idx_BL[pairs], "label": labels[pairs],
                                                "mask": jnp.ones(4, bool)}, None)}

    idx_BL, out = losses(state.params, state.frozen, jax.random.key(5))
    assert idx_BL.shape == (4, TINY_VAR.seq_len) and idx_BL.dtype == jnp.int32
    chex.assert_trees_all_close(out["images"], out["tokens"], rtol=1e-6)
    chex.assert_trees_all_close(out["masked"], out["pairs"], rtol=1e-6)
    value, metrics = out["tokens"]         # paper init: near-uniform logits
    assert abs(float(value) - np.log(TINY_VAR.vocab_size)) < 0.05, float(value)
    assert float(metrics["loss_mean"]) == pytest.approx(float(value), rel=1e-6)


@pytest.mark.slow   # 150 real steps plus the step's compilation
def test_a_few_hundred_steps_learn_the_class_to_token_map(tiny_var):
    """A real run: tokens are a fixed function of the class, so the loss can fall far below
    ln(V); the step also reports grad norm and lr."""
    task, state, mesh, shardings = tiny_var
    rng = np.random.default_rng(1)
    table = rng.integers(0, TINY_VAR.vocab_size, (TINY_VAR.num_classes, TINY_VAR.seq_len))
    with sharding.activate(mesh):
        update = loop_lib.compile_train_step(task, shardings, mesh)
        state = jax.tree.map(jnp.copy, state)    # the update donates its input
        losses = []
        for step in range(task.config.loop.total_steps):
            labels = rng.integers(0, TINY_VAR.num_classes, 8).astype(np.int32)
            batch = sharding.global_batch({"idx": table[labels].astype(np.int32),
                                           "label": labels}, mesh)
            state, metrics = update(state, batch)
            losses.append(metrics["loss"])
    losses = np.asarray(jax.device_get(losses))
    first, last = losses[:10].mean(), losses[-10:].mean()
    print(f"VAR tiny: loss {first:.3f} -> {last:.3f} over {len(losses)} steps")
    assert first > 3.0 and last < 0.5 * first, (first, last)
    assert float(metrics["grad_norm"]) > 0 and float(metrics["lr"]) > 0
    assert 0.0 <= float(metrics["acc_tail"]) <= 1.0


def test_sample_hook_equals_sampling_sample_with_the_same_keys(tiny_var):
    from var_jax import sampling

    task, state, mesh, _ = tiny_var
    cfg = task.config
    with sharding.activate(mesh):      # the hook runs on the training mesh's (FSDP) params
        images = task.sample(state, jax.random.key(3))
    chex.assert_shape(images, (len(cfg.sample_classes), TINY_VAE.image_size,
                               TINY_VAE.image_size, 3))
    want = sampling.sample(jax.device_get(state.eval_params), jax.device_get(state.frozen),
                           cfg.var, cfg.vae, cfg.sample_classes, rng=jax.random.key(3),
                           cfg=cfg.sample_cfg, top_k=cfg.sample_top_k, top_p=cfg.sample_top_p)
    np.testing.assert_allclose(np.asarray(images), np.asarray(want), atol=1e-5)
    other = sampling.sample(jax.device_get(state.eval_params), jax.device_get(state.frozen),
                            cfg.var, cfg.vae, cfg.sample_classes, rng=jax.random.key(4),
                            cfg=cfg.sample_cfg, top_k=cfg.sample_top_k, top_p=cfg.sample_top_p)
    assert np.abs(np.asarray(other) - np.asarray(want)).max() > 1e-3   # the keys matter


def test_a_trained_tokenizer_is_loaded_onto_the_frozen_shardings(tiny_var, tmp_path):
    from var_jax.weights.store import save_converted

    task, state, mesh, shardings = tiny_var
    vae_params = jax.tree.map(lambda x: np.asarray(x) + 1.0, jax.device_get(state.frozen))
    save_converted(tmp_path / "tok", TINY_VAE, vae_params)
    cfg = dataclasses.replace(task.config, tokenizer=str(tmp_path / "tok"))
    loaded = VARTask(cfg).load_frozen(shardings.frozen)
    chex.assert_trees_all_equal(jax.device_get(loaded), vae_params)
    assert jax.tree.leaves(loaded)[0].sharding == jax.tree.leaves(shardings.frozen)[0]
    assert task.load_frozen(shardings.frozen) is None      # no tokenizer: keep the random one


def test_building_the_trainers_starts_no_jax_backend():
    # jax.distributed.initialize() (train_and_evaluate's first call) must precede any backend
    code = ("from jax._src import xla_bridge as xb\n"
            "from train_helpers import tiny_var_config\n"
            "from var_jax.train.tokenizer_task import TokenizerTask\n"
            "from var_jax.train.var_task import VARTask\n"
            "VARTask(tiny_var_config())\n"
            "assert not xb._backends, 'a JAX backend was started'\n")
    path = os.pathsep.join([os.path.dirname(__file__), os.path.dirname(os.path.dirname(
        os.path.dirname(os.path.abspath(__file__))))])
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env={**os.environ, "PYTHONPATH": path}, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
