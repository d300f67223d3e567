"""Training the multi-scale VQ-VAE tokenizer on the shared loop: losses, GAN, codebook upkeep."""
from __future__ import annotations

import contextlib
import functools
import logging
import os
import shutil

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax
from jax.experimental import multihost_utils

from var_jax.nn.discriminator import PatchDiscriminator
from var_jax.nn.perceptual import LPIPS, load_lpips_params, lpips_abstract_params
from var_jax.quant import msvq
from var_jax.train import tokenizer_codebook as cb
from var_jax.train import tokenizer_losses as tl
from var_jax.train.accumulate import split_micro_batches, value_and_grad_accumulated
from var_jax.train.loop import Task
from var_jax.train.optimizer import make_optimizer
from var_jax.train.tokenizer_config import TokenizerTrainConfig
from var_jax.vqvae import VQVAE
from var_jax.weights.store import is_converted_dir, save_converted

log = logging.getLogger(__name__)
CODEBOOK_PATH = ("quantize", "embedding")   # the (V, C) codebook inside the VQVAE params
sg = jax.lax.stop_gradient


def _get(tree, path):
    for k in path:
        tree = tree[k]
    return tree


def _set(tree, path, value):
    if not path:
        return value
    return {**tree, path[0]: _set(tree[path[0]], path[1:], value)}


def _masked_mean(x_B, mask_B):
    return jnp.sum(x_B * mask_B) / jnp.maximum(jnp.sum(mask_B), 1.0)


class TokenizerTask(Task):
    """`Task` for the shared loop: params = {"vqvae": ..., "disc": ... (with a GAN)},
    frozen = the LPIPS network (with a perceptual loss), extra = {"last_hit": (K, V) int32}, the
    last step at which scale k chose code v."""

    def __init__(self, config: TokenizerTrainConfig):
        self.config = config
        loss = config.loss
        self.vqvae = VQVAE(config.vqvae)
        self.disc = PatchDiscriminator(loss.disc_channels, loss.disc_layers,
                                       loss.disc_norm_groups) if loss.gan else None
        self.lpips = LPIPS() if loss.perceptual else None
        if loss.perceptual_weight > 0 and not loss.perceptual:
            log.warning("perceptual loss off: perceptual_weight=%s but no weight files; set "
                        "loss.perceptual_weights=/path/vgg16.pth,/path/lpips_vgg.pth to use it "
                        "(nothing is downloaded).", loss.perceptual_weight)
        if loss.gan and loss.disc_start >= config.loop.total_steps:
            raise ValueError(f"loss.disc_start={loss.disc_start} is not before loop.total_steps="
                             f"{config.loop.total_steps}: the GAN would never run; lower "
                             "disc_start or set disc_weight=0.")

    @functools.cached_property
    def flops_per_example(self) -> float:
        """Model FLOPs of one training image (XLA's count of the forwards, x3 for the backward):
        the VQ-VAE, the LPIPS pair if on, and three discriminator passes with a GAN."""
        size, ch = self.config.vqvae.image_size, self.config.vqvae.in_channels
        x = jax.ShapeDtypeStruct((1, size, size, ch), jnp.float32)
        params = jax.eval_shape(self.init, jax.random.key(0))["params"]

        def flops(fn, *args) -> float:
            cost = jax.jit(fn).lower(*args).cost_analysis()
            return float((cost or {}).get("flops", 0.0))

        total = flops(lambda p, x: self.vqvae.apply({"params": p}, x)["recon"], params["vqvae"], x)
        if self.lpips is not None:
            total += flops(lambda p, x: self.lpips.apply({"params": p}, x, x),
                           lpips_abstract_params(), x)
        if self.disc is not None:
            total += 3 * flops(lambda p, x: self.disc.apply({"params": p}, x), params["disc"], x)
        return 3.0 * total

    # ---------------------------------------------------------------- params, optimizer, state
    def init(self, rng):
        vq = self.config.vqvae
        x = jnp.zeros((1, vq.image_size, vq.image_size, vq.in_channels))
        k_vae, k_disc = jax.random.split(rng)
        params = {"vqvae": self.vqvae.init(k_vae, x, train=True)["params"]}
        if self.disc is not None:
            params["disc"] = self.disc.init(k_disc, x)["params"]
        parts = {"params": params,
                 "extra": {"last_hit": jnp.zeros((vq.num_scales, vq.vocab_size), jnp.int32)}}
        if self.lpips is not None:   # stand-ins of load_frozen's weights (their shapes)
            parts["frozen"] = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype),
                                           lpips_abstract_params())
        return parts

    def optimizer(self):
        cfg, loop = self.config, self.config.loop
        gen_tx, lr_fn = make_optimizer(cfg.optim, global_batch=loop.global_batch,
                                         total_steps=loop.total_steps)
        if self.disc is None:
            return optax.multi_transform({"vqvae": gen_tx}, {"vqvae": "vqvae"}), lr_fn
        start = cfg.loss.disc_start
        disc_steps = max(loop.total_steps - start, cfg.disc_optim.warmup_steps + 2)
        disc_tx, _ = make_optimizer(cfg.disc_optim, global_batch=loop.global_batch,
                                    total_steps=disc_steps)
        disc_tx = optax.transforms.conditionally_mask(disc_tx, lambda count: count >= start)
        return optax.multi_transform({"vqvae": gen_tx, "disc": disc_tx},
                                     {"vqvae": "vqvae", "disc": "disc"}), lr_fn

    def load_frozen(self, shardings):
        if self.lpips is None:
            return None
        return jax.device_put(load_lpips_params(self.config.loss.perceptual_weights), shardings)

    # ---------------------------------------------------------------- losses
    def reconstruction_loss(self, lpips_params, imgs, recon):
        """(weighted reconstruction loss, its parts): l1, l2 and (if on) LPIPS."""
        w = self.config.loss
        parts = tl.reconstruction_losses(imgs, recon)
        total = w.l1_weight * parts["l1"] + w.l2_weight * parts["l2"]
        if self.lpips is not None:
            parts["perceptual"] = jnp.mean(self.lpips.apply({"params": lpips_params}, imgs, recon))
            total = total + w.perceptual_weight * parts["perceptual"]
        return total, parts

    def _capture_last_layer(self, captured: dict):
        """Interceptor recording the input and the module of the decoder's last layer."""
        path = self.config.loss.last_layer

        def interceptor(next_fun, args, kwargs, context):
            if context.method_name == "__call__" and tuple(context.module.path) == path:
                captured.update(h=args[0], module=context.module.clone(parent=None),
                                params=context.module.variables["params"])
            return next_fun(*args, **kwargs)
        return interceptor

    def adaptive_weight(self, captured, lpips_params, disc_params, imgs, recon):
        """taming's adaptive GAN weight: ||d rec/d W|| / ||d gen/d W|| at the last layer's kernel
        W, from the recorded layer input and the losses' gradients w.r.t. the reconstruction."""
        if "h" not in captured:
            raise ValueError(f"loss.last_layer={self.config.loss.last_layer} is not a module path "
                             "of the VQVAE; use the decoder's output conv, "
                             "('decoder', 'conv_out').")
        module, h, layer = captured["module"], sg(captured["h"]), sg(captured["params"])

        def layer_out(kernel):
            return module.apply({"params": {**layer, "kernel": kernel}}, h).astype(jnp.float32)

        out, pull = jax.vjp(layer_out, layer["kernel"])
        if out.shape != recon.shape:
            raise ValueError(f"loss.last_layer={self.config.loss.last_layer} outputs "
                             f"{out.shape}, not the reconstruction's {recon.shape}.")
        rec_cot = jax.grad(lambda r: self.reconstruction_loss(lpips_params, imgs, r)[0])(sg(recon))
        gen_cot = jax.grad(lambda r: tl.generator_loss(
            self.disc.apply({"params": sg(disc_params)}, r)))(sg(recon))
        return tl.adaptive_gan_weight(pull(rec_cot), pull(gen_cot),
                                      self.config.loss.adaptive_weight_max)

    def objective(self, params, batch, rng, *, lpips_params=None, gan_on=False):
        """(what the gradient is taken of, aux): reconstruction + VQ (+ adaptive-weighted
        generator loss + discriminator hinge loss when `gan_on`). The two GAN terms reach only
        their own network (the other's inputs are stop-gradient'ed)."""
        del rng
        w = self.config.loss
        imgs = batch["image"]
        captured: dict = {}
        hook = (nn.intercept_methods(self._capture_last_layer(captured)) if self.disc is not None
                else contextlib.nullcontext())
        with hook:
            out = self.vqvae.apply({"params": params["vqvae"]}, imgs, train=True)
        recon = out["recon"]
        rec, parts = self.reconstruction_loss(lpips_params, imgs, recon)
        loss = rec + w.vq_weight * out["vq_loss"]
        metrics = {**parts, "vq_loss": out["vq_loss"], "hist_per_scale": out["hist_per_scale"]}
        if self.disc is None:
            return loss, {"loss": loss, **metrics}

        def disc_apply(p, x):
            return self.disc.apply({"params": p}, x)

        def gan(_):
            weight = w.disc_weight * self.adaptive_weight(captured, lpips_params, params["disc"],
                                                          imgs, recon)
            g_loss = tl.generator_loss(disc_apply(sg(params["disc"]), recon))
            real, fake = disc_apply(params["disc"], imgs), disc_apply(params["disc"], sg(recon))
            return (weight * g_loss, tl.hinge_d_loss(real, fake),
                    {"g_loss": g_loss, "gan_weight": weight, "logits_real": jnp.mean(real),
                     "logits_fake": jnp.mean(fake)})

        def no_gan(_):
            zero = jnp.zeros((), jnp.float32)
            return zero, zero, {k: zero for k in ("g_loss", "gan_weight", "logits_real",
                                                  "logits_fake")}

        gen_term, d_loss, gan_metrics = jax.lax.cond(gan_on, gan, no_gan, None)
        loss = loss + gen_term
        return loss + d_loss, {"loss": loss, "d_loss": d_loss, **metrics, **gan_metrics}

    # ---------------------------------------------------------------- codebook upkeep
    def scale_queries(self, vqvae_params, imgs):
        """The vectors every scale looks up for `imgs`, (N_k, C) per scale (no gradient)."""
        def queries(module, x):
            f = module.encode_f(x)
            codebook_VC, phis = module.quantize.arrays()
            _, fhat_list = msvq.residual_quantize(f, codebook_VC, phis, module.cfg)
            return cb.scale_queries(f, fhat_list, module.cfg)
        return self.vqvae.apply({"params": sg(vqvae_params)}, imgs, method=queries)

    def reinit_codes(self, state, batch, last_hit_KV, rng):
        """Every `codebook.check_every` steps, re-initialise dead codes and the codes starving
        scales lack (see tokenizer_codebook) from this batch's latents (the first micro-batch),
        in the params and the EMA alike. Returns (state, last_hit_KV, number of codes reset)."""
        book = self.config.codebook
        if not book.check_every:
            return state, last_hit_KV, jnp.int32(0)
        step = state.step - 1          # the step these statistics belong to
        imgs = batch["image"]
        min_codes = cb.min_codes_per_scale(self.config.vqvae, imgs.shape[0], book.min_usage)
        plan_key, row_key = jax.random.split(rng)
        plan_V = cb.plan_reinit(last_hit_KV, step, book.dead_window, min_codes, plan_key)
        n_reset = jnp.sum(plan_V != cb.KEEP).astype(jnp.int32)
        do = jnp.logical_and((step + 1) % book.check_every == 0, n_reset > 0)
        if self.config.loop.grad_accum > 1:
            imgs = split_micro_batches(imgs, self.config.loop.grad_accum)[0]

        def reset(operand):
            params, ema = operand
            queries = self.scale_queries(params["vqvae"], imgs)
            fresh = cb.reinit_codes(_get(params["vqvae"], CODEBOOK_PATH), plan_V, queries,
                                    row_key)
            path = ("vqvae",) + CODEBOOK_PATH
            if ema is not None:
                keep = (plan_V == cb.KEEP)[:, None]
                ema = _set(ema, path, jnp.where(keep, _get(ema, path), fresh))
            return _set(params, path, fresh), ema

        params, ema = jax.lax.cond(do, reset, lambda o: o, (state.params, state.ema_params))
        last_hit_KV = jnp.where(do, cb.mark_reinit(last_hit_KV, plan_V, step), last_hit_KV)
        return (state.replace(params=params, ema_params=ema), last_hit_KV,
                jnp.where(do, n_reset, 0))

    # ---------------------------------------------------------------- steps
    def train_step(self, state, batch, rng):
        cfg = self.config
        gan_on = self.disc is not None and state.step >= cfg.loss.disc_start
        loss_fn = functools.partial(self.objective, lpips_params=state.frozen,
                                    gan_on=jnp.asarray(gan_on))
        loss_key, reset_key = jax.random.split(rng)
        (_, aux), grads = value_and_grad_accumulated(loss_fn, state.params, batch, loss_key,
                                                     cfg.loop.grad_accum)
        hist_KV = aux.pop("hist_per_scale")
        last_hit = cb.update_last_hit(state.extra["last_hit"], hist_KV, state.step)
        new = state.apply_gradients(grads)
        new, last_hit, n_reset = self.reinit_codes(new, batch, last_hit, reset_key)
        window = cfg.codebook.dead_window
        live_K = cb.live_codes_per_scale(last_hit, state.step, window)
        metrics = {**aux, **self._codebook_metrics(hist_KV),
                   **{f"live_s{k}": live_K[k] for k in range(live_K.shape[0])},
                   "dead_codes": jnp.sum(cb.dead_codes(last_hit, state.step, window)),
                   "codes_reset": n_reset, "grad_norm": optax.tree.norm(grads["vqvae"])}
        return new.replace(extra={"last_hit": last_hit}), metrics

    def _codebook_metrics(self, hist_KV) -> dict:
        usage, ppl = cb.usage_per_scale(hist_KV), cb.perplexity_per_scale(hist_KV)
        out = {}
        for k in range(hist_KV.shape[0]):
            out[f"usage_s{k}"], out[f"perplexity_s{k}"] = usage[k], ppl[k]
        return out

    def eval_step(self, state, batch):
        """Reconstruction metrics of the (EMA) weights, clamped output; l1/l2/psnr are means over
        the real examples (`batch["mask"]`), codebook statistics over the whole batch."""
        imgs = batch["image"]
        out = self.vqvae.apply({"params": state.eval_params["vqvae"]}, imgs, train=False)
        mask_B = batch.get("mask", jnp.ones(imgs.shape[:1], bool)).astype(jnp.float32)
        diff = out["recon"] - imgs.astype(jnp.float32)
        mse_B = jnp.mean(jnp.square(diff), axis=(1, 2, 3))
        metrics = {"l1": _masked_mean(jnp.mean(jnp.abs(diff), axis=(1, 2, 3)), mask_B),
                   "l2": _masked_mean(mse_B, mask_B),
                   "psnr": _masked_mean(10 * jnp.log10(4.0 / jnp.maximum(mse_B, 1e-10)), mask_B),
                   "vq_loss": out["vq_loss"], **self._codebook_metrics(out["hist_per_scale"])}
        if self.lpips is not None:
            d_B = self.lpips.apply({"params": state.frozen}, imgs, out["recon"])
            metrics["perceptual"] = _masked_mean(d_B, mask_B)
        w = self.config.loss
        metrics["loss"] = w.l1_weight * metrics["l1"] + w.l2_weight * metrics["l2"]
        return metrics


def export_tokenizer(state, config: TokenizerTrainConfig, directory: str) -> str:
    """Write the trained tokenizer (EMA weights if kept) as converted weights: `directory` then
    loads with `var_jax.convert.load_weights` and plugs into `var-jax train` / `var-jax sample`.
    An earlier export in `directory` is replaced. Returns the absolute path."""
    directory = os.path.abspath(directory)
    params = state.eval_params["vqvae"]
    # whole arrays on the host: the export must load on any device count, not the run's mesh
    if jax.process_count() > 1:
        params = multihost_utils.process_allgather(params, tiled=True)
        if is_converted_dir(directory) and jax.process_index() == 0:
            shutil.rmtree(directory)
        multihost_utils.sync_global_devices("var_jax_export_tokenizer")
    else:
        params = jax.device_get(params)
        if is_converted_dir(directory):
            shutil.rmtree(directory)
    return save_converted(directory, config.vqvae, params)
