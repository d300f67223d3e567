"""Input pipelines: TFDS sources, the paper's augmentation, per-host batch streams on Grain."""
from var_jax.data.images import load_split, make_image_stream
from var_jax.data.pipeline import BatchStream
from var_jax.data.sources import prepare
from var_jax.data.tokens import make_token_stream, pretokenize

__all__ = ["BatchStream", "load_split", "make_image_stream", "make_token_stream", "prepare",
           "pretokenize"]
