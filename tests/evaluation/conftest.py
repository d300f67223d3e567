"""Shared fixtures: the seeded random-weight FID Inception (regenerated, never shipped)."""
import numpy as np
import pytest

from inception_fixtures import FIXTURES, random_state_dict


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
