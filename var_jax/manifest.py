"""Tamper evidence: a manifest of sha256 digests for every array, the config and the code.

A manifest is a JSON object:
  arrays  {path: {"sha256", "dtype", "shape"}}: digest of dtype + shape + the C-order bytes,
  config  the config the arrays belong to,
  code    fingerprint of the var_jax source that wrote them (+ the git commit when known),
  parent  the manifest hash of the checkpoint this one continues (a run's hash chain),
  overrides  what an explicit --allow-tampered / --allow-config-change let through since then.
Its own hash (`manifest_hash`) is the sha256 of its canonical JSON: publish it beside shared
weights so a receiver can check them with `var-jax verify`. It detects changes; it is not a
signature (whoever can rewrite the files can rewrite the manifest, which changes its hash).
"""
from __future__ import annotations

import functools
import hashlib
import json
import logging
import os
import subprocess
from typing import Any, Mapping

import jax
import numpy as np

log = logging.getLogger(__name__)

FORMAT = "var_jax.manifest/1"
_PACKAGE = os.path.dirname(os.path.abspath(__file__))


class TamperedError(ValueError):
    """Stored arrays or config differ from their manifest (or the manifest is missing)."""


def array_digest(x) -> str:
    """sha256 of an array's dtype, shape and C-order bytes."""
    a = np.ascontiguousarray(np.asarray(x))
    h = hashlib.sha256(f"{a.dtype.str}|{a.shape}|".encode())
    h.update(a.view(np.uint8).reshape(-1).data if a.size else b"")
    return h.hexdigest()


def json_digest(obj) -> str:
    return hashlib.sha256(_canonical(obj)).hexdigest()


def _canonical(obj) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str).encode()


def manifest_hash(manifest: Mapping) -> str:
    return json_digest(dict(manifest))


def flatten(tree) -> dict[str, Any]:
    """{"params/blocks_0/kernel": leaf} of a pytree of arrays (dict keys, sequence indices)."""
    def name(path) -> str:
        parts = []
        for k in path:
            parts.append(str(getattr(k, "key", getattr(k, "idx", getattr(k, "name", k)))))
        return "/".join(parts)
    return {name(p): leaf for p, leaf in jax.tree_util.tree_leaves_with_path(tree)}


def array_entries(tree) -> dict[str, dict]:
    """Manifest entries of every leaf. A leaf spread over several hosts (not fully
    addressable here) gets its dtype and shape but no digest."""
    out = {}
    for path, leaf in flatten(tree).items():
        entry = {"dtype": np.dtype(leaf.dtype).str, "shape": list(np.shape(leaf))}
        if getattr(leaf, "is_fully_addressable", True):
            entry["sha256"] = array_digest(_host(leaf))
        out[path] = entry
    return out


def _host(leaf):
    return np.asarray(jax.device_get(leaf))


@functools.lru_cache(maxsize=1)
def source_files() -> dict[str, str]:
    """{relative path: sha256} of the var_jax package's .py files."""
    out = {}
    for root, dirs, files in os.walk(_PACKAGE):
        dirs[:] = sorted(d for d in dirs if not d.startswith((".", "__pycache__")))
        for f in sorted(files):
            if f.endswith(".py"):
                path = os.path.join(root, f)
                with open(path, "rb") as fh:
                    out[os.path.relpath(path, os.path.dirname(_PACKAGE))] = hashlib.sha256(
                        fh.read()).hexdigest()
    return out


def git_commit() -> str | None:
    """HEAD of the repository this package runs from (+dirty with uncommitted changes), or None."""
    here = os.path.dirname(os.path.abspath(__file__))
    try:
        out = subprocess.run(["git", "-C", here, "rev-parse", "HEAD"], capture_output=True,
                             text=True, timeout=5)
        dirty = subprocess.run(["git", "-C", here, "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.SubprocessError):
        return None
    if out.returncode != 0:
        return None
    return out.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")


def code_fingerprint() -> dict:
    """The source that is running: one digest over its files, the per-file digests, git."""
    files = source_files()
    return {"fingerprint": json_digest(files), "git_commit": git_commit(), "files": files}


def code_difference(recorded: Mapping | None, current: Mapping | None = None) -> list[str]:
    """Human-readable lines: which var_jax files differ between two code fingerprints."""
    current = current or code_fingerprint()
    if not recorded:
        return ["the recorded manifest has no code fingerprint"]
    if recorded.get("fingerprint") == current["fingerprint"]:
        return []
    old, new = recorded.get("files", {}), current["files"]
    lines = [f"code fingerprint {recorded.get('fingerprint', '?')[:12]} (git "
             f"{recorded.get('git_commit')}) -> {current['fingerprint'][:12]} (git "
             f"{current['git_commit']})"]
    for path in sorted(set(old) | set(new)):
        if old.get(path) != new.get(path):
            what = "added" if path not in old else "removed" if path not in new else "changed"
            lines.append(f"  {what}: {path}")
    return lines


def build(kind: str, arrays: Mapping[str, dict], config, *, parent: str | None = None,
          overrides: list | None = None, **extra) -> dict:
    return {"format": FORMAT, "kind": kind, "arrays": dict(arrays),
            "config": json.loads(_canonical(config)), "code": code_fingerprint(),
            "parent": parent, "overrides": list(overrides or []), **extra}


def compare_arrays(manifest: Mapping, tree, where: str) -> list[str]:
    """Lines naming each array of `tree` whose digest differs from `manifest` (or that one of
    them lacks), with both hashes."""
    expected = manifest.get("arrays", {})
    actual = array_entries(tree)
    problems = []
    for path in sorted(set(expected) | set(actual)):
        e, a = expected.get(path), actual.get(path)
        if e is None:
            problems.append(f"{where}: array {path} is not in the manifest")
        elif a is None:
            problems.append(f"{where}: array {path} of the manifest is missing")
        elif "sha256" in e and "sha256" in a and e["sha256"] != a["sha256"]:
            problems.append(f"{where}: array {path} has sha256 {a['sha256']}, the manifest "
                            f"says {e['sha256']}")
    return problems


def compare_shapes(manifest: Mapping, target, where: str) -> list[str]:
    """Lines naming each array whose shape or dtype in `manifest` (written to `where`) differs
    from `target`'s, params first."""
    expected = manifest.get("arrays", {})
    problems = []
    leaves = flatten(target)
    for path in sorted(leaves, key=lambda p: (not p.startswith("params/"), p)):
        leaf, e = leaves[path], expected.get(path)
        want = (np.dtype(leaf.dtype).str, list(leaf.shape))
        if e is None:
            problems.append(f"{path} {tuple(leaf.shape)} is not in {where}")
        elif (e["dtype"], list(e["shape"])) != want:
            problems.append(f"{path} is {tuple(e['shape'])} {np.dtype(e['dtype']).name} there, "
                            f"{tuple(leaf.shape)} {np.dtype(leaf.dtype).name} now")
    extra = sorted(set(expected) - set(leaves))
    problems += [f"{path} of {where} has no place in the model now" for path in extra]
    return problems


def enforce(problems: list[str], allow_tampered: bool, what: str) -> None:
    """Raise TamperedError listing `problems` (the first few), unless `allow_tampered`: then
    log that `what` (e.g. "loading weights") goes on despite them. No problems: nothing."""
    if not problems:
        return
    if allow_tampered:
        log.warning("%s despite a failed integrity check (--allow-tampered): %s", what, problems)
        return
    shown = "\n  ".join(problems[:5])
    more = f"\n  ... and {len(problems) - 5} more" if len(problems) > 5 else ""
    raise TamperedError(f"integrity check failed:\n  {shown}{more}\nThe files were changed "
                        "after they were written. Use a trusted copy, or pass --allow-tampered "
                        "(allow_tampered=True) to load them anyway (recorded in the next "
                        "manifest).")
