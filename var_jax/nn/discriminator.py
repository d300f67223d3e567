"""PatchGAN discriminator (pix2pix / taming "NLayerDiscriminator" layout) for tokenizer training."""
from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

_LEAK = 0.2


class PatchDiscriminator(nn.Module):
    """Images (B, H, W, 3) in [-1, 1] -> real/fake logits per overlapping patch (B, h, w, 1).

    4x4 convs: one stride-2 conv with bias, then `num_layers - 1` stride-2 and one stride-1 conv
    (no bias, GroupNorm, leaky ReLU 0.2), widths base_channels * min(2**i, 8); a last 4x4 conv to
    one logit. GroupNorm stands in for the reference's BatchNorm so the forward is a pure function
    of the params (no batch statistics to carry). Weights ~ N(0, 0.02) as in pix2pix.
    """

    base_channels: int = 64   # width of the first conv
    num_layers: int = 3       # stride-2 convs; the receptive field grows with it (70px for 3)
    norm_groups: int = 32     # GroupNorm groups; each inner width must be divisible by it

    @nn.compact
    def __call__(self, imgs_BHWC: jax.Array) -> jax.Array:
        if self.num_layers < 1:
            raise ValueError(f"PatchDiscriminator.num_layers={self.num_layers} must be >= 1.")
        init = nn.initializers.normal(0.02)
        pad = ((1, 1), (1, 1))
        h = nn.Conv(self.base_channels, (4, 4), (2, 2), pad, kernel_init=init, name="conv_in")(
            imgs_BHWC.astype(jnp.float32))
        h = nn.leaky_relu(h, _LEAK)
        for i in range(1, self.num_layers + 1):
            width = self.base_channels * min(2 ** i, 8)
            if width % self.norm_groups:
                raise ValueError(f"PatchDiscriminator: width {width} of layer {i} is not divisible "
                                 f"by norm_groups={self.norm_groups}; choose base_channels as a "
                                 f"multiple of {self.norm_groups // 2 or 1} or fewer groups.")
            stride = 2 if i < self.num_layers else 1
            h = nn.Conv(width, (4, 4), (stride, stride), pad, use_bias=False, kernel_init=init,
                        name=f"conv_{i}")(h)
            h = nn.GroupNorm(num_groups=self.norm_groups, epsilon=1e-5,
                             scale_init=lambda k, s, d=jnp.float32: 1.0 + init(k, s, d),
                             name=f"norm_{i}")(h)
            h = nn.leaky_relu(h, _LEAK)
        return nn.Conv(1, (4, 4), (1, 1), pad, kernel_init=init, name="conv_out")(h)
