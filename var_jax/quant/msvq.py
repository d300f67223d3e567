"""Multi-scale residual vector quantization (VAR's tokenizer maths) as pure functions on NHWC.

Every function takes the codebook `codebook_VC` (V, C), the phi convs `phis` (a sequence of
`(kernel_33CC, bias_C)` pairs, `cfg.num_phi` of them) and the `VQVAEConfig` (static). The
latent f_hat always lives at the finest scale (h = w = cfg.patch_nums[-1]); a scale's code map
is bicubic-upsampled to it (not the last scale), then mixed by its phi. Quantizer maths run in
float32 whatever the model's compute dtype, as in the reference.
"""
from __future__ import annotations

from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from var_jax.configs import VQVAEConfig
from var_jax.quant.resize import area_resize, bicubic_resize

PhiParams = tuple[jax.Array, jax.Array]  # (kernel_33CC in HWIO layout, bias_C)
_HI = jax.lax.Precision.HIGHEST


def phi_index(si: int, num_scales: int, share_quant_resi: int) -> int:
    """Which phi conv scale `si` uses (the reference's PhiShared / PhiPartiallyShared / ...).

    With n convs (n = num_scales when share_quant_resi == 0), ticks are
    linspace(1/(3n), 1-1/(3n), n) for n == 4 and linspace(1/(2n), 1-1/(2n), n) otherwise;
    scale si picks argmin |tick - si/(K-1)| (si/(K-1) is taken as 0 when K == 1).
    """
    if not 0 <= si < num_scales:
        raise ValueError(f"scale index si={si} is outside [0, {num_scales - 1}].")
    if share_quant_resi == 1:
        return 0
    n = num_scales if share_quant_resi == 0 else share_quant_resi
    ticks = np.linspace(1 / 3 / n, 1 - 1 / 3 / n, n) if n == 4 else np.linspace(
        1 / 2 / n, 1 - 1 / 2 / n, n)
    at = si / (num_scales - 1) if num_scales > 1 else 0.0
    return int(np.argmin(np.abs(ticks - at)))


def apply_phi(h_BhwC: jax.Array, phi: PhiParams, resi_ratio: float) -> jax.Array:
    """phi(h) = h*(1-|q|) + conv3x3(h)*|q| (zero padding 1)."""
    kernel_33CC, bias_C = phi
    conv = jax.lax.conv_general_dilated(
        h_BhwC, kernel_33CC.astype(h_BhwC.dtype), (1, 1), ((1, 1), (1, 1)),
        dimension_numbers=("NHWC", "HWIO", "NHWC"), precision=_HI) + bias_C.astype(h_BhwC.dtype)
    r = abs(resi_ratio)
    return h_BhwC * (1 - r) + conv * r


def nearest_code(z_NC: jax.Array, codebook_VC: jax.Array, using_znorm: bool) -> jax.Array:
    """(N,) int32 index of the nearest code: squared L2 (||z||^2 + ||e||^2 - 2 z.e) or cosine."""
    z_NC = jax.lax.stop_gradient(z_NC)
    e_VC = jax.lax.stop_gradient(codebook_VC)
    if using_znorm:
        z_n = z_NC / jnp.maximum(jnp.linalg.norm(z_NC, axis=-1, keepdims=True), 1e-12)
        e_n = e_VC / jnp.maximum(jnp.linalg.norm(e_VC, axis=-1, keepdims=True), 1e-12)
        return jnp.argmax(jnp.dot(z_n, e_n.T, precision=_HI), axis=1).astype(jnp.int32)
    d_NV = (jnp.sum(jnp.square(z_NC), axis=1, keepdims=True) + jnp.sum(jnp.square(e_VC), axis=1)
            - 2 * jnp.dot(z_NC, e_VC.T, precision=_HI))
    return jnp.argmin(d_NV, axis=1).astype(jnp.int32)


def _check_phis(phis: Sequence[PhiParams], cfg: VQVAEConfig) -> None:
    if len(phis) != cfg.num_phi:
        raise ValueError(f"got {len(phis)} phi convs, but share_quant_resi="
                         f"{cfg.share_quant_resi} with {cfg.num_scales} scales needs "
                         f"{cfg.num_phi}.")


def _check_latent(f_BhwC: jax.Array, codebook_VC: jax.Array, cfg: VQVAEConfig) -> None:
    n = cfg.patch_nums[-1]
    want = (n, n, codebook_VC.shape[1])
    if f_BhwC.ndim != 4 or tuple(f_BhwC.shape[1:]) != want:
        raise ValueError(f"latent f must be (B, {n}, {n}, {want[2]}) (NHWC at the last scale "
                         f"{n}), got shape {tuple(f_BhwC.shape)}.")


def embed_scale(si: int, h_BlC: jax.Array, phis: Sequence[PhiParams],
                cfg: VQVAEConfig) -> jax.Array:
    """Scale si's code vectors (B, pn*pn, C) row-major -> its phi-mixed contribution (B, n, n, C).

    All scales but the last are bicubic-upsampled to the finest size n = patch_nums[-1] first.
    """
    pn, n, last = cfg.patch_nums[si], cfg.patch_nums[-1], cfg.num_scales - 1
    if h_BlC.ndim != 3 or h_BlC.shape[1] != pn * pn:
        raise ValueError(f"scale {si} (side {pn}) needs codes of shape (B, {pn * pn}, C), got "
                         f"{tuple(h_BlC.shape)}.")
    h_BhwC = h_BlC.astype(jnp.float32).reshape(h_BlC.shape[0], pn, pn, h_BlC.shape[2])
    if si != last:
        h_BhwC = bicubic_resize(h_BhwC, (n, n))
    phi = phis[phi_index(si, cfg.num_scales, cfg.share_quant_resi)]
    return apply_phi(h_BhwC, phi, cfg.quant_resi)


def residual_quantize(f_BhwC: jax.Array, codebook_VC: jax.Array, phis: Sequence[PhiParams],
                      cfg: VQVAEConfig) -> tuple[list[jax.Array], list[jax.Array]]:
    """f -> (indices per scale [(B, pn*pn) int32], running f_hat after each scale).

    The residual starts as f (no gradient) and loses each scale's contribution; each scale's
    codes are the nearest to the area-downsampled residual (the last scale uses it as is).
    The f_hats carry gradients to the codebook and the phis only (as the reference).
    """
    _check_phis(phis, cfg)
    _check_latent(f_BhwC, codebook_VC, cfg)
    B, _, _, C = f_BhwC.shape
    rest_BhwC = jax.lax.stop_gradient(f_BhwC.astype(jnp.float32))
    f_hat_BhwC = jnp.zeros_like(rest_BhwC)
    idx_list, fhat_list = [], []
    for si, pn in enumerate(cfg.patch_nums):
        z_BhwC = rest_BhwC if si == cfg.num_scales - 1 else area_resize(rest_BhwC, (pn, pn))
        idx_Bl = nearest_code(z_BhwC.reshape(-1, C), codebook_VC, cfg.using_znorm).reshape(B, -1)
        h_BhwC = embed_scale(si, codebook_VC.astype(jnp.float32)[idx_Bl], phis, cfg)
        f_hat_BhwC = f_hat_BhwC + h_BhwC
        rest_BhwC = rest_BhwC - jax.lax.stop_gradient(h_BhwC)
        idx_list.append(idx_Bl)
        fhat_list.append(f_hat_BhwC)
    return idx_list, fhat_list


def encode(f_BhwC: jax.Array, codebook_VC: jax.Array, phis: Sequence[PhiParams],
           cfg: VQVAEConfig) -> tuple[list[jax.Array], list[jax.Array]]:
    """`residual_quantize` with no gradient at all (tokenizing for the transformer)."""
    sg = jax.lax.stop_gradient
    return residual_quantize(sg(f_BhwC), sg(codebook_VC), sg(list(phis)), cfg)


def _check_indices(idx_list: Sequence[jax.Array], cfg: VQVAEConfig, count: int) -> None:
    if len(idx_list) != count:
        raise ValueError(f"expected {count} index maps (one per scale of patch_nums="
                         f"{cfg.patch_nums}), got {len(idx_list)}.")
    batch = idx_list[0].shape[0] if idx_list[0].ndim else None
    for si, idx in enumerate(idx_list):
        pn = cfg.patch_nums[si]
        if idx.shape != (batch, pn * pn):
            raise ValueError(f"index map of scale {si} must have shape (B, {pn * pn}) = "
                             f"(B, {pn}*{pn}) with the same B for all scales, got "
                             f"{tuple(idx.shape)}.")
        if not jnp.issubdtype(idx.dtype, jnp.integer):
            raise ValueError(f"index map of scale {si} must be integer, got {idx.dtype}.")


def indices_to_fhat(idx_list: Sequence[jax.Array], codebook_VC: jax.Array,
                    phis: Sequence[PhiParams], cfg: VQVAEConfig) -> list[jax.Array]:
    """Per-scale indices -> running f_hat (B, n, n, C) after each scale."""
    _check_phis(phis, cfg)
    _check_indices(idx_list, cfg, cfg.num_scales)
    n, C = cfg.patch_nums[-1], codebook_VC.shape[1]
    f_hat_BhwC = jnp.zeros((idx_list[0].shape[0], n, n, C), jnp.float32)
    out = []
    for si, idx_Bl in enumerate(idx_list):
        f_hat_BhwC = f_hat_BhwC + embed_scale(si, codebook_VC[idx_Bl], phis, cfg)
        out.append(f_hat_BhwC)
    return out


def teacher_forcing_input(idx_list: Sequence[jax.Array], codebook_VC: jax.Array,
                          phis: Sequence[PhiParams], cfg: VQVAEConfig) -> jax.Array:
    """The transformer's input for scales 1..K-1: (B, L - pn0**2, C) float32.

    Accumulates f_hat over scales 0..K-2 and, after each, area-downsamples it to the next
    scale's side; the maps are flattened row-major and concatenated. `idx_list` holds all K
    scales (the last is unused) or only the first K-1.
    """
    _check_phis(phis, cfg)
    K = cfg.num_scales
    if len(idx_list) not in (K - 1, K) or not idx_list:
        raise ValueError(f"teacher_forcing_input needs the index maps of all {K} scales (or of "
                         f"the first {K - 1}), got {len(idx_list)}.")
    _check_indices(idx_list, cfg, len(idx_list))
    B, n, C = idx_list[0].shape[0], cfg.patch_nums[-1], codebook_VC.shape[1]
    f_hat_BhwC = jnp.zeros((B, n, n, C), jnp.float32)
    next_list = []
    for si in range(K - 1):
        f_hat_BhwC = f_hat_BhwC + embed_scale(si, codebook_VC[idx_list[si]], phis, cfg)
        pn_next = cfg.patch_nums[si + 1]
        next_list.append(area_resize(f_hat_BhwC, (pn_next, pn_next)).reshape(B, -1, C))
    if not next_list:
        return jnp.zeros((B, 0, C), jnp.float32)
    return jnp.concatenate(next_list, axis=1)


def next_scale_input(si: int, f_hat_BhwC: jax.Array, h_BlC: jax.Array,
                     phis: Sequence[PhiParams], cfg: VQVAEConfig) -> tuple[jax.Array, jax.Array]:
    """Sampling step: add scale si's codes (B, pn_si**2, C) to f_hat.

    Returns (f_hat, next_BlC): the area-downsampled f_hat at scale si+1 flattened
    (B, pn_{si+1}**2, C), or for the last scale f_hat flattened (B, n*n, C).
    """
    _check_phis(phis, cfg)
    n = cfg.patch_nums[-1]
    if f_hat_BhwC.ndim != 4 or f_hat_BhwC.shape[1:3] != (n, n):
        raise ValueError(f"f_hat must be (B, {n}, {n}, C), got {tuple(f_hat_BhwC.shape)}.")
    if not 0 <= si < cfg.num_scales:
        raise ValueError(f"scale index si={si} is outside [0, {cfg.num_scales - 1}].")
    f_hat_BhwC = f_hat_BhwC.astype(jnp.float32) + embed_scale(si, h_BlC, phis, cfg)
    B, C = f_hat_BhwC.shape[0], f_hat_BhwC.shape[3]
    if si == cfg.num_scales - 1:
        return f_hat_BhwC, f_hat_BhwC.reshape(B, -1, C)
    pn_next = cfg.patch_nums[si + 1]
    return f_hat_BhwC, area_resize(f_hat_BhwC, (pn_next, pn_next)).reshape(B, -1, C)


def _mse(a: jax.Array, b: jax.Array) -> jax.Array:
    return jnp.mean(jnp.square(a - b))


def quantize_train(f_BhwC: jax.Array, codebook_VC: jax.Array, phis: Sequence[PhiParams],
                   cfg: VQVAEConfig) -> dict:
    """Training forward of the quantizer (the reference's VectorQuantizer2.forward).

    Returns a dict:
      "f_hat": straight-through f_hat, f + stop_grad(f_hat - f), (B, n, n, C) float32;
      "vq_loss": mean over scales of beta*mse(sg(f_hat_k), f) + mse(f_hat_k, sg(f)), f_hat_k the
        running f_hat after scale k (gradient to the encoder, the codebook and the phis);
      "indices": list of (B, pn*pn) int32 per scale;
      "hist_per_scale": (K, V) int32 code counts of each scale in the batch;
      "usage_per_scale": (K,) float32 fraction of the V codes hit by each scale in the batch.
    """
    f_BhwC = f_BhwC.astype(jnp.float32)
    idx_list, fhat_list = residual_quantize(f_BhwC, codebook_VC, phis, cfg)
    sg = jax.lax.stop_gradient
    vq_loss = sum(cfg.beta * _mse(sg(fh), f_BhwC) + _mse(fh, sg(f_BhwC)) for fh in fhat_list)
    vq_loss = vq_loss / cfg.num_scales
    V = codebook_VC.shape[0]
    hist_KV = jnp.stack([jnp.bincount(idx.reshape(-1), length=V) for idx in idx_list])
    hist_KV = hist_KV.astype(jnp.int32)
    return {
        "f_hat": f_BhwC + sg(fhat_list[-1] - f_BhwC),
        "vq_loss": vq_loss,
        "indices": idx_list,
        "hist_per_scale": hist_KV,
        "usage_per_scale": jnp.mean((hist_KV > 0).astype(jnp.float32), axis=1),
    }
