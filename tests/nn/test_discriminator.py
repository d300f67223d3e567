"""PatchDiscriminator: output shape, init statistics, errors."""
import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from var_jax.nn.discriminator import PatchDiscriminator


@pytest.mark.parametrize("size,layers,want", [(32, 3, 2), (32, 2, 6)])
def test_patch_logits_shape(size, layers, want):
    disc = PatchDiscriminator(base_channels=16, num_layers=layers, norm_groups=8)
    x = jax.random.uniform(jax.random.key(0), (2, size, size, 3), minval=-1, maxval=1)
    params = disc.init(jax.random.key(1), x)["params"]
    out = disc.apply({"params": params}, x)
    chex.assert_shape(out, (2, want, want, 1))
    chex.assert_tree_all_finite(out)
    # per-example: logits depend on the example's own pixels only (GroupNorm, no batch stats)
    out0 = disc.apply({"params": params}, x[:1])
    chex.assert_trees_all_close(out0, out[:1], atol=1e-5)


def test_init_is_pix2pix_normal():
    disc = PatchDiscriminator(base_channels=32, num_layers=3, norm_groups=8)
    params = disc.init(jax.random.key(0), jnp.zeros((1, 32, 32, 3)))["params"]
    k = np.asarray(params["conv_2"]["kernel"])
    assert abs(k.std() - 0.02) < 0.002, k.std()
    assert "bias" not in params["conv_2"]
    assert abs(np.asarray(params["norm_2"]["scale"]).mean() - 1.0) < 0.01


def test_bad_width_names_the_fix():
    disc = PatchDiscriminator(base_channels=12, num_layers=2, norm_groups=32)
    with pytest.raises(ValueError, match="norm_groups=32"):
        disc.init(jax.random.key(0), jnp.zeros((1, 32, 32, 3)))
