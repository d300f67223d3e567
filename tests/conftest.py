"""Fixtures for every test folder: the reference's golden tiny models (see tests/golden.py)."""
import pytest

import golden


@pytest.fixture(scope="session")
def golden_var():
    """The loader name -> (VARConfig, params, io dict, cfgs) of a golden tiny VAR."""
    return golden.load_var


@pytest.fixture(scope="session")
def golden_vae():
    """(VQVAEConfig, params) of the golden tokenizer."""
    return golden.load_vae()
