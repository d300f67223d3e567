"""Model configs: frozen dataclasses with presets for the released checkpoints."""
from __future__ import annotations

import dataclasses
from typing import Sequence

import numpy as np

PATCH_NUMS_256 = (1, 2, 3, 4, 5, 6, 8, 10, 13, 16)
PATCH_NUMS_512 = (1, 2, 3, 4, 6, 9, 13, 18, 24, 32)
COMPUTE_DTYPES = ("float32", "bfloat16", "float16")
REMAT_POLICIES = ("none", "dots", "full")
ATTENTION_IMPLEMENTATIONS = ("auto", "xla", "cudnn", "splash", "chunked")   # nn/block_attention.py   # see var_jax/var.py REMAT
# The reference runs' --alng (AdaLN gamma rows of the init multiplied by it), per depth, from
# its README's training commands; other depths get its default, 1e-5.
ADALN_GAMMA_INIT = {16: 1e-3, 20: 1e-3, 24: 1e-4, 30: 1e-5, 36: 5e-6}
DEFAULT_ADALN_GAMMA_INIT = 1e-5


def _check_patch_nums(patch_nums: Sequence[int], owner: str) -> None:
    if len(patch_nums) == 0:
        raise ValueError(f"{owner}.patch_nums is empty; give at least one scale, e.g. (1, 2, 4).")
    if any((not isinstance(p, (int, np.integer))) or p < 1 for p in patch_nums):
        raise ValueError(f"{owner}.patch_nums={tuple(patch_nums)} must be positive integers.")
    if any(b <= a for a, b in zip(patch_nums, patch_nums[1:])):
        raise ValueError(
            f"{owner}.patch_nums={tuple(patch_nums)} must be strictly increasing (coarse to fine)."
        )


def _check_dtype(dtype: str, owner: str) -> None:
    if dtype not in COMPUTE_DTYPES:
        raise ValueError(f"{owner}.dtype={dtype!r} is not one of {COMPUTE_DTYPES}.")


def scale_begin_ends(patch_nums: Sequence[int]) -> tuple[tuple[int, int], ...]:
    """[begin, end) token range of each scale in the flattened coarse-to-fine sequence."""
    out, cur = [], 0
    for pn in patch_nums:
        out.append((cur, cur + pn * pn))
        cur += pn * pn
    return tuple(out)


def scale_of_token(patch_nums: Sequence[int]) -> np.ndarray:
    """(L,) int32: the scale index of every token."""
    return np.concatenate([np.full(pn * pn, i, np.int32) for i, pn in enumerate(patch_nums)])


class _Scales:
    """What both configs derive from their `patch_nums`."""

    patch_nums: tuple[int, ...]

    @property
    def num_scales(self) -> int:
        return len(self.patch_nums)

    @property
    def seq_len(self) -> int:
        return sum(p * p for p in self.patch_nums)


@dataclasses.dataclass(frozen=True)
class VQVAEConfig(_Scales):
    """The multi-scale residual VQ-VAE (the `vae_ch160v4096z32` tokenizer by default)."""

    vocab_size: int = 4096          # codebook rows
    z_channels: int = 32            # Cvae: latent / codebook width
    ch: int = 160                   # base width of encoder and decoder
    ch_mult: tuple[int, ...] = (1, 1, 2, 2, 4)  # width multiplier per level; x2 down per level
    num_res_blocks: int = 2         # encoder ResNet blocks per level (decoder uses one more)
    patch_nums: tuple[int, ...] = PATCH_NUMS_256  # side of each scale's token map
    quant_resi: float = 0.5         # phi mix: h*(1-|q|) + conv(h)*|q|
    share_quant_resi: int = 4       # 0: one phi per scale, 1: one for all, n>1: n shared
    beta: float = 0.25              # commitment loss weight
    using_znorm: bool = False       # cosine lookup instead of L2
    image_size: int = 256           # H = W of the images
    in_channels: int = 3
    norm_groups: int = 32
    norm_eps: float = 1e-6
    using_sa: bool = True           # self-attention at the lowest resolution
    using_mid_sa: bool = True       # self-attention in the middle block
    dtype: str = "float32"          # compute dtype of encoder/decoder convs

    def __post_init__(self):
        object.__setattr__(self, "ch_mult", tuple(self.ch_mult))
        object.__setattr__(self, "patch_nums", tuple(int(p) for p in self.patch_nums))
        name = "VQVAEConfig"
        for field in ("vocab_size", "z_channels", "ch", "num_res_blocks", "image_size",
                      "in_channels", "norm_groups"):
            if getattr(self, field) < 1:
                raise ValueError(f"{name}.{field}={getattr(self, field)} must be >= 1.")
        if len(self.ch_mult) == 0 or any(m < 1 for m in self.ch_mult):
            raise ValueError(f"{name}.ch_mult={self.ch_mult} must be a non-empty tuple of ints >= 1.")
        for m in (1,) + self.ch_mult:
            if (self.ch * m) % self.norm_groups:
                raise ValueError(
                    f"{name}: channel count ch*{m}={self.ch * m} is not divisible by "
                    f"norm_groups={self.norm_groups}; pick ch as a multiple of {self.norm_groups}."
                )
        if self.image_size % self.downsample:
            raise ValueError(
                f"{name}.image_size={self.image_size} is not divisible by the downsampling factor "
                f"{self.downsample} (2**(len(ch_mult)-1)); use a multiple of {self.downsample}."
            )
        _check_patch_nums(self.patch_nums, name)
        if self.patch_nums[-1] != self.latent_size:
            raise ValueError(
                f"{name}.patch_nums[-1]={self.patch_nums[-1]} must equal the latent size "
                f"image_size/{self.downsample}={self.latent_size}; change the last patch number "
                f"or the image_size."
            )
        if not 1e-6 < abs(self.quant_resi) <= 1.0:
            raise ValueError(f"{name}.quant_resi={self.quant_resi} must satisfy 0 < |q| <= 1.")
        if self.share_quant_resi < 0:
            raise ValueError(f"{name}.share_quant_resi={self.share_quant_resi} must be >= 0.")
        if self.beta < 0:
            raise ValueError(f"{name}.beta={self.beta} must be >= 0.")
        _check_dtype(self.dtype, name)

    @property
    def downsample(self) -> int:
        return 2 ** (len(self.ch_mult) - 1)

    @property
    def latent_size(self) -> int:
        return self.image_size // self.downsample

    @property
    def num_phi(self) -> int:
        """How many phi convs the quantizer holds."""
        if self.share_quant_resi == 0:
            return self.num_scales
        return self.share_quant_resi

    @classmethod
    def res256(cls, **overrides) -> "VQVAEConfig":
        """The released `vae_ch160v4096z32` tokenizer at 256px."""
        return cls(**{"image_size": 256, "patch_nums": PATCH_NUMS_256, **overrides})

    @classmethod
    def res512(cls, **overrides) -> "VQVAEConfig":
        """The same released tokenizer at the 512px scales (used by VAR-d36)."""
        return cls(**{"image_size": 512, "patch_nums": PATCH_NUMS_512, **overrides})


@dataclasses.dataclass(frozen=True)
class VARConfig(_Scales):
    """The block-causal scale transformer (VAR-d16 by default)."""

    depth: int = 16                 # number of AdaLN blocks
    embed_dim: int = 1024           # C = 64 * depth for the released models
    num_heads: int = 16             # = depth for the released models
    num_classes: int = 1000         # the null class is index num_classes
    patch_nums: tuple[int, ...] = PATCH_NUMS_256
    vocab_size: int = 4096          # tokenizer codebook size V
    vae_channels: int = 32          # tokenizer latent width Cvae
    mlp_ratio: float = 4.0
    norm_eps: float = 1e-6
    shared_aln: bool = False        # one AdaLN projection for all blocks (d36)
    attn_l2_norm: bool = True       # L2-normalised q/k with learnable per-head scale
    cond_drop_rate: float = 0.1     # class dropout to the null class (training only)
    drop_path_rate: float = 0.0     # stochastic depth (training only)
    dtype: str = "float32"          # compute dtype; logits are always float32
    remat: str = "none"             # block rematerialisation: none / dots / full (REMAT_POLICIES)
    adaln_gamma_init: float = DEFAULT_ADALN_GAMMA_INIT   # "alng": AdaLN gamma init multiplier
    attention: str = "auto"         # teacher-forcing attention (ATTENTION_IMPLEMENTATIONS)

    def __post_init__(self):
        object.__setattr__(self, "patch_nums", tuple(int(p) for p in self.patch_nums))
        name = "VARConfig"
        if self.remat not in REMAT_POLICIES:
            raise ValueError(f"{name}.remat={self.remat!r} is not one of {REMAT_POLICIES}: 'none' "
                             "keeps every activation, 'dots' saves only the matmul outputs, "
                             "'full' recomputes each block in the backward pass.")
        if self.attention not in ATTENTION_IMPLEMENTATIONS:
            raise ValueError(f"{name}.attention={self.attention!r} is not one of "
                             f"{ATTENTION_IMPLEMENTATIONS}; 'auto' picks splash on TPU, cuDNN on "
                             "GPU (bf16) and per-scale chunks on CPU.")
        if not self.adaln_gamma_init > 0:
            raise ValueError(f"{name}.adaln_gamma_init={self.adaln_gamma_init} must be > 0.")
        for field in ("depth", "embed_dim", "num_heads", "num_classes", "vocab_size",
                      "vae_channels"):
            if getattr(self, field) < 1:
                raise ValueError(f"{name}.{field}={getattr(self, field)} must be >= 1.")
        if self.embed_dim % self.num_heads:
            raise ValueError(
                f"{name}.embed_dim={self.embed_dim} is not divisible by num_heads={self.num_heads}; "
                f"the released models use embed_dim = 64*depth and num_heads = depth."
            )
        _check_patch_nums(self.patch_nums, name)
        if self.mlp_ratio <= 0:
            raise ValueError(f"{name}.mlp_ratio={self.mlp_ratio} must be > 0.")
        if not 0.0 <= self.cond_drop_rate < 1.0:
            raise ValueError(f"{name}.cond_drop_rate={self.cond_drop_rate} must be in [0, 1).")
        if not 0.0 <= self.drop_path_rate < 1.0:
            raise ValueError(f"{name}.drop_path_rate={self.drop_path_rate} must be in [0, 1).")
        if self.norm_eps <= 0:
            raise ValueError(f"{name}.norm_eps={self.norm_eps} must be > 0.")
        _check_dtype(self.dtype, name)

    @property
    def head_dim(self) -> int:
        return self.embed_dim // self.num_heads

    @property
    def first_l(self) -> int:
        return self.patch_nums[0] ** 2

    @property
    def begin_ends(self) -> tuple[tuple[int, int], ...]:
        return scale_begin_ends(self.patch_nums)

    @property
    def mlp_dim(self) -> int:
        return round(self.embed_dim * self.mlp_ratio)

    @classmethod
    def from_depth(cls, depth: int, **overrides) -> "VARConfig":
        """A paper-shaped model: width 64*depth, heads = depth, drop-path 0.1*depth/24, and the
        AdaLN gamma init of the reference run of that depth (`ADALN_GAMMA_INIT`)."""
        base = dict(depth=depth, embed_dim=64 * depth, num_heads=depth,
                    drop_path_rate=0.1 * depth / 24,
                    adaln_gamma_init=ADALN_GAMMA_INIT.get(depth, DEFAULT_ADALN_GAMMA_INIT))
        return cls(**{**base, **overrides})

    @classmethod
    def d16(cls, **overrides) -> "VARConfig":
        return cls.from_depth(16, **overrides)

    @classmethod
    def d20(cls, **overrides) -> "VARConfig":
        return cls.from_depth(20, **overrides)

    @classmethod
    def d24(cls, **overrides) -> "VARConfig":
        return cls.from_depth(24, **overrides)

    @classmethod
    def d30(cls, **overrides) -> "VARConfig":
        return cls.from_depth(30, **overrides)

    @classmethod
    def d36(cls, **overrides) -> "VARConfig":
        """The 512px model: 512px scales and shared AdaLN."""
        return cls.from_depth(36, **{"patch_nums": PATCH_NUMS_512, "shared_aln": True,
                                     **overrides})

    def check_compatible(self, vae: VQVAEConfig) -> None:
        """Raise if this transformer cannot run on top of tokenizer `vae`."""
        if (self.patch_nums, self.vocab_size, self.vae_channels) != (
                vae.patch_nums, vae.vocab_size, vae.z_channels):
            raise ValueError(
                "VARConfig and VQVAEConfig disagree: "
                f"patch_nums {self.patch_nums} vs {vae.patch_nums}, "
                f"vocab_size {self.vocab_size} vs {vae.vocab_size}, "
                f"vae_channels {self.vae_channels} vs z_channels {vae.z_channels}. "
                "Build both from the same preset (e.g. VARConfig.d16() with VQVAEConfig.res256())."
            )

    def check_labels(self, labels, allow_null: bool = True) -> np.ndarray:
        """Validate concrete class labels; returns them as an int32 numpy array."""
        arr = np.asarray(labels)
        if arr.ndim != 1:
            raise ValueError(f"labels must be a 1-D array of class ids, got shape {arr.shape}.")
        if arr.size and not np.issubdtype(arr.dtype, np.integer):
            raise ValueError(f"labels must be integers, got dtype {arr.dtype}.")
        hi = self.num_classes if allow_null else self.num_classes - 1
        bad = arr[(arr < 0) | (arr > hi)]
        if bad.size:
            raise ValueError(
                f"labels {bad.tolist()} are outside [0, {hi}] (num_classes={self.num_classes}"
                + (", index num_classes is the null class" if allow_null else "") + ")."
            )
        return arr.astype(np.int32)


def config_to_dict(cfg: VQVAEConfig | VARConfig) -> dict:
    """JSON-ready dict of a model config, tagged with its kind ("vqvae" or "var")."""
    kind = "vqvae" if isinstance(cfg, VQVAEConfig) else "var"
    return {"kind": kind, **dataclasses.asdict(cfg)}


def config_from_dict(d: dict) -> VQVAEConfig | VARConfig:
    """Inverse of `config_to_dict`; unknown fields raise a ValueError naming them."""
    d = dict(d)
    kind = d.pop("kind", None)
    cls = {"vqvae": VQVAEConfig, "var": VARConfig}.get(kind)
    if cls is None:
        raise ValueError(f"config dict has kind={kind!r}; expected 'vqvae' or 'var'.")
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(d) - names)
    if unknown:
        raise ValueError(f"unknown {cls.__name__} fields {unknown}; known: {sorted(names)}.")
    return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in d.items()})
