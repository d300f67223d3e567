"""Training input: which dataset a run reads, turned into var_jax.data's per-host Grain streams."""
from __future__ import annotations

import dataclasses

import jax


@dataclasses.dataclass(frozen=True)
class DataConfig:
    """Images from a source (see `var_jax.data.make_image_stream`) or pre-tokenized indices."""

    source: str = "imagenet2012"      # "imagenet2012" | "imagenette" | "folder:<path>" | "digits"
    image_size: int = 256
    train_split: str = "train"
    eval_split: str | None = "validation"   # None: no eval stream
    data_dir: str | None = None       # TFDS data dir (prepared datasets)
    manual_dir: str | None = None     # imagenet2012's downloaded tar files
    tokens: str | None = None         # `var_jax.data.pretokenize` dir: train on its indices
    eval_tokens: str | None = None    # the same for the eval split
    num_workers: int = 0              # Grain worker processes decoding batches (0: this process)
    prefetch: int = 2                 # batches prepared ahead in the background


def default_streams(config, split: str):
    """The stream of `config.data` for split "train" or "eval": this host's share of
    `config.loop.global_batch` per batch, ordered by `config.loop.seed`."""
    # local: the data pipeline (Grain, TFDS) loads only when a stream is built, not for AOT
    # compiles, in-memory test streams or the sampler
    from var_jax.data import make_image_stream, make_token_stream

    data: DataConfig = config.data
    train = split == "train"
    kw = dict(batch_size=config.loop.global_batch // jax.process_count(), seed=config.loop.seed,
              train=train, process_index=jax.process_index(),
              process_count=jax.process_count())
    tokens = data.tokens if train else data.eval_tokens
    if tokens:
        return make_token_stream(tokens, num_workers=data.num_workers, prefetch=data.prefetch,
                                 **kw)
    name = data.train_split if train else data.eval_split
    if name is None:
        raise ValueError("an eval stream was asked for (loop.eval_every > 0) but "
                         "data.eval_split is None; set one, or eval_every=0.")
    return make_image_stream(data.source, name, data.image_size, data_dir=data.data_dir,
                             manual_dir=data.manual_dir, num_workers=data.num_workers,
                             prefetch=data.prefetch, **kw)
