"""Config presets, validation messages and (de)serialisation."""
import pytest

from var_jax.configs import (VARConfig, VQVAEConfig, config_from_dict, config_to_dict,
                             scale_begin_ends, scale_of_token)


def test_presets_match_the_released_models():
    assert VQVAEConfig.res256().seq_len == 680 and VQVAEConfig.res256().latent_size == 16
    assert VQVAEConfig.res512().seq_len == 2240 and VQVAEConfig.res512().latent_size == 32
    for depth in (16, 20, 24, 30):
        cfg = getattr(VARConfig, f"d{depth}")()
        assert (cfg.embed_dim, cfg.num_heads, cfg.seq_len) == (64 * depth, depth, 680)
        assert not cfg.shared_aln
    d36 = VARConfig.d36()
    assert d36.shared_aln and d36.seq_len == 2240 and d36.embed_dim == 2304
    d36.check_compatible(VQVAEConfig.res512())
    with pytest.raises(ValueError, match="disagree"):
        d36.check_compatible(VQVAEConfig.res256())


@pytest.mark.parametrize("kwargs, message", [
    (dict(patch_nums=(1, 2, 3, 8)), "must equal the latent size"),
    (dict(ch=100), "not divisible by norm_groups=32"),
    (dict(patch_nums=(1, 3, 2, 16)), "strictly increasing"),
    (dict(image_size=250), "not divisible by the downsampling factor"),
    (dict(quant_resi=0.0), "quant_resi"),
    (dict(dtype="float64"), "dtype"),
])
def test_invalid_vqvae_configs_say_what_to_change(kwargs, message):
    with pytest.raises(ValueError, match=message):
        VQVAEConfig(**kwargs)


@pytest.mark.parametrize("kwargs, message", [
    (dict(embed_dim=100, num_heads=16), "not divisible by num_heads"),
    (dict(cond_drop_rate=1.0), "cond_drop_rate"),
    (dict(depth=0), "depth"),
])
def test_invalid_var_configs_say_what_to_change(kwargs, message):
    with pytest.raises(ValueError, match=message):
        VARConfig(**kwargs)


def test_labels_are_checked_against_the_class_count():
    cfg = VARConfig(num_classes=10, depth=2, embed_dim=128, num_heads=2)
    assert cfg.check_labels([0, 9, 10]).tolist() == [0, 9, 10]  # 10 = null class
    with pytest.raises(ValueError, match=r"\[11\] are outside \[0, 10\]"):
        cfg.check_labels([3, 11])
    with pytest.raises(ValueError, match=r"outside \[0, 9\]"):
        cfg.check_labels([10], allow_null=False)
    with pytest.raises(ValueError, match="1-D"):
        cfg.check_labels([[1]])


def test_config_round_trip_through_dict():
    for cfg in (VQVAEConfig.res512(), VARConfig.d36(dtype="bfloat16")):
        assert config_from_dict(config_to_dict(cfg)) == cfg
    with pytest.raises(ValueError, match="unknown VARConfig fields"):
        config_from_dict({"kind": "var", "depht": 3})


def test_scale_helpers():
    assert scale_begin_ends((1, 2, 3)) == ((0, 1), (1, 5), (5, 14))
    assert scale_of_token((1, 2)).tolist() == [0, 1, 1, 1, 1]
