"""Tests of pretokenize and the token stream (with a fake deterministic encoder)."""
import itertools
import json
import os

import chex
import numpy as np
import pytest

from var_jax.data import load_split, make_image_stream, make_token_stream, pretokenize

PATCH_NUMS = (1, 2, 4)  # L = 1 + 4 + 16 = 21


def fake_encode(images_BHW3):
    """Per scale pn: mean of each pn x pn cell, quantised to 0..4095 (as VQVAE.encode_indices,
    a list of (B, pn*pn) int32 arrays in row-major token order)."""
    b, h, w, _ = images_BHW3.shape
    grey = images_BHW3.mean(-1)
    out = []
    for pn in PATCH_NUMS:
        cells = grey.reshape(b, pn, h // pn, pn, w // pn).mean((2, 4)).reshape(b, pn * pn)
        out.append(np.clip(np.round((cells + 1) * 2047.5), 0, 4095).astype(np.int32))
    return out


def _eval_stream(digits_dir, split="clf_test", batch_size=64):
    return make_image_stream("digits", split, 16, batch_size, 0, False, data_dir=digits_dir,
                             process_index=0, process_count=1)


@pytest.fixture(scope="module")
def tokens_dir(digits_dir, tmp_path_factory):
    out = str(tmp_path_factory.mktemp("tokens") / "clf_test")
    pretokenize(_eval_stream(digits_dir), fake_encode, out)
    return out


def test_pretokenized_indices_equal_the_encoder_on_the_eval_images(digits_dir, tokens_dir):
    images, labels = load_split("digits", "clf_test", 16, data_dir=digits_dir)
    idx = np.load(os.path.join(tokens_dir, "idx.npy"))
    assert idx.shape == (300, 21) and idx.dtype == np.uint16
    np.testing.assert_array_equal(idx, np.concatenate(fake_encode(images), axis=1))
    np.testing.assert_array_equal(np.load(os.path.join(tokens_dir, "label.npy")), labels)
    with open(os.path.join(tokens_dir, "meta.json")) as f:
        meta = json.load(f)
    assert meta["num_records"] == 300 and meta["seq_len"] == 21
    assert meta["source"] == "digits" and meta["split"] == "clf_test" and meta["image_size"] == 16
    assert not [p for p in os.listdir(os.path.dirname(tokens_dir)) if ".partial" in p]


def test_token_stream_batches_and_eval_pass(tokens_dir):
    batches = list(make_token_stream(tokens_dir, 128, 0, False, 0, 1))
    assert [int(b["mask"].sum()) for b in batches] == [128, 128, 44]
    chex.assert_shape(batches[0]["idx"], (128, 21))
    assert batches[0]["idx"].dtype == np.int32 and batches[0]["label"].dtype == np.int32
    idx = np.load(os.path.join(tokens_dir, "idx.npy"))
    np.testing.assert_array_equal(np.concatenate([b["idx"][b["mask"]] for b in batches]), idx)


def test_token_stream_resume_is_bit_exact_and_hosts_split(tokens_dir):
    stream = make_token_stream(tokens_dir, 32, 5, True, 0, 1)
    list(itertools.islice(stream, 7))  # 9 batches per epoch: the next ones cross into epoch 1
    state = json.loads(json.dumps(stream.get_state()))
    expected = list(itertools.islice(stream, 5))
    restored = make_token_stream(tokens_dir, 32, 5, True, 0, 1)
    restored.set_state(state)
    hosts = [make_token_stream(tokens_dir, 16, 5, True, i, 2) for i in range(2)]
    for h in hosts:
        h.set_state(state)
    for want in expected:
        got = next(restored)
        h0, h1 = next(hosts[0]), next(hosts[1])
        for k in ("idx", "label"):
            np.testing.assert_array_equal(want[k], got[k])
            np.testing.assert_array_equal(want[k], np.concatenate([h0[k], h1[k]]))
        assert set(want) == {"idx", "label"}
    assert restored.get_state()["epoch"] == 1


def test_pretokenize_refuses_train_used_and_existing(digits_dir, tokens_dir, tmp_path):
    train = make_image_stream("digits", "clf_test", 16, 64, 0, True, data_dir=digits_dir,
                              process_index=0, process_count=1)
    with pytest.raises(ValueError, match="eval stream"):
        pretokenize(train, fake_encode, str(tmp_path / "a"))
    used = _eval_stream(digits_dir)
    next(used)
    with pytest.raises(ValueError, match="fresh"):
        pretokenize(used, fake_encode, str(tmp_path / "b"))
    with pytest.raises(ValueError, match="exists"):
        pretokenize(_eval_stream(digits_dir), fake_encode, tokens_dir)


def test_pretokenize_bad_encoder_output_leaves_nothing_behind(digits_dir, tmp_path):
    out = tmp_path / "t"
    with pytest.raises(ValueError, match="index_dtype='int32'"):
        pretokenize(_eval_stream(digits_dir), lambda x: np.full((len(x), 3), 70000), str(out))
    with pytest.raises(ValueError, match="integer indices of shape"):
        pretokenize(_eval_stream(digits_dir), lambda x: np.zeros((len(x), 3), np.float32),
                    str(out))
    assert os.listdir(tmp_path) == []
    meta = pretokenize(_eval_stream(digits_dir), lambda x: np.full((len(x), 3), 70000), str(out),
                       index_dtype="int32")
    assert meta["index_dtype"] == "int32"
    assert next(make_token_stream(str(out), 4, 0, True, 0, 1))["idx"].max() == 70000


def test_token_stream_of_a_non_token_dir_is_a_value_error(tmp_path):
    with pytest.raises(ValueError, match="not a pretokenized dataset"):
        make_token_stream(str(tmp_path), 4, 0, True, 0, 1)


def _views_dir(image_folder, tmp_path, seed, name):
    stream = make_image_stream(f"folder:{image_folder}", "train", 16, 5, seed, False,
                               data_dir=str(tmp_path / "tfds"), process_index=0,
                               process_count=1, views=3)
    assert stream.batches_per_epoch == 9   # 3 passes of 12 records padded to 15
    out = str(tmp_path / name)
    meta = pretokenize(stream, fake_encode, out)
    assert meta["views"] == 3 and meta["num_skipped"] == 6   # 2 unreadable files, per view
    return out


def test_augmented_views_are_seeded_and_training_draws_one_per_epoch(image_folder, tmp_path):
    a = _views_dir(image_folder, tmp_path, 1, "a")
    idx = np.load(os.path.join(a, "idx.npy"))
    assert idx.shape == (12, 3, 21)
    np.testing.assert_array_equal(idx, np.load(os.path.join(_views_dir(
        image_folder, tmp_path, 1, "again"), "idx.npy")))
    assert not np.array_equal(idx, np.load(os.path.join(_views_dir(
        image_folder, tmp_path, 2, "b"), "idx.npy")))
    assert (idx[:, 0] != idx[:, 1]).any(axis=1).sum() >= 6   # random crops differ per view
    labels = np.load(os.path.join(a, "label.npy"))

    stream = make_token_stream(a, 12, 5, True, 0, 1)   # one batch per epoch: every record
    drawn = {r: set() for r in range(12)}
    for _ in range(8):
        batch = next(stream)
        for row, label in zip(batch["idx"], batch["label"]):
            hits = [(r, v) for r in range(12) for v in range(3)
                    if np.array_equal(idx[r, v], row) and labels[r] == label]
            assert hits, "a training row is not one of the stored views"
            for r, v in hits:
                drawn[r].add(v)
    assert sum(len(v) > 1 for v in drawn.values()) >= 6   # views change from epoch to epoch
    evals = np.concatenate([b["idx"][b["mask"]] for b in make_token_stream(a, 5, 0, False, 0, 1)])
    np.testing.assert_array_equal(evals, idx[:, 0])


def test_views_need_an_eval_stream(digits_dir):
    with pytest.raises(ValueError, match="views=2 needs train=False"):
        make_image_stream("digits", "clf_test", 16, 4, 0, True, data_dir=digits_dir,
                          process_index=0, process_count=1, views=2)


def test_interrupted_pretokenize_resumes_after_the_last_recorded_batch(image_folder, tmp_path):
    """9 batches, progress recorded every 2: stopped while encoding batch 6, the restart
    encodes batches 5..9 only and writes the files of an uninterrupted run."""
    def stream():
        return make_image_stream(f"folder:{image_folder}", "train", 16, 5, 4, False,
                                 data_dir=str(tmp_path / "tfds"), process_index=0,
                                 process_count=1, views=3)

    pretokenize(stream(), fake_encode, str(tmp_path / "whole"), shard_batches=2)
    calls, stop_at = [], [5]

    def interruptible(images):
        if len(calls) == stop_at[0]:
            raise KeyboardInterrupt
        calls.append(len(images))
        return fake_encode(images)

    out = str(tmp_path / "resumed")
    with pytest.raises(KeyboardInterrupt):
        pretokenize(stream(), interruptible, out, shard_batches=2)
    with open(os.path.join(f"{out}.partial", "progress.json")) as f:
        assert json.load(f)["batches"] == 4
    calls.clear()
    stop_at[0] = None
    meta = pretokenize(stream(), interruptible, out, shard_batches=2)
    assert len(calls) == 5 and meta["num_skipped"] == 6
    assert sorted(os.listdir(out)) == ["idx.npy", "label.npy", "meta.json"]
    for name in os.listdir(out):
        with open(os.path.join(out, name), "rb") as a, \
                open(os.path.join(tmp_path / "whole", name), "rb") as b:
            assert a.read() == b.read(), name


def test_a_partial_pretokenize_of_other_settings_is_started_over(digits_dir, tokens_dir,
                                                                 tmp_path):
    calls = []

    def stops_at_the_third_batch(images):
        if len(calls) == 2:
            raise KeyboardInterrupt
        calls.append(1)
        return fake_encode(images)

    out = str(tmp_path / "t")
    with pytest.raises(KeyboardInterrupt):
        pretokenize(_eval_stream(digits_dir), stops_at_the_third_batch, out, shard_batches=1)
    calls.clear()
    meta = pretokenize(_eval_stream(digits_dir), lambda x: calls.append(1) or fake_encode(x),
                       out, index_dtype="int32")
    assert len(calls) == 5 and meta["index_dtype"] == "int32"   # 300 records, batches of 64
    np.testing.assert_array_equal(np.load(os.path.join(out, "idx.npy")),
                                  np.load(os.path.join(tokens_dir, "idx.npy")))
