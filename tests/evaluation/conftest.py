"""Shared fixtures: the seeded random-weight FID Inception (regenerated, never shipped)."""
import pathlib
import sys

import numpy as np
import pytest

FIXTURES = pathlib.Path(__file__).parents[1] / "fixtures" / "inception"
GOLDEN = pathlib.Path(__file__).parents[1] / "fixtures" / "golden"
sys.path.insert(0, str(FIXTURES))

from inception_random_weights import random_state_dict  # noqa: E402


@pytest.fixture(scope="session")
def random_inception_sd():
    return random_state_dict(FIXTURES / "fid_inception_keys.json", seed=0)


@pytest.fixture(scope="session")
def random_inception(random_inception_sd):
    from var_jax.evaluation import load_inception
    return load_inception(random_inception_sd)[0]


@pytest.fixture(scope="session")
def inception_io():
    return dict(np.load(FIXTURES / "fid_inception_random_io.npz"))
