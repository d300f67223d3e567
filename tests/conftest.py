"""Fixtures for every test folder: the reference's golden tiny models (see tests/golden.py) and
the tiny runs (see tests/train/train_helpers.py), each built once per session."""
import os

os.environ.setdefault("JAX_PLATFORMS", "cpu")   # tests run on CPU; skips libtpu's TPU probe

import jax  # noqa: E402
import pytest  # noqa: E402

import golden  # noqa: E402
import train_helpers  # noqa: E402
from var_jax import sharding  # noqa: E402
from var_jax.train import loop as loop_lib  # noqa: E402
from var_jax.train.var_task import VARTask  # noqa: E402


@pytest.fixture(scope="session")
def golden_var():
    """The loader name -> (VARConfig, params, io dict, cfgs) of a golden tiny VAR."""
    return golden.load_var


@pytest.fixture(scope="session")
def golden_vae():
    """(VQVAEConfig, params) of the golden tokenizer."""
    return golden.load_vae()


@pytest.fixture(scope="session")
def toy_run(tmp_path_factory):
    """A finished 4-step toy run (train_helpers.train_toy) with checkpoints 2 and 4; read it, or
    copy it before changing it."""
    path = tmp_path_factory.mktemp("toy") / "run"
    train_helpers.train_toy(path)
    return path


@pytest.fixture(scope="session")
def tiny_var():
    """(task, fresh state, mesh, shardings) of the tiny VAR pair (random frozen tokenizer,
    total_steps=150) on one device."""
    cfg = train_helpers.tiny_var_config(total_steps=150)
    mesh = sharding.make_mesh(sharding.MeshConfig(1, 1, 1), jax.devices()[:1])
    task = VARTask(cfg)
    with sharding.activate(mesh):
        state, shardings, _, _ = loop_lib.create_state(task, cfg.loop, mesh, jax.random.key(0))
    return task, state, mesh, shardings
