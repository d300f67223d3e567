"""Strict conversion names every missing, unexpected and mis-shaped key."""
import jax
import numpy as np
import pytest

from var_jax.weights.strict import CONV, IDENTITY, LINEAR, params_from_state_dict

EXPECTED = {"dense": {"kernel": jax.ShapeDtypeStruct((3, 5), np.float32),
                      "bias": jax.ShapeDtypeStruct((5,), np.float32)},
            "conv": {"kernel": jax.ShapeDtypeStruct((3, 3, 2, 4), np.float32)}}


def key_map(key):
    table = {"fc.weight": (("dense", "kernel"), LINEAR), "fc.bias": (("dense", "bias"), IDENTITY),
             "conv.weight": (("conv", "kernel"), CONV)}
    return table.get(key)


def _sd():
    rng = np.random.default_rng(0)
    return {"fc.weight": rng.normal(size=(5, 3)), "fc.bias": rng.normal(size=(5,)),
            "conv.weight": rng.normal(size=(4, 2, 3, 3)), "buf": np.zeros(7)}


def test_layouts_are_transposed_and_buffers_ignored():
    sd = _sd()
    params = params_from_state_dict(sd, EXPECTED, key_map, ignore=["buf"])
    np.testing.assert_array_equal(params["dense"]["kernel"], sd["fc.weight"].T.astype(np.float32))
    assert params["conv"]["kernel"][1, 2, 0, 3] == np.float32(sd["conv.weight"][3, 0, 1, 2])
    assert params["dense"]["bias"].dtype == np.float32


def test_unexpected_key_is_named():
    with pytest.raises(ValueError, match=r"(?s)unexpected keys.*buf \(7,\)"):
        params_from_state_dict(_sd(), EXPECTED, key_map)


def test_missing_key_is_named():
    sd = _sd()
    del sd["fc.bias"]
    with pytest.raises(ValueError, match=r"(?s)missing parameters.*dense/bias \(5,\)"):
        params_from_state_dict(sd, EXPECTED, key_map, ignore=["buf"])


def test_mis_shaped_key_names_both_shapes():
    sd = _sd()
    sd["conv.weight"] = np.zeros((4, 2, 5, 5))
    with pytest.raises(ValueError, match=r"(?s)conv\.weight: checkpoint \(4, 2, 5, 5\).*expects "
                                         r"\(3, 3, 2, 4\)"):
        params_from_state_dict(sd, EXPECTED, key_map, ignore=["buf"])
