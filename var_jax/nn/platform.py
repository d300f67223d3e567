"""Which backend a program is being traced for, so layers can pick their fastest form."""
from __future__ import annotations

import jax


def target_platform() -> str:
    """The platform being compiled for: the active mesh's devices, else the default backend."""
    mesh = jax.sharding.get_abstract_mesh()
    device = getattr(mesh, "abstract_device", None)
    return device.platform if device is not None else jax.default_backend()
