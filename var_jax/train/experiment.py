"""Experiment files: load `get_config()` from experiments/<name>.py and apply KEY=VALUE overrides."""
from __future__ import annotations

import ast
import dataclasses
import difflib
import importlib.util
import os
import types
import typing
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


def override(config, assignments: Sequence[str]):
    """`config` with dotted fields replaced, e.g. ["loop.total_steps=100", "data.tokens=/x"].

    Each value is parsed as the field's declared type: bool (true/false/1/0/yes/no), int, float,
    str, tuples ("1,2,3" or "(1, 2, 3)"), None for optional fields ("None"/"null"). A wrong
    type or an unknown field raises ValueError naming the field, its type and the fix.
    """
    for item in assignments:
        key, sep, text = item.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"--set {item!r} is not KEY=VALUE (e.g. --set loop.total_steps=100).")
        key = key.strip()
        config = _replace(config, key.split("."), text.strip(), key)
    return config


def _replace(obj, names: list[str], text: str, full: str):
    if not dataclasses.is_dataclass(obj):
        raise ValueError(f"--set {full}: {type(obj).__name__} has no fields to set.")
    fields = {f.name for f in dataclasses.fields(obj)}
    cls = type(obj).__name__
    if names[0] not in fields:
        close = difflib.get_close_matches(names[0], sorted(fields), n=1)
        hint = f"did you mean {close[0]!r}? " if close else ""
        raise ValueError(f"--set {full}: {cls} has no field {names[0]!r}; {hint}its fields are "
                         f"{sorted(fields)}.")
    hint = typing.get_type_hints(type(obj))[names[0]]
    if len(names) > 1:
        value = _replace(getattr(obj, names[0]), names[1:], text, full)
    else:
        value = parse_value(text, hint, f"--set {full}={text} ({cls}.{names[0]})")
    try:
        return dataclasses.replace(obj, **{names[0]: value})
    except (ValueError, TypeError) as e:
        raise ValueError(f"--set {full}={text}: {e}") from e


_TRUE, _FALSE = ("true", "1", "yes", "on"), ("false", "0", "no", "off")


def parse_value(text: str, hint, where: str):
    """`text` as a value of type `hint` (see `override`); ValueError naming `where` if not."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if text in ("None", "null", "none") and type(None) in args:
            return None
        for option in (a for a in args if a is not type(None)):
            try:
                return parse_value(text, option, where)
            except ValueError:
                pass
        raise ValueError(f"{where}: expected {_type_name(hint)}, got {text!r}.")
    if hint is bool:
        if text.lower() in _TRUE + _FALSE:
            return text.lower() in _TRUE
        raise ValueError(f"{where}: expected a bool (true or false), got {text!r}.")
    if hint is int:
        try:
            return int(text)
        except ValueError:
            raise ValueError(f"{where}: expected an int, got {text!r}.") from None
    if hint is float:
        try:
            return float(text)
        except ValueError:
            raise ValueError(f"{where}: expected a float, got {text!r}.") from None
    if hint is str:
        return text
    if origin is tuple:
        inner = text.strip()
        if inner[:1] in "([" and inner[-1:] in ")]":
            inner = inner[1:-1]
        parts = [p.strip() for p in inner.split(",") if p.strip()]
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(parse_value(p, args[0], where) for p in parts)
        if len(parts) != len(args):
            raise ValueError(f"{where}: expected {len(args)} comma-separated values "
                             f"({_type_name(hint)}), got {text!r}.")
        return tuple(parse_value(p, a, where) for p, a in zip(parts, args))
    if dataclasses.is_dataclass(hint):
        raise ValueError(f"{where}: {hint.__name__} is a group of fields; set one of them, e.g. "
                         f"--set ...{dataclasses.fields(hint)[0].name}=VALUE.")
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def _type_name(hint) -> str:
    return getattr(hint, "__name__", None) or str(hint).replace("typing.", "")
