"""A folder of class sub-folders of images as a TFDS dataset (encoded bytes, decoded when read)."""
from __future__ import annotations

import dataclasses
import hashlib
import os
import re

import numpy as np
from array_record.python.array_record_module import ArrayRecordWriter
from etils import epath
from tqdm import tqdm

from var_jax import atomic
from var_jax.data.tf_env import import_tfds

tfds = import_tfds()

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm")
SHARD_IMAGES = 1024   # images per array_record shard: what an interrupted preparation redoes


@dataclasses.dataclass(frozen=True)
class FolderListing:
    """What a class folder holds: sorted class names and (relative path, label) per image."""
    root: str
    class_names: tuple[str, ...] = dataclasses.field(repr=False)
    files: tuple[tuple[str, int], ...] = dataclasses.field(repr=False)

    def fingerprint(self) -> str:
        """Hash of the root, the file names and their sizes: a changed folder is re-prepared."""
        h = hashlib.sha256(self.root.encode())
        for rel, label in self.files:
            size = os.path.getsize(os.path.join(self.root, rel))
            h.update(f"\0{rel}\0{label}\0{size}".encode())
        return h.hexdigest()[:16]


def list_class_folder(root: str) -> FolderListing:
    """Lists `root/<class>/<image>`; class ids are the sorted sub-folder names.

    Files are matched by extension only (decoding happens when read, so a corrupt file is
    skipped then, not here); hidden files and folders are ignored.
    """
    root = os.path.abspath(os.path.expanduser(root))
    if not os.path.isdir(root):
        raise ValueError(f"folder source {root!r} is not a directory; give 'folder:<path>' with "
                         "one sub-folder of images per class.")
    class_names = tuple(sorted(e.name for e in os.scandir(root)
                               if e.is_dir() and not e.name.startswith(".")))
    if not class_names:
        raise ValueError(f"{root!r} has no class sub-folders; expected {root}/<class>/<image>.")
    files = []
    for label, name in enumerate(class_names):
        for dirpath, dirnames, filenames in os.walk(os.path.join(root, name)):
            dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
            for f in sorted(filenames):
                if not f.startswith(".") and f.lower().endswith(IMAGE_EXTENSIONS):
                    files.append((os.path.relpath(os.path.join(dirpath, f), root), label))
    if not files:
        raise ValueError(f"{root!r} has class sub-folders {list(class_names)[:5]} but no images "
                         f"with extensions {IMAGE_EXTENSIONS}.")
    return FolderListing(root, class_names, tuple(files))


@dataclasses.dataclass
class ClassFolderConfig(tfds.core.BuilderConfig):
    """One prepared copy per folder content; the name carries the folder's fingerprint."""
    listing: FolderListing | None = dataclasses.field(default=None, repr=False)


def folder_config(listing: FolderListing) -> ClassFolderConfig:
    slug = re.sub(r"[^a-z0-9]+", "_", os.path.basename(listing.root).lower()).strip("_")
    return ClassFolderConfig(name=f"{slug or 'root'}_{listing.fingerprint()}", listing=listing,
                             description=f"class folder {listing.root}")


class VarJaxClassFolder(tfds.core.GeneratorBasedBuilder):
    """Images of `root/<class>/*` stored as their encoded bytes in one split, "train"."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "Encoded bytes, label, relative file name."}

    def _info(self):
        listing = self.builder_config.listing
        return tfds.core.DatasetInfo(
            builder=self,
            description=f"Images of the class folder {listing.root}.",
            features=tfds.features.FeaturesDict({
                "image": tfds.features.Tensor(shape=(), dtype=np.object_),  # encoded bytes
                "label": tfds.features.ClassLabel(names=list(listing.class_names)),
                "file_name": tfds.features.Text(),  # path relative to the root
            }),
            supervised_keys=("image", "label"),
        )

    def _split_generators(self, dl_manager):
        return {"train": self._generate_examples(self.builder_config.listing.files)}

    def _generate_examples(self, files):
        for rel, label in files:
            with open(os.path.join(self.builder_config.listing.root, rel), "rb") as f:
                data = f.read()
            yield rel, {"image": data, "label": label, "file_name": rel}

    def write_shards(self) -> None:
        """Prepares the dataset as TFDS reads it (array_record), resumably: TFDS's own
        download_and_prepare restarts from scratch, so this writes the shards, in listing order,
        into `<version dir>.partial`, each to a temporary name, fsynced, renamed (a restart skips
        the shards under their final names); the metadata last, then the directory's rename."""
        listing, features = self.builder_config.listing, self.info.features
        work = epath.Path(f"{self.data_dir}.partial")
        work.mkdir(parents=True, exist_ok=True)
        template = tfds.core.ShardedFileTemplate(data_dir=work, dataset_name=self.name,
                                                 split="train", filetype_suffix="array_record")
        chunks = [listing.files[i:i + SHARD_IMAGES]
                  for i in range(0, len(listing.files), SHARD_IMAGES)]
        paths = template.sharded_filepaths(len(chunks))
        for chunk, path in zip(tqdm(chunks, desc=f"preparing {listing.root}", unit="shard"),
                               paths):
            if not path.exists():
                writer = ArrayRecordWriter(f"{path}.tmp", "group_size:1")
                for _, example in self._generate_examples(chunk):
                    writer.write(features.serialize_example(example))
                writer.close()
                with open(f"{path}.tmp", "rb+") as f:
                    os.fsync(f.fileno())
                os.replace(f"{path}.tmp", path)
        self.info.set_file_format("array_record", override=True)
        self.info.set_splits(tfds.core.SplitDict([tfds.core.SplitInfo(
            name="train", shard_lengths=[len(c) for c in chunks],
            num_bytes=sum(os.path.getsize(p) for p in paths), filename_template=template)]))
        self.info.write_to_directory(work)
        os.replace(work, os.fspath(self.data_dir))
        atomic.fsync_dir(os.path.dirname(os.fspath(self.data_dir)))


def class_folder_builder(root: str, data_dir: str | None = None) -> VarJaxClassFolder:
    """The (maybe not yet prepared) TFDS builder of the folder's current content."""
    listing = list_class_folder(root)
    return VarJaxClassFolder(config=folder_config(listing), data_dir=data_dir)
