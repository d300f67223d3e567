"""The imagenet2012 / imagenette code paths through the real TFDS builders, on tiny fake files."""
import io
import logging
import tarfile

import numpy as np
import pytest

from image_samples import coloured_image, encode_image
from var_jax.data import make_image_stream, prepare
from var_jax.data.sources import dataset_builder, parse_source

SYNSETS = ("n01440764", "n01443537")  # ImageNet class ids 0 and 1
VAL_LABELS = ("n01751748", "n09193705", "n02105855", "n04263257")  # of val images 1..4


def _add(tar: tarfile.TarFile, name: str, data: bytes):
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))


@pytest.fixture(scope="module")
def manual_dir(tmp_path_factory):
    """ILSVRC2012_img_{train,val}.tar as ImageNet ships them (train: a tar of per-synset tars),
    3 JPEGs per synset (class 0 red, class 1 blue) plus one truncated JPEG, 4 val JPEGs."""
    root = tmp_path_factory.mktemp("imagenet_manual")
    rng = np.random.default_rng(0)
    with tarfile.open(root / "ILSVRC2012_img_train.tar", "w") as outer:
        for label, synset in enumerate(SYNSETS):
            inner = io.BytesIO()
            with tarfile.open(fileobj=inner, mode="w") as tar:
                for k in range(3):
                    pixels = coloured_image(rng, 30 + 7 * k, 40, 2 * label)
                    _add(tar, f"{synset}_{k}.JPEG", encode_image(pixels))
                if label == 1:
                    _add(tar, f"{synset}_9.JPEG", encode_image(pixels)[:150])
            _add(outer, f"{synset}.tar", inner.getvalue())
    with tarfile.open(root / "ILSVRC2012_img_val.tar", "w") as tar:
        for k in range(1, 5):
            _add(tar, f"ILSVRC2012_val_{k:08d}.JPEG", encode_image(coloured_image(rng, 24, 32, 1)))
    return str(root)


@pytest.fixture(scope="module")
def data_dir(manual_dir, tmp_path_factory):
    data_dir = str(tmp_path_factory.mktemp("tfds_imagenet"))
    prepare("imagenet2012", data_dir, manual_dir)
    return data_dir


def test_train_split_reads_through_the_tfds_builder(data_dir, caplog):
    stream = make_image_stream("imagenet2012", "train", 16, 7, 0, False, data_dir=data_dir,
                               process_index=0, process_count=1)
    assert stream.num_records == 7 and stream.info["num_classes"] == 1000
    assert stream.info["class_names"][:2] == SYNSETS
    with caplog.at_level(logging.WARNING, logger="var_jax.data.images"):
        batch = next(stream)
    assert batch["image"].shape == (7, 16, 16, 3) and batch["mask"].all()
    assert stream.num_skipped == 1
    assert "n01443537_9.JPEG" in " ".join(r.getMessage() for r in caplog.records)
    red_wins = batch["image"][..., 0].mean(axis=(1, 2)) > batch["image"][..., 2].mean(axis=(1, 2))
    np.testing.assert_array_equal(red_wins, batch["label"] == 0)
    assert set(batch["label"].tolist()) == {0, 1}


def test_validation_labels_come_from_the_tfds_label_file(data_dir):
    stream = make_image_stream("imagenet2012", "validation", 16, 4, 0, False,
                               data_dir=data_dir, process_index=0, process_count=1)
    names = stream.info["class_names"]
    batch = next(stream)
    assert sorted(names[i] for i in batch["label"]) == sorted(VAL_LABELS)


def test_training_stream_on_imagenet_shapes(data_dir):
    stream = make_image_stream("imagenet2012", "train", 16, 3, 1, True, data_dir=data_dir,
                               process_index=0, process_count=1)
    for _ in range(5):  # 7 records, 2 batches per epoch: crosses epochs
        batch = next(stream)
        assert batch["image"].shape == (3, 16, 16, 3) and set(batch) == {"image", "label"}


@pytest.mark.parametrize("given", ["none", "missing", "empty", "train_only"])
def test_missing_manual_download_names_the_files_and_the_flag(tmp_path, given):
    manual = {"none": None, "missing": str(tmp_path / "nowhere")}.get(given, str(tmp_path))
    if given == "train_only":
        (tmp_path / "ILSVRC2012_img_train.tar").write_bytes(b"")
    with pytest.raises(ValueError) as error:
        prepare("imagenet2012", str(tmp_path / "d"), manual)
    message = str(error.value)
    lacks = message.split("lacks ")[1].split(". Download")[0] if given != "none" else message
    assert ("ILSVRC2012_img_train.tar" in lacks) == (given != "train_only")
    assert "ILSVRC2012_img_val.tar" in lacks
    assert "Download ILSVRC2012_img_train.tar and ILSVRC2012_img_val.tar" in message
    assert "--set data.manual_dir=DIR" in message and "--manual-dir DIR" in message
    assert ("does not exist" in message) == (given == "missing")


def test_imagenette_resolves_offline_and_multi_host_refuses_to_download(tmp_path):
    assert parse_source("imagenette/160px-v2") == ("tfds", "imagenette/160px-v2")
    builder = dataset_builder("imagenette/160px-v2", str(tmp_path))
    assert not builder.is_prepared()
    assert builder.info.features["label"].num_classes == 10
    with pytest.raises(ValueError, match="not prepared"):
        make_image_stream("imagenette", "train", 16, 2, 0, True, data_dir=str(tmp_path),
                          process_index=1, process_count=2)


@pytest.mark.parametrize("source", ["imagenet", "folder:", "tfds:mnist", "Digits"])
def test_unknown_source_forms(source):
    with pytest.raises(ValueError, match="unknown data source"):
        parse_source(source)
