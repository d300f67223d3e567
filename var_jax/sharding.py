"""Device mesh, the logical-axis rules table, and shardings for params, optimizer state and batches."""
from __future__ import annotations

import contextlib
import dataclasses
import logging
import math
import os
from typing import Any, Iterator, Sequence

import flax.linen as nn
import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

log = logging.getLogger(__name__)

MESH_AXES = ("data", "fsdp", "tensor")
BATCH_AXES = ("data", "fsdp")   # the global batch is split over both

# Logical axis name -> mesh axis. Priority-ordered, as flax applies them: an array dimension takes
# the first rule whose mesh axis is still free in that array, else it is replicated. So in an
# activation ("batch", "seq", "embed") the batch takes data+fsdp and "embed" stays whole, while in
# a parameter ("embed", "mlp") "embed" is split over fsdp (FSDP) and "mlp" over tensor (Megatron).
LOGICAL_AXIS_RULES: tuple[tuple[str, Any], ...] = (
    ("batch", BATCH_AXES),   # activations: examples
    ("embed", "fsdp"),       # model width C: params are fully sharded over fsdp
    ("mlp", "tensor"),       # FFN hidden (fc1 outputs, fc2 inputs)
    ("qkv", "tensor"),       # 3C of mat_qkv; head dims entering attn.proj
    ("heads", "tensor"),     # per-head parameters (attention logit scale)
    ("ada", "tensor"),       # 6C / 2C AdaLN projection outputs
    ("vocab", "tensor"),     # codebook size V of the output head
    ("classes", None),       # num_classes + 1 class-embedding rows (1001: never divisible)
    ("cvae", None),          # tokenizer latent width (32)
    ("seq", None),           # token position L
    ("layers", None),        # leading axis of the scanned blocks' stacked params
)


@dataclasses.dataclass(frozen=True)
class MeshConfig:
    """Mesh axis sizes; one of them may be -1 = all remaining devices."""

    data: int = -1     # pure data parallelism (params replicated across it)
    fsdp: int = 1      # data parallelism with params and optimizer state sharded across it
    tensor: int = 1    # tensor (model) parallelism inside each layer


def make_mesh(cfg: MeshConfig = MeshConfig(), devices: Sequence[jax.Device] | None = None) -> Mesh:
    """A ("data", "fsdp", "tensor") mesh over `devices` (default: all, every host)."""
    devices = list(jax.devices() if devices is None else devices)
    sizes = [cfg.data, cfg.fsdp, cfg.tensor]
    if sizes.count(-1) > 1 or any(s == 0 or s < -1 for s in sizes):
        raise ValueError(f"mesh sizes data={cfg.data} fsdp={cfg.fsdp} tensor={cfg.tensor}: each must "
                         "be >= 1, and at most one may be -1 (= the remaining devices).")
    known = math.prod(s for s in sizes if s != -1)
    if -1 in sizes:
        if len(devices) % known:
            raise ValueError(f"{len(devices)} devices cannot be split into a mesh with "
                             f"{dict(zip(MESH_AXES, sizes))}: {len(devices)} is not divisible by "
                             f"{known}.")
        sizes[sizes.index(-1)] = len(devices) // known
    if math.prod(sizes) != len(devices):
        raise ValueError(f"mesh {dict(zip(MESH_AXES, sizes))} needs {math.prod(sizes)} devices but "
                         f"{len(devices)} are present; make the sizes multiply to {len(devices)} "
                         "or set one of them to -1.")
    auto = (jax.sharding.AxisType.Auto,) * len(MESH_AXES)
    return jax.make_mesh(tuple(sizes), MESH_AXES, axis_types=auto, devices=devices)


@contextlib.contextmanager
def activate(mesh: Mesh, rules=LOGICAL_AXIS_RULES) -> Iterator[None]:
    """Make `mesh` and `rules` current, so `nn.with_logical_constraint` in models takes effect.

    Trace (first call of) jitted model code inside this context; outside it, the models'
    activation constraints are no-ops.
    """
    with jax.set_mesh(mesh), nn.logical_axis_rules(rules):
        yield


def _mesh_size(mesh: Mesh, axes) -> int:
    if axes is None:
        return 1
    axes = (axes,) if isinstance(axes, str) else axes
    return math.prod(mesh.shape[a] for a in axes)


def _logical_sharding(names: Sequence[str | None], shape, mesh: Mesh, rules) -> NamedSharding:
    """Map logical dim names through `rules`; a dim not divisible by its mesh axes is replicated."""
    spec = list(nn.logical_to_mesh_axes(tuple(names), rules))
    for i, axes in enumerate(spec):
        if axes is not None and shape[i] % _mesh_size(mesh, axes):
            log.info("dim %d (%s, size %d) is not divisible by mesh axes %s: replicated",
                     i, names[i], shape[i], axes)
            spec[i] = None
    return NamedSharding(mesh, P(*spec))


def fallback_sharding(shape: Sequence[int], mesh: Mesh) -> NamedSharding:
    """For arrays without logical names: split the largest dim divisible by fsdp, else replicate."""
    n = mesh.shape["fsdp"]
    spec: list[Any] = [None] * len(shape)
    if n > 1:
        divisible = [i for i, d in enumerate(shape) if d % n == 0]
        if divisible:
            spec[max(divisible, key=lambda i: (shape[i], -i))] = "fsdp"
    return NamedSharding(mesh, P(*spec))


def _is_box(x) -> bool:
    return isinstance(x, nn.LogicallyPartitioned)


def param_shardings(tree, mesh: Mesh, rules=LOGICAL_AXIS_RULES):
    """NamedShardings for a tree of arrays or ShapeDtypeStructs (params, a whole train state).

    A leaf boxed as `nn.LogicallyPartitioned` follows its names through `rules` (as
    `nn.logical_to_mesh_sharding` of `nn.get_partition_spec`, but replicating a dim its mesh
    axes do not divide); unnamed leaves get `fallback_sharding`. Returns a tree with the
    structure of `nn.meta.unbox(tree)`.
    """
    def one(x):
        if _is_box(x):
            return _logical_sharding(x.names, x.value.shape, mesh, rules)
        return fallback_sharding(x.shape, mesh)
    return jax.tree.map(one, tree, is_leaf=_is_box)


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, P())


def batch_sharding(mesh: Mesh) -> NamedSharding:
    """Leading (example) dim split over data x fsdp, the rest replicated."""
    return NamedSharding(mesh, P(BATCH_AXES))


def global_batch(host_batch: dict, mesh: Mesh) -> dict:
    """Host-local numpy batch (this process's examples) -> global jax arrays sharded by example."""
    sharding = batch_sharding(mesh)
    n = _mesh_size(mesh, BATCH_AXES)

    def one(x):
        x = np.asarray(x)
        total = x.shape[0] * jax.process_count()
        if total % n:
            raise ValueError(f"global batch {total} is not divisible by the data x fsdp mesh size "
                             f"{n}; use a batch size that is a multiple of {n}.")
        return jax.make_array_from_process_local_data(sharding, x)
    return jax.tree.map(one, host_batch)


# ------------------------------------------------------------- inference: one host's devices
def batch_mesh() -> Mesh:
    """A 1-D mesh over this process's devices, its axis named as the training mesh's "data"."""
    devices = jax.local_devices()
    return jax.make_mesh((len(devices),), ("data",), axis_types=(jax.sharding.AxisType.Auto,),
                         devices=devices)


def replicate(tree):
    """Put params on every local device (the sampler's layout); a no-op when already there.

    Call it once on numpy params (e.g. from the converter) to avoid a host copy per call.
    """
    return jax.device_put(tree, replicated(batch_mesh()))


def compile_batched(program, num_batched_in: int, num_batched_out: int):
    """(jax.jit of `program(params_a, params_b, *batched, *replicated)`, its mesh): the batched
    args and all outputs split by example over `batch_mesh()`, the rest replicated."""
    mesh = batch_mesh()
    rep, bat = replicated(mesh), NamedSharding(mesh, P("data"))
    return jax.jit(program, in_shardings=(rep, rep) + (bat,) * num_batched_in + (rep,),
                   out_shardings=(bat,) * num_batched_out), mesh


def pad_to_devices(n_devices: int, *arrays_B):
    """Pad batched arrays (repeating the last item) so the batch divides the device count."""
    pad = (-arrays_B[0].shape[0]) % n_devices
    if pad == 0:
        return arrays_B
    return tuple(np.concatenate([a, np.repeat(a[-1:], pad, 0)]) for a in arrays_B)


_MULTIHOST_ENV = ("JAX_COORDINATOR_ADDRESS", "MEGASCALE_COORDINATOR_ADDRESS")


def _launched_on_several_hosts() -> bool:
    if any(os.environ.get(v) for v in _MULTIHOST_ENV):
        return True
    if "," in os.environ.get("TPU_WORKER_HOSTNAMES", ""):           # Cloud TPU pod slice
        return True
    for count in ("SLURM_NTASKS", "OMPI_COMM_WORLD_SIZE", "JAX_NUM_PROCESSES"):
        if int(os.environ.get(count, "1") or 1) > 1:
            return True
    return False


def maybe_initialize_distributed(force: bool | None = None) -> bool:
    """Call `jax.distributed.initialize()` when launched on several hosts (or when forced).

    Detection reads the environment: JAX_COORDINATOR_ADDRESS (with JAX_NUM_PROCESSES and
    JAX_PROCESS_ID, which are passed on), a Cloud TPU pod slice (TPU_WORKER_HOSTNAMES), SLURM or
    Open MPI with more than one task. `force=False` never initializes; an already initialized
    runtime (a second run in the same process) is kept. Returns whether it is initialized.
    """
    if jax.distributed.is_initialized():
        return True
    if force is False or not (force or _launched_on_several_hosts()):
        return False
    env = {name: int(os.environ[var]) for name, var in
           (("num_processes", "JAX_NUM_PROCESSES"), ("process_id", "JAX_PROCESS_ID"))
           if os.environ.get(var)}
    jax.distributed.initialize(**env)
    log.info("jax.distributed initialized: process %d of %d", jax.process_index(),
             jax.process_count())
    return True
