"""tensorflow-datasets without TensorFlow on the accelerators (JAX owns them)."""
import importlib.util
import os
import sys


def hide_accelerators_from_tf() -> None:
    """Imports TensorFlow with every GPU hidden from it, so it never takes memory JAX needs.

    Called before a dataset is prepared (TFDS builders may import TensorFlow then). Reading
    prepared array_record datasets does not import TensorFlow at all.
    """
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import tensorflow as tf

    try:
        tf.config.set_visible_devices([], "GPU")
    except RuntimeError:
        pass  # TensorFlow had already initialised its devices: an earlier call hid them.


def import_tfds():
    """Returns the `tensorflow_datasets` module (TensorFlow's GPUs hidden if it is loaded)."""
    if "tensorflow" in sys.modules:
        hide_accelerators_from_tf()
    if importlib.util.find_spec("importlib_resources") is None:
        # tensorflow-datasets 4.9.x needs it to locate a builder's code but does not declare it.
        raise ImportError("tensorflow-datasets needs the package importlib_resources to prepare "
                          "datasets; install it with `pip install importlib_resources`.")
    import tensorflow_datasets as tfds

    return tfds


def prepare_builder(builder, manual_dir: str | None = None) -> None:
    """Prepares the dataset as array_record files (random access)."""
    hide_accelerators_from_tf()
    config = import_tfds().download.DownloadConfig(manual_dir=manual_dir)
    builder.download_and_prepare(download_config=config, file_format="array_record")
