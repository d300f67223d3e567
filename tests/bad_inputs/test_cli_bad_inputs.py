"""Bad-input catalogue, part 2: `--set` values and command-line arguments.

Each row: the input, the exception (or exit code 2 of `var-jax`), a phrase of the message.
Output paths are refused before any weights are read (the weights named here do not exist).
"""
import os

import numpy as np
import pytest
from PIL import Image

from train_helpers import tiny_var_config, toy_config
from trust_helpers import run_cli
from var_jax.train.experiment import override
from var_jax.workdir_lock import WorkdirLock

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TINY_CPU = os.path.join(ROOT, "experiments", "tiny_cpu.py")

SET_ERRORS = [
    # (--set item, phrase of the ValueError)
    ("loop.tensorboard=maybe", "LoopConfig.tensorboard): expected a bool (true or false)"),
    ("loop.total_steps=ten", "expected an int, got 'ten'"),
    ("loop.total_steps=1.5", "expected an int, got '1.5'"),
    ("optim.base_lr=fast", "expected a float, got 'fast'"),
    ("loop.ema_decay=high", "expected float | None, got 'high'"),
    ("loop.total_step=7", "has no field 'total_step'; did you mean 'total_steps'?"),
    ("lop.total_steps=7", "did you mean 'loop'?"),
    ("loop=3", "LoopConfig is a group of fields"),
    ("loop.total_steps.x=1", "int has no fields to set"),
    ("loop.total_steps=0", "LoopConfig.total_steps=0 must be >= 1"),
    ("loop.total_steps", "is not KEY=VALUE"),
    ("=3", "is not KEY=VALUE"),
]


@pytest.mark.parametrize("item, phrase", SET_ERRORS, ids=[c[0] for c in SET_ERRORS])
def test_bad_set_values_name_the_field_and_its_type(item, phrase):
    with pytest.raises(ValueError, match=None) as e:
        override(toy_config(), [item])
    assert phrase in str(e.value), str(e.value)


SET_VALUES = [
    # (--set item, field path, value expected) on the tiny VAR config
    ("loop.tensorboard=false", "loop.tensorboard", False),
    ("loop.tensorboard=True", "loop.tensorboard", True),
    ("loop.multihost=None", "loop.multihost", None),
    ("loop.ema_decay=0.99", "loop.ema_decay", 0.99),
    ("optim.base_lr=1", "optim.base_lr", 1.0),
    ("sample_classes=0,3,1", "sample_classes", (0, 3, 1)),
    ("sample_classes=(2, 1)", "sample_classes", (2, 1)),
    ("tokenizer=/weights/vae", "tokenizer", "/weights/vae"),
    ("data.eval_split=null", "data.eval_split", None),
]


@pytest.mark.parametrize("item, field, value", SET_VALUES, ids=[c[0] for c in SET_VALUES])
def test_set_values_get_the_fields_type(item, field, value):
    obj = override(tiny_var_config(), [item])
    for name in field.split("."):
        obj = getattr(obj, name)
    assert obj == value and type(obj) is type(value)


def _png(path, size=(16, 16)):
    Image.fromarray(np.zeros(size[::-1] + (3,), np.uint8)).save(path)
    return str(path)


@pytest.fixture
def tmp(tmp_path):
    """A folder with a file, a non-empty folder, a square and a wide PNG, a held work dir."""
    (tmp_path / "a_file").write_text("x")
    os.makedirs(tmp_path / "full")
    (tmp_path / "full" / "x").write_text("x")
    _png(tmp_path / "img.png")
    _png(tmp_path / "wide.png", (32, 16))
    with WorkdirLock(tmp_path / "held"):
        yield tmp_path


def _w(t):
    return ["--var", str(t / "no_var.pth"), "--vae", str(t / "no_vae.pth")]


GOLDEN = os.path.join(ROOT, "tests", "fixtures", "golden")
REAL_WEIGHTS = ["--var", os.path.join(GOLDEN, "var_tiny_l2norm.pth"), "--vae",
                os.path.join(GOLDEN, "vae.pth"), "--patch-nums", "1,2,3,4", "--compile-cache", ""]


def _train(t, *extra):
    return ["train", "--config", TINY_CPU, "--workdir", str(t / "r"), *extra]


CLI_CASES = [
    # (id, argv of the tmp folder, phrase of stderr); every one exits 2 at once
    ("sample-empty-classes", lambda t: ["sample", "--classes", "", "--out", str(t / "s.png")]
     + REAL_WEIGHTS, "names no class ids"),
    ("sample-classes-comma-only", lambda t: ["sample", "--classes", ",", "--out",
                                             str(t / "s.png")] + REAL_WEIGHTS, "names no class ids"),
    ("sample-out-in-missing-folder",
     lambda t: ["sample", "--classes", "1", "--out", str(t / "no" / "x.png")] + _w(t),
     "does not exist"),
    ("sample-out-is-a-folder", lambda t: ["sample", "--classes", "1", "--out", str(t)] + _w(t),
     "is a folder"),
    ("sample-out-not-an-image",
     lambda t: ["sample", "--classes", "1", "--out", str(t / "x.txt")] + _w(t),
     "is not an image format"),
    ("sample-out-under-a-file",
     lambda t: ["sample", "--classes", "1", "--out", str(t / "a_file" / "x.png")] + _w(t),
     "does not exist"),
    ("edit-out-is-a-folder", lambda t: ["edit", str(t / "img.png"), "--class", "1", "--box",
                                        "0,0,1,1", "--out", str(t)] + _w(t), "is a folder"),
    ("edit-mask-other-aspect", lambda t: ["edit", str(t / "img.png"), "--class", "1", "--mask",
                                          str(t / "wide.png"), "--out", str(t / "e.png")] + _w(t),
     "would cover another region"),
    ("reconstruct-out-dir-is-a-file", lambda t: ["reconstruct", str(t / "img.png"), "--weights",
                                                 "none.pth", "--out-dir", str(t / "a_file")],
     "is a file"),
    ("convert-into-non-empty-dir", lambda t: ["convert", str(t / "none.pth"), str(t / "full")],
     "is not empty"),
    ("convert-under-a-file", lambda t: ["convert", str(t / "none.pth"),
                                        str(t / "a_file" / "out")], "does not exist"),
    ("train-set-typo", lambda t: _train(t, "--set", "loop.totl_steps=3"),
     "did you mean 'total_steps'"),
    ("train-set-wrong-type", lambda t: _train(t, "--set", "loop.progress_bar=nah"),
     "expected a bool"),
    ("train-workdir-not-writable", lambda t: ["train", "--config", TINY_CPU, "--workdir",
                                              str(t / "a_file" / "run")], "cannot be written"),
    ("train-workdir-in-use", lambda t: ["train", "--config", TINY_CPU, "--workdir",
                                        str(t / "held")], f"is in use by pid {os.getpid()}"),
    ("train-tokenizer-export-is-a-file",
     lambda t: ["train-tokenizer", "--config",
                os.path.join(ROOT, "experiments", "tokenizer_digits.py"), "--workdir",
                str(t / "t"), "--export", str(t / "a_file")], "is a file"),
]


@pytest.mark.parametrize("argv, phrase", [c[1:] for c in CLI_CASES],
                         ids=[c[0] for c in CLI_CASES])
def test_bad_command_lines_exit_2_before_any_work(tmp, argv, phrase):
    code, _, err = run_cli(*argv(tmp))
    assert code == 2 and phrase in err, (code, err[-2000:])
    assert not os.path.exists(tmp / "r" / "checkpoints")
