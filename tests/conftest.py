"""Fixtures for every test folder: the reference's golden tiny models (see tests/golden.py)."""
import os

os.environ.setdefault("JAX_PLATFORMS", "cpu")   # tests run on CPU; skips libtpu's TPU probe

import pytest  # noqa: E402

import golden  # noqa: E402


@pytest.fixture(scope="session")
def golden_var():
    """The loader name -> (VARConfig, params, io dict, cfgs) of a golden tiny VAR."""
    return golden.load_var


@pytest.fixture(scope="session")
def golden_vae():
    """(VQVAEConfig, params) of the golden tokenizer."""
    return golden.load_vae()
