"""Tests of the image stream on digits: determinism, resume, host split, eval pass, errors."""
import itertools
import json

import chex
import numpy as np
import pytest

from var_jax.data import make_image_stream
from var_jax.data.pipeline import BatchStream, Layout


def _stream(digits_dir, batch_size=16, seed=0, train=True, index=0, count=1, split="train",
            **kw):
    return make_image_stream("digits", split, 16, batch_size, seed, train, data_dir=digits_dir,
                             process_index=index, process_count=count, **kw)


def _take(stream, n):
    return list(itertools.islice(stream, n))


def _assert_same(batches_a, batches_b):
    assert len(batches_a) == len(batches_b)
    for a, b in zip(batches_a, batches_b):
        assert a.keys() == b.keys()
        for k in a:
            np.testing.assert_array_equal(a[k], b[k])


def test_batches_have_the_documented_shapes(digits_dir):
    batch = next(_stream(digits_dir, batch_size=8))
    assert set(batch) == {"image", "label"}
    chex.assert_shape(batch["image"], (8, 16, 16, 3))
    chex.assert_shape(batch["label"], (8,))
    assert batch["image"].dtype == np.float32 and batch["label"].dtype == np.int32
    assert -1.0 <= batch["image"].min() and batch["image"].max() <= 1.0


def test_same_seed_same_batches_other_seed_other_order(digits_dir):
    a = _take(_stream(digits_dir, seed=3), 4)
    b = _take(_stream(digits_dir, seed=3, prefetch=0), 4)
    c = _take(_stream(digits_dir, seed=4), 4)
    _assert_same(a, b)
    assert not all(np.array_equal(x["label"], y["label"]) for x, y in zip(a, c))


def test_epochs_are_reshuffled_and_drop_the_remainder(digits_dir):
    stream = _stream(digits_dir, batch_size=256)  # 1197 records: 4 batches per epoch
    assert stream.batches_per_epoch == 4
    _take(stream, 4)
    assert stream.get_state()["epoch"] == 1 and stream.get_state()["position"] == 0
    _take(stream, 1)
    assert stream.get_state()["epoch"] == 1 and stream.get_state()["position"] == 256
    order = Layout(1197, 256, 0, True).positions()
    epoch0, epoch1 = [order[i] for i in range(1024)], [order[i] for i in range(1024, 2048)]
    assert len(set(epoch0)) == len(set(epoch1)) == 1024 and epoch0 != epoch1


@pytest.mark.parametrize("n,m", [(3, 4), (0, 2), (5, 3)])
def test_resume_is_bit_exact_across_epoch_boundaries(digits_dir, n, m):
    stream = _stream(digits_dir, batch_size=256, seed=7)
    _take(stream, n)
    state = json.loads(json.dumps(stream.get_state()))
    expected = _take(stream, m)
    restored = _stream(digits_dir, batch_size=256, seed=7, prefetch=0)
    restored.set_state(state)
    _assert_same(expected, _take(restored, m))
    assert restored.get_state() == stream.get_state()


def test_worker_processes_give_the_same_batches_and_resume(digits_dir):
    expected = _take(_stream(digits_dir, batch_size=256, seed=4, prefetch=0), 6)
    with _stream(digits_dir, batch_size=256, seed=4, num_workers=2) as workers:
        _assert_same(expected[:4], _take(workers, 4))   # crosses into epoch 1
        state = workers.get_state()
    with _stream(digits_dir, batch_size=256, seed=4, num_workers=1) as resumed:
        resumed.set_state(state)
        _assert_same(expected[4:], _take(resumed, 2))


def test_two_hosts_split_each_global_batch(digits_dir):
    single = _take(_stream(digits_dir, batch_size=16, seed=1), 5)
    host0 = _take(_stream(digits_dir, batch_size=8, seed=1, index=0, count=2), 5)
    host1 = _take(_stream(digits_dir, batch_size=8, seed=1, index=1, count=2), 5)
    for s, h0, h1 in zip(single, host0, host1):
        for k in s:
            np.testing.assert_array_equal(s[k], np.concatenate([h0[k], h1[k]]))


def test_resume_on_another_host_count_with_the_same_global_batch(digits_dir):
    stream = _stream(digits_dir, batch_size=16, seed=2)
    _take(stream, 3)
    state = stream.get_state()
    expected = _take(stream, 2)
    hosts = [_stream(digits_dir, batch_size=8, seed=2, index=i, count=2) for i in range(2)]
    for h in hosts:
        h.set_state(state)
    got = [_take(h, 2) for h in hosts]
    for t in range(2):
        np.testing.assert_array_equal(
            expected[t]["image"], np.concatenate([got[0][t]["image"], got[1][t]["image"]]))


@pytest.mark.parametrize("train", [True, False])
def test_hosts_see_disjoint_examples_covering_the_epoch(train):
    n, b, hosts = 103, 4, 3
    seen = []
    for i in range(hosts):
        layout = Layout(n, b, 5, train, i, hosts)
        examples = layout.positions().map(lambda r: {"record": r, "mask": r < n})
        stream = BatchStream(layout, examples)
        batches = _take(stream, layout.batches_per_epoch)
        seen.append([int(r) for x in batches for r in x["record"][x["mask"]]])
        assert stream.get_state()["epoch"] == int(train)
    flat = sum(seen, [])
    assert len(flat) == len(set(flat))  # disjoint across hosts
    usable = (n // (b * hosts)) * b * hosts if train else n
    assert len(flat) == usable and set(flat) <= set(range(n))


def test_eval_is_one_padded_pass_in_record_order(digits_dir):
    stream = _stream(digits_dir, batch_size=128, train=False, split="clf_test", seed=9)
    batches = list(stream)
    assert len(batches) == stream.batches_per_epoch == 3  # 300 = 128 + 128 + 44
    assert [int(b["mask"].sum()) for b in batches] == [128, 128, 44]
    assert not batches[-1]["image"][44:].any() and not batches[-1]["label"][44:].any()
    other_seed = list(_stream(digits_dir, batch_size=128, train=False, split="clf_test", seed=1))
    _assert_same(batches, other_seed)
    with pytest.raises(StopIteration):
        next(stream)
    finished = _stream(digits_dir, batch_size=128, train=False, split="clf_test", seed=9)
    finished.set_state(stream.get_state())
    assert list(finished) == []


def test_eval_hosts_have_the_same_number_of_batches(digits_dir):
    counts = [len(list(_stream(digits_dir, batch_size=64, train=False, split="clf_test",
                               index=i, count=2))) for i in range(2)]
    assert counts == [3, 3]  # 300 records, global batch 128


def test_state_of_another_seed_or_global_batch_is_refused(digits_dir):
    state = _stream(digits_dir, seed=1).get_state()
    with pytest.raises(ValueError, match="seed=1"):
        _stream(digits_dir, seed=2).set_state(state)
    with pytest.raises(ValueError, match="global_batch=16 but this stream has global_batch=32"):
        _stream(digits_dir, seed=1, batch_size=16, count=2).set_state(state)


@pytest.mark.parametrize("kwargs,match", [
    ({"batch_size": 700, "count": 2}, "exceeds the 1197 examples"),
    ({"index": 2, "count": 2}, "process_index=2"),
    ({"seed": -1}, "seed=-1"),
    ({"split": "validation"}, "no split 'validation'"),
])
def test_bad_arguments_raise_value_errors(digits_dir, kwargs, match):
    with pytest.raises(ValueError, match=match):
        _stream(digits_dir, **kwargs)


def test_unknown_source_is_a_value_error():
    with pytest.raises(ValueError, match="unknown data source 'mnist'"):
        make_image_stream("mnist", "train", 16, 4, 0, True, process_index=0, process_count=1)
