"""Bad command lines: exit status 2 and one line on stderr that names the flag or file to fix."""
import pathlib

import numpy as np
import pytest
from PIL import Image

from var_jax.cli import main

GOLDEN = pathlib.Path(__file__).parent.parent / "fixtures" / "golden"
VAR, VAE = str(GOLDEN / "var_tiny_l2norm.pth"), str(GOLDEN / "vae.pth")
MODEL = ["--var", VAR, "--vae", VAE, "--patch-nums", "1,2,3,4", "--compile-cache", ""]
TINY_CPU = str(GOLDEN.parent.parent.parent / "experiments" / "tiny_cpu.py")
ERR = "var-jax {}: error: {}\n"


@pytest.fixture(scope="module")
def vae_at_other_scales(tmp_path_factory):
    out = tmp_path_factory.mktemp("conv") / "vae_1_4"
    assert main(["convert", VAE, str(out), "--patch-nums", "1,4"]) == 0
    return str(out)


CASES = [
    (["sample", "--classes", "1,x"] + MODEL,
     "--classes must be comma separated integers, got '1,x'."),
    (["sample", "--classes", "12"] + MODEL,
     "--classes 12: the model knows the classes 0..9 (10 is the unconditional null class); "
     "got [12]."),
    (["sample", "--classes", "1", "--batch-size", "0"] + MODEL, "--batch-size=0 must be >= 1."),
    (["sample", "--classes", "1", "--batch", "0"] + MODEL, "--batch-size=0 must be >= 1."),
    (["sample", "--classes", "1", "--per-class", "0"] + MODEL, "--per-class=0 must be >= 1."),
    (["sample", "--classes", "1", "--top-p", "1.5"] + MODEL,
     "--top-p=1.5 must be in [0, 1) (0 turns it off)."),
    (["sample", "--classes", "1", "--var", VAR, "--vae", VAE, "--patch-nums", "1,x"],
     "--patch-nums must be comma separated integers, e.g. 1,2,3,4; got '1,x'."),
    (["sample", "--classes", "1", "--var", VAE, "--vae", VAR, "--patch-nums", "1,2,3,4"],
     f"--var {VAE} holds a VQ-VAE tokenizer (e.g. vae_ch160v4096z32.pth), not a VAR transformer "
     "(e.g. var_d16.pth); the transformer goes to --var and the tokenizer to --vae."),
    (["sample", "--classes", "1", "--var", "missing.pth", "--vae", VAE],
     "--var missing.pth: no such file or directory."),
    (["sample", "--classes", "1", "--var", str(GOLDEN), "--vae", VAE],
     f"--var {GOLDEN} is a directory but neither converted weights (config.json + params/ from "
     "`var-jax convert` or `var-jax export`) nor a training work dir (config.json + "
     "checkpoints/ from `var-jax train`)."),
    (["sample", "--classes", "1", "--var", VAR, "--vae", VAE],
     "cannot tell the scales: its 30 tokens are not the released 256 or 512 px scales; give "
     "--patch-nums (e.g. 1,2,3,4) or --image-size 256 / 512 for the released scales."),
    (["edit", "in.png", "--class", "1", "--box", "0.5"] + MODEL,
     "--box must be four fractions y0,x0,y1,x1, got '0.5'."),
    (["edit", "in.png", "--class", "1", "--box", "0.5,0.5,0.2,0.9"] + MODEL,
     "--box '0.5,0.5,0.2,0.9' needs 0 <= y0 < y1 <= 1 and 0 <= x0 < x1 <= 1."),
    (["edit", "in.png", "--class", "1", "--box", "0,0,1,1", "--num", "0"] + MODEL,
     "--num=0 must be >= 1."),
    (["reconstruct", "in.png", "--vae", VAE],
     "cannot tell the scales: the tokenizer's weights do not store its scales; give "
     "--patch-nums (e.g. 1,2,3,4) or --image-size 256 / 512 for the released scales."),
    (["export", "nowhere", "out"],
     "RUN_DIR nowhere is not a training work dir (no config.json and checkpoints/ from "
     "`var-jax train --workdir`)."),
    (["convert", "nowhere.pth", "out"],
     "CHECKPOINT nowhere.pth: no such file; pass a released .pth such as vae_ch160v4096z32.pth "
     "or var_d16.pth."),
    (["train", "--config", TINY_CPU, "--workdir", "w", "--set", "loop.total_steps"],
     "--set 'loop.total_steps' is not KEY=VALUE (e.g. --set loop.total_steps=100)."),
    (["train", "--config", TINY_CPU, "--workdir", "w", "--set", "loop.steps=3"],
     "--set loop.steps: LoopConfig has no field 'steps'; did you mean 'total_steps'? its fields "
     "are ['async_checkpoint', 'checkpoint_every', 'ema_decay', 'eval_batches', 'eval_every', "
     "'global_batch', 'grad_accum', 'keep_checkpoints', 'log_every', 'multihost', "
     "'progress_bar', 'sample_every', 'seed', 'tensorboard', 'total_steps']."),
    (["train", "--config", "nowhere.py", "--workdir", "w"],
     "experiment config nowhere.py does not exist; pass a file such as experiments/tiny_cpu.py."),
]


@pytest.mark.parametrize("argv,message", CASES, ids=lambda v: " ".join(v[:3])
                         if isinstance(v, list) else None)
def test_bad_command_line_names_the_flag_to_fix(argv, message, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)   # relative outputs and missing inputs stay inside tmp_path
    Image.fromarray(np.zeros((64, 64, 3), np.uint8)).save(tmp_path / "in.png")
    assert main(argv) == 2
    assert capsys.readouterr().err.splitlines()[-1] + "\n" == ERR.format(argv[0], message)


def test_scale_mismatch_says_which_side_to_reconvert(vae_at_other_scales, capsys):
    assert main(["sample", "--classes", "1", "--var", VAR, "--vae", vae_at_other_scales,
                 "--patch-nums", "1,2,3,4", "--compile-cache", ""]) == 2
    assert capsys.readouterr().err == ERR.format("sample", (
        f"the tokenizer --vae {vae_at_other_scales} was converted for other scales than the "
        f"transformer --var {VAR} uses (1,2,3,4); re-convert the tokenizer with `var-jax convert "
        "vae_ch160v4096z32.pth OUT_DIR --patch-nums 1,2,3,4` and pass OUT_DIR to --vae (or pass "
        "the .pth itself)."))
