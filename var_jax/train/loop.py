"""The training loop every trainer shares: mesh, input, sharded init, update, checkpoints, evals, logs."""
from __future__ import annotations

import contextlib
import dataclasses
import itertools
import json
import logging
import math
import time
from typing import Any, Callable

import flax.linen as nn
import jax
import numpy as np
import optax
from etils import epath
from tqdm import tqdm

from var_jax import checkpoint as ckpt_lib
from var_jax import image_io, sharding
from var_jax.train import metrics as metrics_lib
from var_jax.train.input import default_streams
from var_jax.train.state import TrainState
from var_jax.workdir_lock import WorkdirLock

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class LoopConfig:
    """What the loop itself needs; model, data and optimizer settings live beside it."""

    global_batch: int                 # examples per optimizer step, all hosts together
    total_steps: int                  # optimizer steps of the whole run
    seed: int = 0                     # params init, dropout and the data order derive from it
    grad_accum: int = 1               # micro-batches per step (the task's train_step scans them)
    ema_decay: float | None = None    # keep an EMA of the params (evals and samples use it)
    log_every: int = 50               # metrics row (mean over the interval) every N steps
    checkpoint_every: int = 1000      # asynchronous checkpoint every N steps, and at the end
    keep_checkpoints: int = 3
    async_checkpoint: bool = True
    eval_every: int = 0               # eval loss every N steps (0: never)
    eval_batches: int = 8             # batches per eval (the same ones every time)
    sample_every: int = 0             # sample grid PNG every N steps (0: never)
    tensorboard: bool = True          # TensorBoard event files beside metrics.jsonl
    progress_bar: bool = True
    multihost: bool | None = None     # jax.distributed.initialize(): None = detect from env

    def __post_init__(self):
        for name in ("global_batch", "total_steps", "grad_accum", "log_every", "checkpoint_every",
                     "keep_checkpoints", "eval_batches"):
            if getattr(self, name) < 1:
                raise ValueError(f"LoopConfig.{name}={getattr(self, name)} must be >= 1.")
        if self.global_batch % self.grad_accum:
            raise ValueError(f"LoopConfig.global_batch={self.global_batch} is not divisible by "
                             f"grad_accum={self.grad_accum}.")


class Task:
    """What a trainer plugs into `train_and_evaluate`. Override the first three; the rest are
    optional (the defaults mean "none")."""

    flops_per_example: float | None = None   # model FLOPs of one training example (for MFU)

    def init(self, rng: jax.Array) -> dict:
        """Fresh state parts, traceable: "params" (trainable; plain, or boxed with
        nn.with_logical_partitioning) and, optionally, "extra" (arrays the step updates besides
        params, e.g. codebook statistics; checkpointed) and "frozen" (arrays the step reads but
        never trains; never checkpointed: random here, replaced by `load_frozen`'s)."""
        raise NotImplementedError

    def optimizer(self) -> tuple[optax.GradientTransformation, Callable]:
        """(tx, lr_fn): the optimizer and its learning rate of a step (logged as "lr")."""
        raise NotImplementedError

    def train_step(self, state: TrainState, batch: dict, rng: jax.Array):
        """Pure: (state, global batch, PRNG key) -> (new state, dict of scalar metrics).
        The metrics must hold "loss" (checked for NaN/inf)."""
        raise NotImplementedError

    def load_frozen(self, shardings):
        """The trained "frozen" arrays placed on `shardings`, or None to keep `init`'s."""
        return None

    def eval_step(self, state: TrainState, batch: dict) -> dict | None:
        """Pure: scalar metrics of one eval batch, means over the examples whose
        `batch["mask"]` is True when the batch has a mask (the padded last eval batch)."""
        return None

    def sample(self, state: TrainState, rng: jax.Array):
        """(N, H, W, 3) images in [0, 1] for the periodic grid (None: no samples)."""
        return None

    def check_input(self, stream) -> None:
        """Raise ValueError if the train stream does not fit the model (e.g. its class count)."""


Streams = Callable[[Any, str], Any]   # (config, "train" | "eval") -> resumable batch iterator


def _config_dict(config) -> dict:
    return dataclasses.asdict(config) if dataclasses.is_dataclass(config) else dict(config)


def state_initializer(task: Task, loop: LoopConfig, mesh):
    """(init_fn(key) -> TrainState (boxes kept), abstract state with shardings, shardings).

    The shardings come from `jax.eval_shape` of the boxed state: the optimizer moments and the
    EMA are built from the boxed params, so every copy of a param carries its logical names
    (`sharding.param_shardings`); unnamed arrays (frozen, scalars) get the fsdp fallback.
    """
    tx, _ = task.optimizer()

    def init_fn(key):
        parts_key, state_key = jax.random.split(key)
        return TrainState.create(**task.init(parts_key), tx=tx, rng=state_key,
                                 ema_decay=loop.ema_decay)

    boxed = jax.eval_shape(init_fn, jax.random.key(0))
    shardings = sharding.param_shardings(boxed, mesh)

    def abstract_leaf(x, s):   # the box's value, no constraint (not traced here)
        x = x.value if isinstance(x, nn.LogicallyPartitioned) else x
        return jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s)
    abstract = jax.tree.map(abstract_leaf, boxed, shardings,
                            is_leaf=lambda x: isinstance(x, nn.LogicallyPartitioned))
    return init_fn, abstract, shardings


def create_state(task: Task, loop: LoopConfig, mesh, key, ckpt=None, *,
                 allow_tampered: bool = False, step: int | None = None):
    """(state, shardings, restored data-stream state or None, start step).

    Resumes from checkpoint `step` of `ckpt`, by default the latest intact one when there is
    one (arrays read straight into this mesh's shardings and checked against its manifest; see
    Checkpointer.restore); otherwise every array is created on its devices, already sharded.
    `frozen` is never restored: it comes from `task.load_frozen`, else from `task.init`.
    """
    init_fn, abstract, shardings = state_initializer(task, loop, mesh)
    frozen = task.load_frozen(shardings.frozen)
    if frozen is None:   # init's own (the rest of init is pruned from this program)
        frozen = jax.jit(lambda k: nn.unbox(init_fn(k).frozen), out_shardings=shardings.frozen)(key)
    if ckpt is None or not ckpt.all_steps():
        state = jax.jit(lambda k: nn.unbox(init_fn(k)).replace(frozen=None),
                        out_shardings=shardings.replace(frozen=None))(key)
        return state.replace(frozen=frozen), shardings, None, 0
    if step is None:
        step, restored, data_state, _ = ckpt.restore_latest(abstract.checkpointed(),
                                                            allow_tampered=allow_tampered)
    else:
        restored, data_state, _ = ckpt.restore(abstract.checkpointed(), step,
                                               allow_tampered=allow_tampered)
    log.info("resumed from step %d of %s", step, ckpt.directory)
    return abstract.with_checkpointed(restored).replace(frozen=frozen), shardings, data_state, step


def check_config_change(recorded: dict | None, current: dict, allow: bool, ckpt) -> None:
    """Refuse to resume with a config other than the checkpoint's, unless `allow` (then the
    change is logged and recorded in the next manifest)."""
    if recorded is None:
        return
    now = json.loads(json.dumps(current, default=str))
    changed = _changed_keys(recorded, now)
    if not changed:
        return
    lines = [f"{k}: {_get(recorded, k)!r} -> {_get(now, k)!r}" for k in changed]
    if not allow:
        raise ValueError(f"the config differs from the one the checkpoints in {ckpt.directory} "
                         f"were trained with: {'; '.join(lines[:8])}. Resume with the same "
                         "config, pass --allow-config-change (allow_config_change=True) to "
                         "continue with the new one, or start a new --workdir.")
    log.warning("resuming with a changed config (--allow-config-change): %s", lines)
    ckpt.record_override({"allow_config_change": lines})


def _changed_keys(old, new, prefix: str = "") -> list[str]:
    if isinstance(old, dict) and isinstance(new, dict):
        out = []
        for k in sorted(set(old) | set(new)):
            out += _changed_keys(old.get(k), new.get(k), f"{prefix}{k}.")
        return out
    return [] if old == new else [prefix.rstrip(".")]


def _get(tree, dotted: str):
    for k in dotted.split("."):
        tree = tree.get(k) if isinstance(tree, dict) else None
    return tree


def compile_train_step(task: Task, shardings, mesh):
    """jax.jit of `task.train_step` with this step's key, sharded in and out, state donated;
    the metrics gain the step's "lr"."""
    _, lr_fn = task.optimizer()

    def update(state, batch):
        new, metrics = task.train_step(state, batch, state.step_key())
        return new, {**metrics, "lr": lr_fn(state.step)}
    return jax.jit(update, in_shardings=(shardings, sharding.batch_sharding(mesh)),
                   out_shardings=(shardings, sharding.replicated(mesh)), donate_argnums=0)


def train_and_evaluate(config, workdir: str, task: Task, *,
                       streams: Streams = default_streams, allow_tampered: bool = False,
                       allow_config_change: bool = False) -> TrainState:
    """Train `task` as `config.loop` says, resuming from `workdir` if it holds a checkpoint.

    `config` is a dataclass with `.loop` (LoopConfig), `.mesh` (sharding.MeshConfig) and
    `.data` (given to `streams`); the whole of it is saved as JSON beside the checkpoints.
    `workdir` may be local or a gs:// path; process 0 holds it locked for the whole run
    (WorkdirLockedError when another trainer has it). A resume checks the checkpoint against
    its manifest (`allow_tampered` lets a mismatch through) and refuses a changed config unless
    `allow_config_change`; both overrides are recorded in the next manifest.
    Returns the final state.
    """
    sharding.maybe_initialize_distributed(config.loop.multihost)
    lock = WorkdirLock(workdir) if jax.process_index() == 0 else contextlib.nullcontext()
    with lock:
        return _train(config, epath.Path(workdir), task, streams, allow_tampered,
                      allow_config_change)


def _train(config, workdir: epath.Path, task: Task, streams: Streams, allow_tampered: bool,
           allow_config_change: bool) -> TrainState:
    loop: LoopConfig = config.loop
    is_main = jax.process_index() == 0

    # ------------------------------------------------------------------------------------- mesh
    mesh = sharding.make_mesh(config.mesh)
    shards = mesh.shape["data"] * mesh.shape["fsdp"]
    if loop.global_batch % (shards * loop.grad_accum):
        raise ValueError(f"global_batch={loop.global_batch} must be divisible by data x fsdp x "
                         f"grad_accum = {shards} x {loop.grad_accum}.")
    init_key, sample_key = jax.random.split(jax.random.key(loop.seed))

    # ------------------------------------------------------------------------------------ input
    train_stream = streams(config, "train")
    task.check_input(train_stream)
    eval_stream = streams(config, "eval") if loop.eval_every else None
    eval_start = eval_stream.get_state() if eval_stream is not None else None

    with sharding.activate(mesh):   # the models' activation constraints see the mesh
        # ----------------------------------------------------------- model, shard, checkpoint
        ckpt = ckpt_lib.Checkpointer(workdir / "checkpoints", save_every=loop.checkpoint_every,
                                     keep=loop.keep_checkpoints, async_save=loop.async_checkpoint)
        state, state_sh, data_state, start = create_state(task, loop, mesh, init_key, ckpt,
                                                          allow_tampered=allow_tampered)
        if start:
            check_config_change(ckpt.restored_manifest.get("config"), _config_dict(config),
                                allow_config_change, ckpt)
        if data_state is not None:
            train_stream.set_state(data_state)
        info = ckpt_lib.provenance(seed=loop.seed, dataset=str(getattr(config, "data", None)))
        ckpt_lib.write_run_info(workdir, _config_dict(config), info)
        meta = {"config": _config_dict(config), "provenance": info,
                "config_class": f"{type(config).__module__}.{type(config).__qualname__}"}

        # -------------------------------------------------------------------------- update step
        update = compile_train_step(task, state_sh, mesh)

        # -------------------------------------------------------------------------------- evals
        def eval_step(state, batch):   # metrics, and how many real examples they average
            n = batch["mask"].sum() if "mask" in batch else len(jax.tree.leaves(batch)[0])
            return task.eval_step(state, batch), n

        eval_fn = jax.jit(eval_step, in_shardings=(state_sh, sharding.batch_sharding(mesh)))

        def evaluate(state) -> dict:
            eval_stream.set_state(eval_start)
            rows = jax.device_get([eval_fn(state, sharding.global_batch(batch, mesh))
                                   for batch in itertools.islice(eval_stream, loop.eval_batches)])
            if rows[0][0] is None:
                raise ValueError("loop.eval_every > 0 but the task has no eval_step; set "
                                 "loop.eval_every=0 or give the task an eval_step.")
            weights = np.array([n for _, n in rows], np.float64)
            return {f"eval_{k}": float(np.average([r[k] for r, _ in rows], weights=weights))
                    for k in rows[0][0]}

        def write_samples(state, step: int) -> None:
            images = task.sample(state, jax.random.fold_in(sample_key, step))
            if images is not None and is_main:
                images = jax.device_get(images)
                image_io.save_grid(workdir / "samples" / f"step_{step:08d}.png", images,
                                   cols=math.ceil(math.sqrt(len(images))))

        # --------------------------------------------------------------------------------- loop
        writer = metrics_lib.MetricsWriter(workdir, resume_step=start,
                                           tensorboard=loop.tensorboard, active=is_main)
        bar = _progress(loop, start, is_main)
        pending: list[tuple[int, dict]] = []
        clock = _Throughput(loop.global_batch, task.flops_per_example, mesh.devices.flatten())
        try:
            for step in range(start + 1, loop.total_steps + 1):
                with jax.profiler.StepTraceAnnotation("train", step_num=step):
                    batch = sharding.global_batch(next(train_stream), mesh)
                    state, step_metrics = update(state, batch)
                pending.append((step, step_metrics))
                clock.started(state)
                last = step == loop.total_steps   # a run always ends with its eval and grid
                save = ckpt.should_save(step) or last
                evals = loop.eval_every and (step % loop.eval_every == 0 or last)
                samples = loop.sample_every and (step % loop.sample_every == 0 or last)
                if save or evals or samples or step % loop.log_every == 0:
                    row = _flush(pending, clock, ckpt)   # raises on a non-finite loss
                    if evals:
                        row.update(evaluate(state))
                    writer.write(step, row)
                    bar.set_postfix(loss=f"{row['loss']:.4f}", refresh=False)
                    if samples:
                        write_samples(state, step)
                    if save:
                        ckpt.save(step, state.checkpointed(), train_stream.get_state(), meta)
                    clock.restart()
                bar.update(1)
            ckpt.wait()
        finally:
            bar.close()
            writer.close()
            ckpt.close()
            for stream in (train_stream, eval_stream):
                getattr(stream, "close", lambda: None)()
    return state


def _flush(pending: list, clock: "_Throughput", ckpt) -> dict:
    """Fetch the pending steps' metrics, stop on a non-finite loss, return their mean."""
    rows = jax.device_get(pending)
    pending.clear()
    bad = metrics_lib.first_non_finite(rows)
    if bad is not None:
        step, value = bad
        raise FloatingPointError(
            f"non-finite loss {value} at step {step}; stopping. The last complete checkpoint is "
            f"step {ckpt.latest_step()} in {ckpt.directory}: lower the learning rate or check the "
            "input before resuming.")
    row = {k: float(np.mean([r[k] for _, r in rows])) for k in rows[-1][1]}
    row.update(clock.rates(len(rows)))
    return row


class _Throughput:
    """Images (examples) per second and MFU over a log interval; the first step of a process
    (compilation) is not counted."""

    def __init__(self, global_batch: int, flops_per_example, devices):
        self.global_batch, self.flops, self.devices = global_batch, flops_per_example, devices
        self.t0, self.skip = None, 0

    def started(self, state) -> None:
        if self.t0 is None:   # first step of this process: wait for compile + step, then time
            jax.block_until_ready(state.step)
            self.t0, self.skip = time.perf_counter(), 1

    def restart(self) -> None:
        self.t0, self.skip = time.perf_counter(), 0

    def rates(self, steps: int) -> dict:
        steps -= self.skip
        elapsed = time.perf_counter() - self.t0
        if steps <= 0 or elapsed <= 0:
            return {}
        per_s = steps * self.global_batch / elapsed
        return {"examples_per_s": per_s, "step_time_s": elapsed / steps,
                "mfu": metrics_lib.mfu(self.flops, per_s, list(self.devices))}


def _progress(loop: LoopConfig, start: int, active: bool):
    return tqdm(total=loop.total_steps, initial=start, disable=not (active and loop.progress_bar),
                dynamic_ncols=True, desc="train")
