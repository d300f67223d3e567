"""Bad-input catalogue, part 1: damaged, tampered, changed or shared work dirs and weights dirs.

Each row: how the input is spoiled, the exception (or the fallback warning) expected, and a
phrase of its message.
"""
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from train_helpers import ToyTask, toy_config, toy_streams, train_toy
from trust_helpers import TESTS, flip_byte, largest_file, random_params, run_cli

import train_helpers
from var_jax.checkpoint import Checkpointer, DamagedCheckpointError
from var_jax.configs import VARConfig
from var_jax.manifest import TamperedError, manifest_hash
from var_jax.weights.store import load_converted, save_converted
from var_jax.workdir_lock import WorkdirLock, WorkdirLockedError


@pytest.fixture
def run(toy_run, tmp_path):
    """A copy of the `toy_run` to spoil (tmp_path / "run")."""
    path = tmp_path / "run"
    shutil.copytree(toy_run, path)
    return path


def _step(run, step=4):
    return run / "checkpoints" / str(step)


def _edit_json(path, change):
    data = json.loads(path.read_text())
    change(data)
    path.write_text(json.dumps(data))


# --------------------------------------------------------------------- resuming a damaged run
def _flip_state(run):
    flip_byte(largest_file(_step(run) / "state"))


def _flip_data(run):
    _edit_json(_step(run) / "data" / "metadata", lambda d: d.update(index=d["index"] + 1))


def _truncate_state(run):
    path = largest_file(_step(run) / "state")
    with open(path, "r+b") as f:
        f.truncate(os.path.getsize(path) // 3)


def _drop(rel):
    def spoil(run):
        path = _step(run) / rel
        shutil.rmtree(path) if path.is_dir() else path.unlink()
    return spoil


def _garble_manifest(run):
    (_step(run) / "manifest" / "metadata").write_text("{not json")


def _drop_all_metadata(run):
    for step in (2, 4):
        (_step(run, step) / "state" / "_METADATA").unlink()


# A flipped byte lands in an Orbax/tensorstore chunk whose layout and zstd compression vary from
# run to run. Where the chunk still decodes, the manifest names the array (what these cases
# assert); where it does not, the chunk's checksum refuses it as damage (Orbax's message names
# the array) and a resume falls back to the previous checkpoint. Either way the altered file is
# refused; which of the two happens is not under the test's control, so these cases may xfail.
LAYOUT_DEPENDENT = pytest.mark.xfail(reason="flip may hit a compressed chunk: refused as damage",
                                     strict=False)


def _cases(cases):
    flips = ("_flip_state", "_flip_weights")
    return [pytest.param(*c[1:], id=c[0],
                         marks=LAYOUT_DEPENDENT if getattr(c[1], "__name__", "") in flips else ())
            for c in cases]


RESUME_CASES = [
    # (id, spoil, exception or None (resumes from step 2), phrase of the message or warning)
    ("byte-flip-in-state", _flip_state, TamperedError, "has sha256"),
    ("edited-data-position", _flip_data, TamperedError, "the data state has sha256"),
    ("missing-state-METADATA", _drop("state/_METADATA"), None, "state/_METADATA is missing"),
    ("truncated-state-file", _truncate_state, None, "do not read back"),
    ("missing-manifest", _drop("manifest"), None, "manifest"),
    ("garbled-manifest", _garble_manifest, None, "missing or unreadable"),
    ("every-step-damaged", _drop_all_metadata, DamagedCheckpointError, "every checkpoint"),
]


@pytest.mark.parametrize("spoil, error, phrase", _cases(RESUME_CASES))
def test_resume_from_a_damaged_or_tampered_checkpoint(run, spoil, error, phrase, caplog):
    spoil(run)
    cfg = toy_config()
    if error is not None:
        with pytest.raises(error, match=phrase):
            train_toy(run, cfg)
        return
    with caplog.at_level(logging.WARNING):
        state = train_toy(run, cfg)
    assert phrase in caplog.text and "falling back to step 2" in caplog.text
    assert int(state.step) == 4
    assert os.path.isdir(run / "checkpoints" / "4.damaged")      # kept as evidence
    rows = [json.loads(r) for r in open(run / "metrics.jsonl")]
    assert [r["step"] for r in rows] == [1, 2, 3, 4]            # steps 3, 4 re-done once
    code, out, _ = run_cli("verify", str(run))
    assert code == 0, out


def _widen_model(monkeypatch):
    monkeypatch.setattr(train_helpers, "HIDDEN", 48)
    return toy_config(total_steps=6)


CHANGE_CASES = [
    # (id, new config (monkeypatch -> cfg), exception, phrase)
    ("changed-learning-rate", lambda mp: toy_config(total_steps=6).__class__(
        loop=toy_config(total_steps=6).loop,
        optim=train_helpers.OptimConfig(base_lr=0.5, warmup_steps=2, wpe=0.1)),
     ValueError, "optim.base_lr: 0.05 -> 0.5"),
    ("changed-batch-size", lambda mp: toy_config(total_steps=6, global_batch=16), ValueError,
     "--allow-config-change"),
    ("changed-model-shape", _widen_model, ValueError, "written for a different model"),
    ("ema-added", lambda mp: toy_config(total_steps=6, ema_decay=0.9), ValueError,
     "ema_params/Dense_0/bias (32,) is not in checkpoint step 4"),
]


@pytest.mark.parametrize("make_cfg, error, phrase", [c[1:] for c in CHANGE_CASES],
                         ids=[c[0] for c in CHANGE_CASES])
def test_resume_with_another_config_is_refused(run, monkeypatch, make_cfg, error, phrase):
    cfg = make_cfg(monkeypatch)
    before = (run / "metrics.jsonl").read_text()
    with pytest.raises(error, match=phrase.replace("(", r"\(").replace(")", r"\)")
                       .replace(".", r"\.")):
        train_toy(run, cfg)
    assert (run / "metrics.jsonl").read_text() == before


@LAYOUT_DEPENDENT
def test_overrides_are_recorded_in_the_next_manifest(run):
    _flip_state(run)
    cfg = toy_config(total_steps=6, log_every=2)
    train_toy(run, cfg, allow_tampered=True, allow_config_change=True)
    with Checkpointer(run / "checkpoints", read_only=True) as ck:
        overrides = ck.manifest(6)["overrides"]
        assert ck.manifest(6)["parent"] == manifest_hash(ck.manifest(4))
    kinds = sorted(k for o in overrides for k in o if k.startswith("allow"))
    assert kinds == ["allow_config_change", "allow_tampered"], overrides
    assert "loop.log_every: 1 -> 2" in json.dumps(overrides)


# --------------------------------------------------------------------------- work dirs
def _under_a_file(tmp_path):
    (tmp_path / "a_file").write_text("x")
    return tmp_path / "a_file" / "run"


def _locked(tmp_path):
    lock = WorkdirLock(tmp_path / "run").__enter__()
    _locked.held = lock   # released by the test
    return tmp_path / "run"


WORKDIR_CASES = [
    ("workdir-not-writable", _under_a_file, ValueError, "cannot be written"),
    ("workdir-in-use", _locked, WorkdirLockedError, f"is in use by pid {os.getpid()}"),
]


@pytest.mark.parametrize("make, error, phrase", [c[1:] for c in WORKDIR_CASES],
                         ids=[c[0] for c in WORKDIR_CASES])
def test_unusable_workdir(tmp_path, make, error, phrase):
    workdir = make(tmp_path)
    try:
        with pytest.raises(error, match=phrase):
            train_toy(workdir)
    finally:
        if getattr(_locked, "held", None) is not None:
            _locked.held.__exit__()
            _locked.held = None


def test_stale_lock_and_zero_byte_config_are_taken_over(tmp_path, caplog):
    workdir = tmp_path / "run"
    workdir.mkdir()
    (workdir / "lock.json").write_text(json.dumps({"host": "gone", "pid": 999999,
                                                   "start": "2020-01-01T00:00:00+00:00"}))
    (workdir / "config.json").write_text("")       # a full disk in an earlier version
    with caplog.at_level(logging.WARNING):
        train_toy(workdir, toy_config())
    assert "stale lock of pid 999999 on host gone" in caplog.text
    assert json.loads((workdir / "config.json").read_text())["loop"]["total_steps"] == 4
    assert not (workdir / "lock.json").exists()


def test_a_second_trainer_exits_at_once_and_the_first_is_untouched(tmp_path):
    """The first trainer (SIGSTOPped while the second runs, so nothing of its own moves) keeps
    its checkpoints and metrics.jsonl byte for byte; the second exits 2 naming it."""
    workdir = tmp_path / "run"
    root = os.path.dirname(TESTS)
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "PYTHONPATH": root,
           "XLA_FLAGS": train_helpers.FAST_COMPILE}
    first = subprocess.Popen([sys.executable, os.path.join(TESTS, "train", "train_helpers.py"),
                              str(workdir), "30", "0.1"], env=env, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 240
        while not (workdir / "checkpoints" / "10").is_dir():
            assert first.poll() is None and time.time() < deadline, first.communicate()[1][-3000:]
            time.sleep(0.05)
        first.send_signal(signal.SIGSTOP)
        snapshot = _snapshot(workdir)
        t = time.time()
        second = subprocess.run(
            [sys.executable, "-m", "var_jax.cli", "train", "--config",
             os.path.join(root, "experiments", "tiny_cpu.py"), "--workdir", str(workdir)],
            env=env, capture_output=True, text=True, timeout=120)
        seconds = time.time() - t
        assert _snapshot(workdir) == snapshot
        first.send_signal(signal.SIGCONT)
        assert second.returncode == 2, second.stderr[-3000:]
        assert f"is in use by pid {first.pid}" in second.stderr, second.stderr[-2000:]
        assert seconds < 60, seconds
        _, err = first.communicate(timeout=300)
        assert first.returncode == 0, err[-3000:]
    finally:
        if first.poll() is None:
            first.kill()
    rows = [json.loads(r) for r in open(workdir / "metrics.jsonl")]
    assert [r["step"] for r in rows] == list(range(1, 31))
    ok, out = run_cli("verify", str(workdir))[:2]
    assert ok == 0, out


def _snapshot(workdir) -> dict:
    out = {}
    for root, _, files in os.walk(workdir):
        for f in files:
            path = os.path.join(root, f)
            with open(path, "rb") as fh:
                out[os.path.relpath(path, workdir)] = fh.read()
    return out


# ------------------------------------------------------------------ converted weights dirs
CFG = VARConfig(depth=2, embed_dim=128, num_heads=2, num_classes=10, patch_nums=(1, 2))


@pytest.fixture
def weights(tmp_path):
    return save_converted(tmp_path / "w", CFG, random_params())


def _flip_weights(path):
    flip_byte(largest_file(os.path.join(path, "params")))


def _edit_config(path):
    p = os.path.join(path, "config.json")
    data = json.load(open(p))
    data["norm_eps"] = 1e-3
    open(p, "w").write(json.dumps(data))


def _drop_weights_manifest(path):
    os.unlink(os.path.join(path, "manifest.json"))


WEIGHTS_CASES = [
    ("byte-flip-in-params", _flip_weights, "array blocks_0/kernel has sha256"),
    ("edited-config-norm_eps", _edit_config, "config.json has sha256"),
    ("missing-manifest", _drop_weights_manifest, "manifest.json is missing"),
]


@pytest.mark.parametrize("spoil, phrase", _cases(WEIGHTS_CASES))
def test_tampered_weights_are_refused_and_reported(weights, spoil, phrase):
    spoil(weights)
    with pytest.raises(TamperedError, match=phrase):
        load_converted(weights)
    cfg, _ = load_converted(weights, allow_tampered=True)       # the explicit override
    assert isinstance(cfg, VARConfig)
    code, out, _ = run_cli("verify", weights)
    assert code == 1 and "TAMPERED" in out and phrase in out


def test_weights_round_trip_and_partial_leftovers(tmp_path):
    out = save_converted(tmp_path / "w", CFG, random_params())
    cfg, params = load_converted(out)
    np.testing.assert_array_equal(params["blocks_0"]["kernel"],
                                  random_params()["blocks_0"]["kernel"])
    code, text, _ = run_cli("verify", out)
    assert code == 0 and "manifest sha256" in text
    os.makedirs(tmp_path / ".w2.partial" / "params")           # a crashed earlier attempt
    save_converted(tmp_path / "w2", CFG, random_params())
    assert not os.path.exists(tmp_path / ".w2.partial")


SAVE_CASES = [
    ("into-a-non-empty-dir", lambda p: (p.mkdir(), (p / "x").write_text("x")) and p,
     FileExistsError, "is not empty"),
    ("into-an-existing-weights-dir", lambda p: save_converted(p, CFG, random_params()) and p,
     FileExistsError, "already holds converted weights"),
    ("parent-missing", lambda p: p / "no" / "such", ValueError, "does not exist"),
    ("onto-a-file", lambda p: (p.write_text("x"), p)[1], FileExistsError, "is a file"),
]


@pytest.mark.parametrize("make, error, phrase", [c[1:] for c in SAVE_CASES],
                         ids=[c[0] for c in SAVE_CASES])
def test_bad_weights_destination(tmp_path, make, error, phrase):
    target = make(tmp_path / "w")
    with pytest.raises(error, match=phrase):
        save_converted(target, CFG, random_params())


# ------------------------------------------------------------------------ var-jax verify
def _break_chain(run):
    _edit_json(_step(run) / "manifest" / "metadata", lambda m: m.update(parent="0" * 64))


VERIFY_CASES = [
    # (id, spoil run, argv after the run path, exit code, phrase of stdout + stderr)
    ("flipped-checkpoint", _flip_state, [], 1, "TAMPERED step 4"),
    ("broken-chain", _break_chain, [], 1, "BROKEN CHAIN at step 4"),
    ("missing-METADATA", _drop("state/_METADATA"), [], 1, "DAMAGED step 4"),
    ("replay-without-pair", lambda run: None, ["--replay", "3"], 2,
     "no two kept checkpoints are 3 steps apart"),
    ("replay-custom-task", lambda run: None, ["--replay", "2"], 2, "not a built-in trainer"),
    ("negative-replay", lambda run: None, ["--replay", "-1"], 2, "must be >= 1"),
]


@pytest.mark.parametrize("spoil, argv, code, phrase", _cases(VERIFY_CASES))
def test_verify_reports(run, spoil, argv, code, phrase):
    spoil(run)
    got, out, err = run_cli("verify", str(run), *argv)
    assert got == code and phrase in out + err, (got, out, err)


def test_verify_a_path_that_is_nothing(tmp_path):
    code, _, err = run_cli("verify", str(tmp_path))
    assert code == 2 and "is neither converted weights" in err


def test_verify_one_step_and_the_whole_run(run):
    code, out, _ = run_cli("verify", str(_step(run, 2)))
    assert code == 0 and "ok step 2" in out and "step 4" not in out
    code, out, _ = run_cli("verify", str(run))
    assert code == 0 and "ok step 2" in out and "ok step 4" in out


# ------------------------------------------------------------------------------ replay
class AlteredLossTask(ToyTask):
    """The sabotage: a loss scaled by 1.001, e.g. code changed under a running project."""

    def _loss(self, params, batch, rng):
        loss, aux = super()._loss(params, batch, rng)
        return loss * 1.001, aux


def test_replay_matches_bitwise_and_catches_an_altered_loss(run):
    from var_jax.train.replay import replay

    cfg = toy_config()
    same = replay(str(run), 2, config=cfg, task=ToyTask(cfg), streams=toy_streams())
    assert same.ok and same.tolerance == 0.0 and same.code_difference == []
    assert (same.start, same.end) == (2, 4) and max(same.max_abs_diff.values()) == 0.0
    altered = replay(str(run), 2, config=cfg, task=AlteredLossTask(cfg), streams=toy_streams())
    assert not altered.ok and "params/Dense_0/kernel" in altered.mismatched
    assert "replay MISMATCH" in altered.lines()[0]


def test_replay_reports_changed_code(run):
    from var_jax.train.replay import replay

    _edit_json(_step(run, 2) / "manifest" / "metadata",
               lambda m: m["code"]["files"].update({"var_jax/train/loop.py": "0" * 64}) or
               m["code"].update(fingerprint="f" * 64))
    cfg = toy_config()
    report = replay(str(run), 2, config=cfg, task=ToyTask(cfg), streams=toy_streams())
    assert report.ok and "  changed: var_jax/train/loop.py" in report.code_difference
    assert "code differs:" in report.lines()


def test_builtin_trainer_configs_rebuild_from_a_manifest():
    import dataclasses

    from train_helpers import tiny_var_config
    from var_jax.train.experiment import load_experiment
    from var_jax.train.replay import config_from_manifest

    root = os.path.dirname(TESTS)
    for cfg in (tiny_var_config(), load_experiment(os.path.join(root, "experiments",
                                                                "tokenizer_digits.py"))):
        cls = type(cfg)
        manifest = {"config_class": f"{cls.__module__}.{cls.__qualname__}",
                    "config": json.loads(json.dumps(dataclasses.asdict(cfg)))}
        assert config_from_manifest(manifest) == cfg


def _disk_full(*args, **kwargs):
    raise OSError(28, "No space left on device")


def _convert_on_a_full_disk(tmp_path, monkeypatch):
    from var_jax import atomic
    monkeypatch.setattr(atomic, "write_json", _disk_full)
    with pytest.raises(OSError, match="No space left"):
        save_converted(tmp_path / "w", CFG, random_params())
    monkeypatch.undo()
    assert not os.path.exists(tmp_path / "w")                  # nothing half-written
    save_converted(tmp_path / "w", CFG, random_params())        # and it converts again
    return load_converted(tmp_path / "w")[0] == CFG


def _train_on_a_full_disk(tmp_path, monkeypatch):
    from var_jax import atomic
    workdir = tmp_path / "run"                                   # the finished toy run
    before = (workdir / "config.json").read_bytes()
    real = atomic.write_bytes

    def full(path, data):
        if str(path).endswith("config.json"):
            _disk_full()
        real(path, data)
    monkeypatch.setattr(atomic, "write_bytes", full)
    with pytest.raises(OSError, match="No space left"):
        train_toy(workdir, toy_config(total_steps=4))
    monkeypatch.undo()
    assert (workdir / "config.json").read_bytes() == before    # the old file, whole
    return train_toy(workdir) is not None


def _cut_metrics_line(tmp_path, monkeypatch):
    workdir = tmp_path / "run"                                   # the finished toy run
    shutil.rmtree(workdir / "checkpoints" / "4")
    with open(workdir / "metrics.jsonl", "a") as f:
        f.write('{"step": 5, "lo')                               # a crash mid-append
    train_toy(workdir)
    return [json.loads(r)["step"] for r in open(workdir / "metrics.jsonl")] == [1, 2, 3, 4]


CRASH_CASES = [
    ("convert-on-a-full-disk", _convert_on_a_full_disk),
    ("train-on-a-full-disk", _train_on_a_full_disk),
    ("metrics-line-cut-by-a-crash", _cut_metrics_line),
]


@pytest.mark.parametrize("case", [c[1] for c in CRASH_CASES], ids=[c[0] for c in CRASH_CASES])
def test_a_crash_mid_write_leaves_usable_files(tmp_path, monkeypatch, run, case):
    assert case(tmp_path, monkeypatch)


def _as_var_run(run):
    """The toy run dressed as a transformer run (load_run reads the model config off
    config.json's "var"), so `var-jax export` / --var RUN load its checkpoints."""
    import dataclasses

    from train_helpers import TINY_VAR
    _edit_json(run / "config.json", lambda c: c.update(var=dataclasses.asdict(TINY_VAR)))
    return run


RUN_LOAD_CASES = [
    # (id, spoil, exception or None, phrase)
    ("intact", lambda run: None, None, None),
    ("byte-flip", _flip_state, TamperedError, "checkpoint step 4 of"),
    ("missing-manifest", _drop("manifest"), TamperedError, "manifest"),
]


@pytest.mark.parametrize("spoil, error, phrase", _cases(RUN_LOAD_CASES))
def test_weights_read_from_a_run_are_checked(run, spoil, error, phrase):
    from var_jax.weights.runs import load_run

    spoil(_as_var_run(run))
    if error is None:
        assert load_run(run)[2] == 4
        return
    with pytest.raises(error, match=phrase):
        load_run(run)
    assert load_run(run, allow_tampered=True)[2] == 4
