"""`var-jax evaluate` end to end: golden tiny VAR + VAE, random-weight Inception, 30 samples."""
import json

import numpy as np
import pytest

from inception_fixtures import GOLDEN
from var_jax.cli import main
from var_jax.evaluation import sample_set

WEIGHTS = ["--var", str(GOLDEN / "var_tiny_l2norm.pth"), "--vae", str(GOLDEN / "vae.pth"),
           "--patch-nums", "1,2,3,4", "--top-k", "8", "--compile-cache", "", "--no-progress",
           "--per-class", "2", "--device-batch", "4"]


@pytest.fixture(scope="module")
def scoring(tmp_path_factory, random_inception_sd):
    """(--inception, --reference) flags: the random weights and 20 reference images."""
    root = tmp_path_factory.mktemp("scoring")
    np.savez(root / "inception.npz", **random_inception_sd)
    rng = np.random.default_rng(0)
    np.savez(root / "ref.npz", arr_0=rng.integers(0, 256, (10, 64, 64, 3), dtype=np.uint8))
    return ["--inception", str(root / "inception.npz"), "--reference", str(root / "ref.npz"),
            "--protocol", "pytorch"]


def _arr0(out):
    with np.load(out / sample_set.SAMPLES_FILE) as z:
        return z["arr_0"]


@pytest.mark.slow
def test_evaluate_resumes_a_killed_run_scores_it_and_ignores_the_chunk_size(tmp_path, scoring,
                                                                           capsys, monkeypatch):
    # killed after its first chunk (8 images), then resumed: 12 new images, then the scores
    cut = tmp_path / "cut"
    real_save = sample_set.write_npz
    saves = []

    def dies_after_one_chunk(path, **arrays):
        if saves:
            raise KeyboardInterrupt("killed")
        saves.append(path)
        real_save(path, **arrays)

    monkeypatch.setattr(sample_set, "write_npz", dies_after_one_chunk)
    with pytest.raises(KeyboardInterrupt):
        main(["evaluate", "--out", str(cut), "--batch-size", "8"] + scoring + WEIGHTS)
    monkeypatch.undo()
    assert not (cut / sample_set.SAMPLES_FILE).exists()
    assert main(["evaluate", "--out", str(cut), "--batch-size", "8"] + scoring + WEIGHTS) == 0
    assert "(12 new this run)" in capsys.readouterr().out
    imgs = _arr0(cut)
    assert imgs.shape == (20, 64, 64, 3) and imgs.dtype == np.uint8
    scores = json.loads((cut / "scores.json").read_text())
    for k in ("fid", "sfid", "inception_score", "precision", "recall"):
        assert np.isfinite(scores[k]), k
    assert scores["num_samples"] == 20 and scores["settings"]["cfg"] == 1.5
    assert scores["settings"]["top_k"] == 8 and scores["inception_score_splits"] == 10
    assert len(scores["weights_fingerprint"]["var"]) == 64
    assert not scores["weights_fingerprint"]["inception_is_released"]

    # uninterrupted, and with another chunk size (no scoring): the same images, bit for bit
    for batch in ("8", "12"):
        out = tmp_path / f"batch{batch}"
        assert main(["evaluate", "--out", str(out), "--batch-size", batch] + WEIGHTS) == 0
        np.testing.assert_array_equal(_arr0(out), imgs)


def test_changed_flags_on_resume_and_bad_flags_exit_2(tmp_path, capsys):
    out = tmp_path / "run"
    (out).mkdir()
    (out / sample_set.SETTINGS_FILE).write_text(json.dumps({"seed": 1}))
    assert main(["evaluate", "--out", str(out)] + WEIGHTS) == 2
    assert "resume with the same flags or pick a new --out" in capsys.readouterr().err
    assert main(["evaluate", "--out", str(out), "--reference", "x.npz"] + WEIGHTS) == 2
    assert "--reference needs --inception" in capsys.readouterr().err
    assert main(["evaluate", "--out", str(out), "--inception", "i.npz", "--reference",
                 str(tmp_path / "missing.npz")] + WEIGHTS) == 2
    assert "missing.npz': no such file" in capsys.readouterr().err
    assert main(["evaluate", "--out", str(out), "--inception", "i.npz", "--reference",
                 "imagenet"] + WEIGHTS) == 2
    assert "unknown data source 'imagenet'" in capsys.readouterr().err
    assert main(["evaluate", "--out", str(out), "--batch-size", "0"] + WEIGHTS) == 2


def test_help_documents_the_protocol(capsys):
    with pytest.raises(SystemExit):
        main(["evaluate", "--help"])
    text = capsys.readouterr().out
    for phrase in ("fold_in(fold_in(key(--seed), c), i)", "cfg 1.5, top-k 900, top-p 0.96",
                   "(default: 50)", "resuming", "VIRTUAL_imagenet256_labeled.npz"):
        assert phrase in text, phrase


def test_dtype_is_part_of_a_runs_settings(tmp_path, capsys):
    """A float32 run's settings.json is as before --dtype existed; resuming it in bf16 would
    mix samples of two programs, so it is refused."""
    out = tmp_path / "run"
    assert main(["evaluate", "--out", str(out)] + WEIGHTS) == 0
    assert "dtype" not in json.loads((out / sample_set.SETTINGS_FILE).read_text())
    capsys.readouterr()
    assert main(["evaluate", "--out", str(out), "--dtype", "bfloat16"] + WEIGHTS) == 2
    assert "resume with the same flags or pick a new --out" in capsys.readouterr().err
