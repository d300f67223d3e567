"""Experiment files: load `get_config()` from experiments/<name>.py and apply KEY=VALUE overrides."""
from __future__ import annotations

import ast
import dataclasses
import importlib.util
import os
from typing import Sequence


def load_experiment(path: str):
    """The config returned by `get_config()` of the Python file at `path`."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"experiment config {path} does not exist; pass a file such as "
                                "experiments/tiny_cpu.py.")
    name = "var_jax_experiment_" + os.path.splitext(os.path.basename(path))[0]
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    if not hasattr(module, "get_config"):
        raise ValueError(f"{path} defines no get_config(); an experiment file must return its "
                         "config from get_config().")
    return module.get_config()


def _parse(text: str):
    if text in ("None", "null"):
        return None
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text   # a plain string, e.g. a path


def override(config, assignments: Sequence[str]):
    """`config` with dotted fields replaced, e.g. ["loop.total_steps=100", "data.tokens=/x"].

    Values are Python literals (numbers, tuples, None, True) or else strings.
    """
    for item in assignments:
        key, sep, text = item.partition("=")
        if not sep or not key:
            raise ValueError(f"override {item!r} is not KEY=VALUE (e.g. loop.total_steps=100).")
        config = _replace(config, key.strip().split("."), _parse(text.strip()), key)
    return config


def _replace(obj, names: list[str], value, full: str):
    if not dataclasses.is_dataclass(obj):
        raise ValueError(f"cannot set {full}: {type(obj).__name__} has no fields.")
    fields = {f.name for f in dataclasses.fields(obj)}
    if names[0] not in fields:
        raise ValueError(f"cannot set {full}: {type(obj).__name__} has no field {names[0]!r}; "
                         f"it has {sorted(fields)}.")
    if len(names) > 1:
        value = _replace(getattr(obj, names[0]), names[1:], value, full)
    return dataclasses.replace(obj, **{names[0]: value})
