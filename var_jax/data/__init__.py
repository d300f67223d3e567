"""Input pipelines: TFDS sources, the paper's augmentation, resumable per-host batch streams."""
from var_jax.data.images import load_split, make_image_stream
from var_jax.data.sources import prepare
from var_jax.data.stream import ResumableStream
from var_jax.data.tokens import make_token_stream, pretokenize

__all__ = ["ResumableStream", "load_split", "make_image_stream", "make_token_stream", "prepare",
           "pretokenize"]
