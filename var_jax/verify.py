"""`var-jax verify`'s checks: a converted weights dir, one checkpoint step, or a run's chain."""
from __future__ import annotations

import os

from var_jax import checkpoint as ckpt_lib
from var_jax import manifest as manifest_lib
from var_jax.weights import store


def verify(path: str) -> tuple[bool, list[str]]:
    """(all intact, report lines) for a converted weights dir, a checkpoint step dir
    (RUN/checkpoints/<step>), a checkpoints dir or a run dir (RUN/checkpoints)."""
    path = os.path.abspath(path)
    if store.is_converted_dir(path):
        return verify_weights(path)
    name, parent = os.path.basename(path), os.path.dirname(path)
    if name.isdigit() and os.path.isdir(os.path.join(path, ckpt_lib.STATE)):
        return verify_checkpoints(parent, [int(name)])
    if os.path.isdir(os.path.join(path, "checkpoints")):
        return verify_checkpoints(os.path.join(path, "checkpoints"))
    if os.path.isdir(path) and any(e.isdigit() for e in os.listdir(path)):
        return verify_checkpoints(path)
    raise FileNotFoundError(f"{path} is neither converted weights (config.json + params/), a "
                            "checkpoint step, a checkpoints folder nor a run's work dir.")


def verify_weights(directory: str) -> tuple[bool, list[str]]:
    try:
        store.load_converted(directory)
    except manifest_lib.TamperedError as e:
        return False, [f"TAMPERED {directory}", str(e)]
    manifest = store.read_manifest(directory)
    return True, [f"ok {directory}: {len(manifest['arrays'])} arrays and config.json match "
                  f"manifest.json (manifest sha256 {manifest_lib.manifest_hash(manifest)})"]


def verify_checkpoints(directory: str, steps: list[int] | None = None) -> tuple[bool, list[str]]:
    """Every step's arrays and data state against its manifest, and (for several steps) the
    chain: each manifest's parent must be the previous kept step's manifest hash."""
    ok, lines = True, []
    with ckpt_lib.Checkpointer(directory, read_only=True) as ck:
        steps = steps if steps is not None else ck.all_steps()
        if not steps:
            return False, [f"no complete checkpoint in {directory}"]
        previous = None
        for step in steps:
            try:
                ck.restore(None, step)
                manifest = ck.manifest(step)
            except (manifest_lib.TamperedError, ckpt_lib.DamagedCheckpointError) as e:
                ok = False
                lines.append(f"{'TAMPERED' if isinstance(e, manifest_lib.TamperedError) else 'DAMAGED'}"
                             f" step {step}: {e}")
                previous = None
                continue
            digest = manifest_lib.manifest_hash(manifest)
            lines.append(f"ok step {step}: {len(manifest['arrays'])} arrays match its manifest "
                         f"(sha256 {digest})")
            if manifest.get("overrides"):
                lines.append(f"  note: step {step} records overrides since its parent: "
                             f"{manifest['overrides']}")
            if previous is not None and manifest.get("parent") != previous[1]:
                ok = False
                lines.append(f"BROKEN CHAIN at step {step}: its parent is "
                             f"{manifest.get('parent')}, but step {previous[0]}'s manifest hash "
                             f"is {previous[1]} (a checkpoint was replaced or rewritten)")
            previous = (step, digest)
    return ok, lines
