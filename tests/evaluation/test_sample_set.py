"""The resumable sample set: per-(class, index) keys, batch/host independence, kill + resume."""
import jax
import numpy as np
import pytest

from var_jax.evaluation import sample_set as ss
from var_jax.evaluation.features import Activations

CLASSES = np.arange(5)


def _fake_sample(labels, keys):
    """uint8 4x4 images drawn from each key (and the label): a stand-in for the sampler."""
    noise = jax.vmap(lambda k: jax.random.randint(k, (4, 4, 3), 0, 200))(keys)
    return np.asarray(noise + np.asarray(labels)[:, None, None, None], np.uint8)


def _fake_features(images):
    x = images.reshape(len(images), -1).astype(np.float32)
    return Activations(x[:, :8], x[:, 8:12], x[:, 12:20])


def _set(out_dir, sample_fn=_fake_sample, per_class=7, seed=3):
    classes, index = ss.position_labels(CLASSES, per_class)
    return ss.SampleSet(str(out_dir), classes, index, seed, sample_fn, _fake_features)


def _run(out_dir, chunk, call=3, **kw):
    s = _set(out_dir, **kw)
    s.generate(chunk, call, progress=False)
    feats = ss.assemble(str(out_dir), s.num, True)
    with np.load(out_dir / ss.SAMPLES_FILE) as z:
        return z["arr_0"], feats


def test_classes_interleave_and_keys_depend_on_class_and_index_only():
    classes, index = ss.position_labels([3, 8], 3)
    assert classes.tolist() == [3, 8, 3, 8, 3, 8] and index.tolist() == [0, 0, 1, 1, 2, 2]
    keys = ss.image_keys(0, classes, index)
    manual = jax.random.fold_in(jax.random.fold_in(jax.random.key(0), 8), 2)
    assert (jax.random.key_data(keys[5]) == jax.random.key_data(manual)).all()
    data = {tuple(np.asarray(jax.random.key_data(k)).tolist()) for k in keys}
    assert len(data) == 6, "two (class, index) pairs share a key"


def test_batch_size_does_not_change_the_samples(tmp_path):
    a, fa = _run(tmp_path / "a", chunk=4)
    b, fb = _run(tmp_path / "b", chunk=7)
    assert a.shape == (35, 4, 4, 3) and a.dtype == np.uint8
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(fa["pool"], fb["pool"])
    # image p has class p % 5 (the fake sampler adds the label)
    c, i = ss.position_labels(CLASSES, 7)
    expect = _fake_sample(c[9:10], ss.image_keys(3, c[9:10], i[9:10]))
    np.testing.assert_array_equal(a[9:10], expect)


def test_a_killed_run_resumes_without_gaps_or_duplicates(tmp_path):
    full, feats = _run(tmp_path / "full", chunk=4)
    calls = []

    def dies_on_the_second_chunk(labels, keys):
        calls.append(len(labels))
        if len(calls) == 3:       # the first call of the second chunk
            raise KeyboardInterrupt("killed")
        return _fake_sample(labels, keys)

    with pytest.raises(KeyboardInterrupt):
        _set(tmp_path / "cut", dies_on_the_second_chunk).generate(4, 2, progress=False)
    assert ss.saved_positions(str(tmp_path / "cut")) == set(range(4)) and len(calls) == 3
    with pytest.raises(ValueError, match="holds 4 of 35 samples"):
        ss.assemble(str(tmp_path / "cut"), 35, True)
    resumed, rfeats = _run(tmp_path / "cut", chunk=6, call=2)   # another chunk size on resume
    np.testing.assert_array_equal(resumed, full)
    np.testing.assert_array_equal(rfeats["logits"], feats["logits"])
    assert not list((tmp_path / "cut").rglob("*.tmp")), "a temp file was left behind"


def test_hosts_split_the_positions_and_the_union_is_the_single_host_set(tmp_path):
    full, _ = _run(tmp_path / "one", chunk=5)
    s = _set(tmp_path / "two")
    assert s.generate(5, 3, process_index=1, process_count=2, progress=False) == 17
    assert s.generate(5, 3, process_index=0, process_count=2, progress=False) == 18
    ss.assemble(str(tmp_path / "two"), s.num, True)
    with np.load(tmp_path / "two" / ss.SAMPLES_FILE) as z:
        np.testing.assert_array_equal(z["arr_0"], full)


def test_duplicate_chunk_and_changed_settings_are_refused(tmp_path):
    s = _set(tmp_path)
    s.generate(5, 3, progress=False)
    ss.write_npz(tmp_path / ss.CHUNK_DIR / "000000003.npz", positions=np.array([3, 4]),
                    images=np.zeros((2, 4, 4, 3), np.uint8))
    with pytest.raises(ValueError, match="a duplicate at position 3"):
        ss.assemble(str(tmp_path), s.num, False)
    ss.check_settings(str(tmp_path), {"seed": 3, "cfg": 1.5})
    ss.check_settings(str(tmp_path), {"seed": 3, "cfg": 1.5})
    with pytest.raises(ValueError, match="cfg: 1.5 then, 2.0 now"):
        ss.check_settings(str(tmp_path), {"seed": 3, "cfg": 2.0})
