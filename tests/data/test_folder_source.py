"""Tests of "folder:<path>": class ids, unreadable files skipped and counted, re-preparation."""
import json
import logging
import os
import shutil
import signal
import subprocess
import sys

import numpy as np
import pytest

from image_samples import coloured_image, encode_image
from var_jax.data import class_folder, make_image_stream, prepare
from var_jax.data.class_folder import VarJaxClassFolder, folder_config, list_class_folder
from var_jax.data.sources import dataset_builder, open_records


def _stream(root, data_dir, batch_size, train, seed=0, **kw):
    return make_image_stream(f"folder:{root}", "train", 16, batch_size, seed, train,
                             data_dir=data_dir, process_index=0, process_count=1, **kw)


def _assert_labels_match_colours(batch):
    """Class 0 'a_red' images are red, class 1 'b_blue' images blue (replacements included)."""
    images, labels = batch["image"], batch["label"]
    keep = batch.get("mask", np.ones(len(labels), bool))
    red_wins = images[..., 0].mean(axis=(1, 2)) > images[..., 2].mean(axis=(1, 2))
    np.testing.assert_array_equal(red_wins[keep], labels[keep] == 0)


def test_listing_sorts_classes_and_ignores_non_images(image_folder):
    listing = list_class_folder(image_folder)
    assert listing.class_names == ("a_red", "b_blue")
    names = [rel for rel, _ in listing.files]
    assert len(names) == 12
    assert "a_red/nested/img4.jpg" in names and "b_blue/fake.png" in names
    assert not any("README" in n or ".cache" in n for n in names)
    assert {label for rel, label in listing.files if rel.startswith("b_blue")} == {1}


def test_eval_pass_skips_and_counts_the_two_unreadable_files(image_folder, tmp_path, caplog):
    stream = _stream(image_folder, str(tmp_path), 5, train=False)
    assert stream.num_records == 12 and stream.info["class_names"] == ("a_red", "b_blue")
    with caplog.at_level(logging.WARNING, logger="var_jax.data.images"):
        batches = list(stream)
    assert [int(b["mask"].sum()) for b in batches] == [5, 5, 2]
    assert stream.num_skipped == 2 and stream.get_state()["num_skipped"] == 2
    logged = " ".join(r.getMessage() for r in caplog.records)
    assert "a_red/trunc.jpg" in logged and "b_blue/fake.png" in logged
    for batch in batches:
        assert batch["image"].shape == (5, 16, 16, 3)
        assert -1.0 <= batch["image"].min() and batch["image"].max() <= 1.0
        _assert_labels_match_colours(batch)


def test_training_never_crashes_and_keeps_batches_full(image_folder, tmp_path):
    stream = _stream(image_folder, str(tmp_path), 4, train=True)  # 12 records: 3 per epoch
    for _ in range(9):
        batch = next(stream)
        assert batch["image"].shape == (4, 16, 16, 3)
        _assert_labels_match_colours(batch)
    assert stream.num_skipped == 6  # both bad files, in each of the three epochs


def test_resume_with_unreadable_files_is_bit_exact(image_folder, tmp_path):
    stream = _stream(image_folder, str(tmp_path), 4, train=True, seed=3)
    for _ in range(2):
        next(stream)
    state = json.loads(json.dumps(stream.get_state()))
    expected = [next(stream) for _ in range(4)]
    restored = _stream(image_folder, str(tmp_path), 4, train=True, seed=3, prefetch=0,
                       num_workers=1)
    restored.set_state(state)
    for want in expected:
        got = next(restored)
        np.testing.assert_array_equal(want["image"], got["image"])
        np.testing.assert_array_equal(want["label"], got["label"])
    assert restored.num_skipped == stream.num_skipped


def test_random_crops_follow_the_rng(image_folder, tmp_path):
    records = open_records(f"folder:{image_folder}", "train", 16, data_dir=str(tmp_path))
    index = next(i for i in range(records.num_records)
                 if records.describe(i).endswith("(a_red/img0.jpg)"))  # 40x60: 16 from 18x27
    crop = lambda key: records.load(index, np.random.default_rng(key))[0]  # noqa: E731
    crops = [crop(key) for key in range(6)]
    assert any(not np.array_equal(crops[0], c) for c in crops[1:])
    np.testing.assert_array_equal(crops[0], crop(0))
    centre = records.load(index, None)[0]
    np.testing.assert_array_equal(centre, records.load(index, None)[0])


def test_changed_folder_is_prepared_again(image_folder, tmp_path):
    root = tmp_path / "copy"
    shutil.copytree(image_folder, root)
    data_dir = str(tmp_path / "tfds")
    assert _stream(root, data_dir, 2, train=False).num_records == 12
    extra = coloured_image(np.random.default_rng(5), 30, 30, 2)
    (root / "b_blue" / "new.jpg").write_bytes(encode_image(extra))
    assert _stream(root, data_dir, 2, train=False).num_records == 13


def test_split_other_than_train_is_refused(image_folder, tmp_path):
    with pytest.raises(ValueError, match="one split, 'train'"):
        make_image_stream(f"folder:{image_folder}", "validation", 16, 2, 0, False,
                          data_dir=str(tmp_path), process_index=0, process_count=1)
    half = make_image_stream(f"folder:{image_folder}", "train[:50%]", 16, 2, 0, False,
                             data_dir=str(tmp_path), process_index=0, process_count=1)
    assert half.num_records == 6


def test_dataset_prepared_as_tfrecord_gets_a_clear_error(image_folder, tmp_path):
    builder = VarJaxClassFolder(config=folder_config(list_class_folder(image_folder)),
                                data_dir=str(tmp_path), file_format="tfrecord")
    builder.download_and_prepare()
    with pytest.raises(ValueError, match="convert_format"):
        _stream(image_folder, str(tmp_path), 2, train=False)


@pytest.mark.parametrize("layout,match", [("missing", "not a directory"),
                                          ("flat", "no class sub-folders"),
                                          ("empty", "no images")])
def test_bad_folders_raise_value_errors(tmp_path, layout, match):
    root = tmp_path / "root"
    if layout == "flat":
        root.mkdir()
        (root / "a.jpg").write_bytes(b"x")
    if layout == "empty":
        (root / "cls").mkdir(parents=True)
        (root / "cls" / "notes.txt").write_text("x")
    with pytest.raises(ValueError, match=match):
        list_class_folder(str(root))


def test_multi_host_stream_refuses_to_prepare(image_folder, tmp_path):
    with pytest.raises(ValueError, match="not prepared"):
        make_image_stream(f"folder:{image_folder}", "train", 16, 2, 0, True,
                          data_dir=str(tmp_path), process_index=0, process_count=2)


def _files(folder):
    return {name: (folder / name).read_bytes() for name in sorted(os.listdir(folder))}


def test_interrupted_preparation_redoes_only_the_unfinished_shards(image_folder, tmp_path,
                                                                    monkeypatch):
    """12 images in shards of 3, stopped at the 8th image (inside shard 2): the restart reads
    images 7..12 only, and the prepared files are those of an uninterrupted preparation."""
    monkeypatch.setattr(class_folder, "SHARD_IMAGES", 3)
    source = f"folder:{image_folder}"
    whole = prepare(source, str(tmp_path / "whole")).data_path
    generate, read, stop_at = VarJaxClassFolder._generate_examples, [], [7]

    def interruptible(self, files):
        for key, example in generate(self, files):
            if len(read) == stop_at[0]:
                raise KeyboardInterrupt
            read.append(key)
            yield key, example

    monkeypatch.setattr(VarJaxClassFolder, "_generate_examples", interruptible)
    with pytest.raises(KeyboardInterrupt):
        prepare(source, str(tmp_path / "resumed"))
    resumed = dataset_builder(source, str(tmp_path / "resumed")).data_path
    assert not resumed.exists()
    partial = sorted(os.listdir(f"{resumed}.partial"))
    assert [n.split("array_record")[1] for n in partial] == ["-00000-of-00004", "-00001-of-00004",
                                          "-00002-of-00004.tmp"], partial
    read.clear()
    stop_at[0] = None
    builder = prepare(source, str(tmp_path / "resumed"))
    names = [rel for rel, _ in list_class_folder(image_folder).files]
    assert read == names[6:]  # shards 2 and 3; the half-written shard 2 is written again
    assert builder.is_prepared() and not os.path.exists(f"{resumed}.partial")
    assert _files(resumed) == _files(whole)
    assert _stream(image_folder, str(tmp_path / "resumed"), 12, train=False).num_records == 12


KILLED_AT_THE_8TH_IMAGE = """
import os, signal, sys
from var_jax.data import class_folder, prepare
class_folder.SHARD_IMAGES = 3
generate, count = class_folder.VarJaxClassFolder._generate_examples, [0]
def dying(self, files):
    for item in generate(self, files):
        count[0] += 1
        if count[0] == 8:
            os.kill(os.getpid(), signal.SIGKILL)
        yield item
class_folder.VarJaxClassFolder._generate_examples = dying
prepare("folder:" + sys.argv[1], sys.argv[2])
"""


def test_preparation_killed_inside_a_shard_resumes_from_that_shard(image_folder, tmp_path,
                                                                  monkeypatch):
    killed = subprocess.run([sys.executable, "-c", KILLED_AT_THE_8TH_IMAGE, image_folder,
                             str(tmp_path / "killed")], capture_output=True)
    assert killed.returncode == -signal.SIGKILL, killed.stderr.decode()[-2000:]
    monkeypatch.setattr(class_folder, "SHARD_IMAGES", 3)
    generate, read = VarJaxClassFolder._generate_examples, []

    def counting(self, files):
        for key, example in generate(self, files):
            read.append(key)
            yield key, example

    monkeypatch.setattr(VarJaxClassFolder, "_generate_examples", counting)
    source = f"folder:{image_folder}"
    resumed = prepare(source, str(tmp_path / "killed")).data_path
    assert read == [rel for rel, _ in list_class_folder(image_folder).files][6:]
    whole = prepare(source, str(tmp_path / "whole")).data_path
    # Shards written by two processes hold the same records, but TFDS serializes each
    # tf.train.Example's feature map in a per-process order: compare the decoded records.
    assert _records(source, tmp_path / "killed") == _records(source, tmp_path / "whole")
    metadata = lambda files: {k: v for k, v in files.items() if "array_record" not in k}  # noqa
    assert metadata(_files(resumed)) == metadata(_files(whole))
    assert sorted(_files(resumed)) == sorted(_files(whole))


def _records(source, data_dir):
    records = open_records(source, "train", 16, data_dir=str(data_dir))._source
    return [(r["image"], int(r["label"]), r["file_name"]) for r in map(records.__getitem__,
                                                                      range(len(records)))]
