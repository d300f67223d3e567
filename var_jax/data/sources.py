"""Dataset sources by name ("digits", "imagenet2012", "imagenette", "folder:<path>") over TFDS."""
from __future__ import annotations

import os

import numpy as np

from var_jax.data.augment import preprocess, upscale_digits
from var_jax.data.tf_env import import_tfds, prepare_builder

SOURCE_FORMS = ("digits", "imagenet2012", "imagenette[/<config>]", "folder:<path>")
IMAGENET_TARS = ("ILSVRC2012_img_train.tar", "ILSVRC2012_img_val.tar")   # in manual_dir


def parse_source(source: str) -> tuple[str, str]:
    """("digits", "") | ("tfds", tfds name) | ("folder", path); ValueError for anything else."""
    if not isinstance(source, str):
        raise ValueError(f"data source {source!r} must be a string, one of {SOURCE_FORMS}.")
    if source == "digits":
        return "digits", ""
    if source.startswith("folder:") and len(source) > len("folder:"):
        return "folder", source[len("folder:"):]
    if source == "imagenet2012" or source == "imagenette" or source.startswith("imagenette/"):
        return "tfds", source
    raise ValueError(f"unknown data source {source!r}; use one of {SOURCE_FORMS}.")


def dataset_builder(source: str, data_dir: str | None = None):
    """The TFDS builder behind a source (prepare_builder writes it as array_record files)."""
    kind, arg = parse_source(source)
    if kind == "digits":
        # local (also below): a TFDS builder module; it imports TensorFlow
        from var_jax.data.digits import VarJaxDigits
        return VarJaxDigits(data_dir=data_dir)
    if kind == "folder":
        from var_jax.data.class_folder import class_folder_builder
        return class_folder_builder(arg, data_dir)
    return import_tfds().builder(arg, data_dir=data_dir)


def prepare(source: str, data_dir: str | None = None, manual_dir: str | None = None):
    """Prepares a source's TFDS dataset (array_record) unless already there; returns the builder.

    "imagenet2012" needs `manual_dir` holding IMAGENET_TARS; "imagenette" downloads; "digits"
    and "folder:<path>" read local files. With progress bars; a folder in a local data_dir
    resumes at its first unfinished shard (write_shards), the rest start over. With several hosts,
    run this once (one process) before training, so the hosts do not all prepare a copy.
    """
    builder = dataset_builder(source, data_dir)
    if builder.is_prepared():
        return builder
    if source == "imagenet2012":
        _check_manual_dir(builder, manual_dir)
    if parse_source(source)[0] == "folder" and "://" not in str(builder.data_dir):
        builder.write_shards()
    else:
        prepare_builder(builder, manual_dir)
    return dataset_builder(source, data_dir)   # reads the info just written


def _check_manual_dir(builder, manual_dir: str | None) -> None:
    missing = [t for t in IMAGENET_TARS
               if manual_dir is None or not os.path.isfile(os.path.join(manual_dir, t))]
    state = "lacks" if manual_dir and os.path.isdir(manual_dir) else "does not exist: it lacks"
    where = f"manual_dir {manual_dir!r} {state}" if manual_dir else "no manual_dir holds"
    if missing:
        raise ValueError(
            f"imagenet2012 is not prepared in {builder.data_dir}, and {where} "
            f"{' and '.join(missing)}. Download {' and '.join(IMAGENET_TARS)} from "
            "https://image-net.org/download-images into one folder DIR and pass it: "
            "--set data.manual_dir=DIR (var-jax train), --manual-dir DIR (var-jax evaluate), "
            "manual_dir=DIR (Python).")


class DigitsRecords:
    """Digits of one split upscaled once and held in memory; grey copied to 3 channels; no crop."""

    def __init__(self, split: str, image_size: int, data_dir: str | None):
        # local: var_jax.data.digits is a TFDS builder module (imports TensorFlow)
        from var_jax.data.digits import load_digits_split
        self.name = f"digits/{split}"
        self.image_size = image_size
        raw, self._labels = load_digits_split(split, data_dir)
        self._grey = upscale_digits(raw, image_size)
        self.num_records = len(self._labels)
        self.class_names = tuple(str(d) for d in range(10))

    def load(self, index: int, rng) -> tuple[np.ndarray, int]:
        return np.repeat(self._grey[index][:, :, None], 3, axis=2), int(self._labels[index])

    def describe(self, index: int) -> str:
        return f"{self.name} record {index}"


class EncodedImageRecords:
    """A TFDS split of encoded images read at random; decoded and augmented with PIL.

    Picklable (the TFDS array_record data source is), so Grain workers can read it.
    """

    def __init__(self, builder, split: str, image_size: int, name: str):
        tfds = import_tfds()
        available = tuple(builder.info.splits.keys())
        if split.split("[")[0] not in available:
            raise ValueError(f"{name} has no split {split!r}; available: {available}.")
        try:
            self._source = builder.as_data_source(
                split, decoders={"image": tfds.decode.SkipDecoding()})
        except NotImplementedError as e:
            raise ValueError(
                f"{name} at {builder.data_dir} was prepared without array_record files, which "
                "random access needs. Convert it: `tfds convert_format --dataset_version_dir="
                f"{builder.data_dir} --out_file_format=array_record`, or prepare it again in "
                "another data_dir with var_jax.data.prepare.") from e
        self.name = f"{name}/{split}"
        self.image_size = image_size
        self.num_records = len(self._source)
        self.class_names = tuple(builder.info.features["label"].names)

    def load(self, index: int, rng) -> tuple[np.ndarray, int]:
        """(image, label) of record `index`; raises UnreadableImageError."""
        record = self._source[index]
        return preprocess(record["image"], self.image_size, rng), int(record["label"])

    def describe(self, index: int) -> str:
        file_name = self._source[index].get("file_name", b"")
        if isinstance(file_name, bytes):
            file_name = file_name.decode("utf-8", "replace")
        return f"{self.name} record {index}" + (f" ({file_name})" if file_name else "")


def open_records(source: str, split: str, image_size: int, *, data_dir: str | None = None,
                 manual_dir: str | None = None, allow_prepare: bool = True):
    """The records of a source's split; prepares the TFDS dataset first when allowed.

    Digits are always prepared when missing (a second, from files inside scikit-learn).
    """
    if isinstance(image_size, bool) or not isinstance(image_size, (int, np.integer)) \
            or image_size < 1:
        raise ValueError(f"image_size={image_size!r} must be a positive integer.")
    kind, _ = parse_source(source)
    if kind == "digits":
        return DigitsRecords(split, int(image_size), data_dir)
    builder = dataset_builder(source, data_dir)
    if kind == "folder" and split.split("[")[0] != "train":
        raise ValueError(f"a folder source has one split, 'train' (slices like 'train[:90%]' "
                         f"work); got split={split!r}. Point folder: at another folder for "
                         "another split.")
    if not builder.is_prepared():
        if not allow_prepare:
            raise ValueError(f"{source} is not prepared in {builder.data_dir}; run "
                             f"var_jax.data.prepare({source!r}, data_dir=..., manual_dir=...) "
                             "once, in one process, before reading it from several hosts.")
        builder = prepare(source, data_dir, manual_dir)
    return EncodedImageRecords(builder, split, int(image_size), source)
