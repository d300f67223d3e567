"""Settings of a tokenizer (multi-scale VQ-VAE) training run; experiments/tokenizer_*.py return one."""
from __future__ import annotations

import dataclasses

from var_jax.configs import VQVAEConfig
from var_jax.sharding import MeshConfig
from var_jax.train.input import DataConfig
from var_jax.train.loop import LoopConfig
from var_jax.train.optimizer import OptimConfig

# Adam as in taming-transformers' VQGAN: betas (0.5, 0.9), no weight decay, constant lr.
TOKENIZER_OPTIM = OptimConfig(base_lr=1e-4, b1=0.5, b2=0.9, weight_decay=0.0, schedule="const",
                              grad_clip=0.0)


@dataclasses.dataclass(frozen=True)
class TokenizerLossConfig:
    """Weights of the loss terms; a weight of 0 switches its term (and its network) off."""

    l1_weight: float = 1.0            # mean |x - x'|
    l2_weight: float = 1.0            # mean (x - x')^2
    vq_weight: float = 1.0            # the model's VQ loss (codebook + beta * commitment)
    perceptual_weight: float = 0.0    # LPIPS, on only when `perceptual_weights` names files
    perceptual_weights: tuple[str, ...] = ()   # VGG16 + LPIPS head files (.pth / .npz; a string
                                      # is split at commas), never downloaded; key names in
                                      # var_jax.nn.perceptual
    disc_weight: float = 0.0          # GAN generator loss weight (x the adaptive weight); 0: no GAN
    disc_start: int = 0               # step from which the discriminator trains and is used
    adaptive_weight_max: float = 1e4  # clip of ||grad rec|| / ||grad gen|| at the last layer
    disc_channels: int = 64           # PatchDiscriminator base width
    disc_layers: int = 3
    disc_norm_groups: int = 32
    last_layer: tuple[str, ...] = ("decoder", "conv_out")   # module whose kernel the adaptive
                                      # weight's gradient norms are taken at (must emit the recon)

    def __post_init__(self):
        files = self.perceptual_weights
        files = [f for f in files.split(",") if f] if isinstance(files, str) else files
        object.__setattr__(self, "perceptual_weights", tuple(files))
        object.__setattr__(self, "last_layer", tuple(self.last_layer))
        for name in ("l1_weight", "l2_weight", "vq_weight", "perceptual_weight", "disc_weight"):
            if getattr(self, name) < 0:
                raise ValueError(f"TokenizerLossConfig.{name}={getattr(self, name)} must be >= 0.")
        if self.disc_start < 0:
            raise ValueError(f"TokenizerLossConfig.disc_start={self.disc_start} must be >= 0.")

    @property
    def perceptual(self) -> bool:
        return self.perceptual_weight > 0 and bool(self.perceptual_weights)

    @property
    def gan(self) -> bool:
        return self.disc_weight > 0


@dataclasses.dataclass(frozen=True)
class CodebookConfig:
    """Codebook upkeep, checked every `check_every` steps (0: never): codes no scale chose for
    `dead_window` steps, and the codes a scale lacks when it chose fewer than
    ceil(min_usage * min(V, batch * pn**2)) codes in that window, get current latent vectors
    (see var_jax.train.tokenizer_codebook)."""

    dead_window: int = 200
    check_every: int = 50
    min_usage: float = 0.5

    def __post_init__(self):
        if self.dead_window < 1 or self.check_every < 0:
            raise ValueError(f"CodebookConfig: dead_window={self.dead_window} must be >= 1 and "
                             f"check_every={self.check_every} >= 0 (0 disables re-init).")
        if not 0.0 <= self.min_usage <= 1.0:
            raise ValueError(f"CodebookConfig.min_usage={self.min_usage} must be in [0, 1] "
                             "(0: re-initialise dead codes only).")


@dataclasses.dataclass(frozen=True)
class TokenizerTrainConfig:
    """Everything `var-jax train-tokenizer` needs."""

    vqvae: VQVAEConfig
    loop: LoopConfig
    data: DataConfig
    mesh: MeshConfig = MeshConfig()
    optim: OptimConfig = TOKENIZER_OPTIM       # encoder, decoder, codebook, phis
    disc_optim: OptimConfig = TOKENIZER_OPTIM  # discriminator (its schedule starts at disc_start)
    loss: TokenizerLossConfig = TokenizerLossConfig()
    codebook: CodebookConfig = CodebookConfig()

    def __post_init__(self):
        if self.vqvae.image_size != self.data.image_size:
            raise ValueError(f"data.image_size={self.data.image_size} differs from the tokenizer's "
                             f"image_size={self.vqvae.image_size}; make them equal.")
        if self.data.tokens or self.data.eval_tokens:
            raise ValueError("a tokenizer trains on images: unset data.tokens / data.eval_tokens.")
