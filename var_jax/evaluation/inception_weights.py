"""pytorch-fid's `pt_inception-2015-12-05-6726825d.pth` -> FIDInceptionV3 params (BN folded)."""
from __future__ import annotations

import functools
import os

import jax
import jax.numpy as jnp
import numpy as np

from var_jax.evaluation.fingerprint import arrays_fingerprint, path_fingerprint
from var_jax.evaluation.inception import FIDInceptionV3
from var_jax.weights.torch_zip import load_torch_state_dict

BN_EPS = 1e-3
WEIGHT_FILE = "pt_inception-2015-12-05-6726825d.pth"
RELEASED_SHA256 = "6726825d"   # prefix of the released file's sha256 (torch.hub naming)
_BN_KEYS = ("weight", "bias", "running_mean", "running_var")


@functools.lru_cache(maxsize=1)
def param_shapes() -> dict:
    """The params tree of FIDInceptionV3, as ShapeDtypeStructs."""
    x = jax.ShapeDtypeStruct((1, 299, 299, 3), jnp.float32)
    return jax.eval_shape(FIDInceptionV3().init, jax.random.key(0), x)["params"]


def _conv_prefixes() -> dict[str, tuple[str, ...]]:
    """{torch module prefix ('Mixed_5b.branch1x1'): flax path of its BasicConv}."""
    out = {}
    for path, _ in jax.tree_util.tree_flatten_with_path(param_shapes())[0]:
        names = tuple(k.key for k in path)
        if names[-2:] == ("conv", "kernel"):
            out[".".join(names[:-2])] = names[:-2]
    return out


def expected_torch_shapes() -> dict[str, tuple[int, ...]]:
    """{torch key: shape} of every entry the weight file must hold (its BN buffers included)."""
    shapes = param_shapes()
    want = {}
    for prefix, path in _conv_prefixes().items():
        node = shapes
        for name in path:
            node = node[name]
        kh, kw, cin, cout = node["conv"]["kernel"].shape
        want[f"{prefix}.conv.weight"] = (cout, cin, kh, kw)
        for k in _BN_KEYS:
            want[f"{prefix}.bn.{k}"] = (cout,)
        want[f"{prefix}.bn.num_batches_tracked"] = ()
    want["fc.weight"] = tuple(shapes["fc"]["kernel"].shape[::-1])
    want["fc.bias"] = tuple(shapes["fc"]["bias"].shape)
    return want


def check_state_dict(sd: dict, source: str) -> None:
    """ValueError naming every missing, unexpected and mis-shaped key."""
    want = expected_torch_shapes()
    missing = sorted(set(want) - set(sd))
    unexpected = sorted(set(sd) - set(want))
    wrong = sorted(f"{k}: {tuple(np.shape(sd[k]))} (want {want[k]})" for k in set(want) & set(sd)
                   if tuple(np.shape(sd[k])) != want[k])
    if missing or unexpected or wrong:
        def head(items):
            return ", ".join(items[:8]) + (f" ... ({len(items)} in all)" if len(items) > 8 else "")
        parts = [f"missing {head(missing)}" if missing else "",
                 f"unexpected {head(unexpected)}" if unexpected else "",
                 f"wrong shapes {head(wrong)}" if wrong else ""]
        raise ValueError(f"{source} is not pytorch-fid's FID Inception state dict ("
                         + "; ".join(p for p in parts if p) + f"); pass {WEIGHT_FILE}.")


def params_from_torch(sd: dict) -> dict:
    """Fold each BatchNorm into its conv (float64, then float32); fc to a Dense kernel."""
    params: dict = {}
    for prefix, path in _conv_prefixes().items():
        w = np.asarray(sd[f"{prefix}.conv.weight"], np.float64)
        gamma, beta, mean, var = (np.asarray(sd[f"{prefix}.bn.{k}"], np.float64)
                                  for k in _BN_KEYS)
        scale = gamma / np.sqrt(var + BN_EPS)
        node = params
        for name in path:
            node = node.setdefault(name, {})
        node["conv"] = {"kernel": (w.transpose(2, 3, 1, 0) * scale).astype(np.float32),
                        "bias": (beta - mean * scale).astype(np.float32)}
    params["fc"] = {"kernel": np.asarray(sd["fc.weight"], np.float32).T.copy(),
                    "bias": np.asarray(sd["fc.bias"], np.float32)}
    return params


def load_inception(path_or_state_dict) -> tuple[dict, str]:
    """(params, fingerprint) from the pytorch-fid `.pth` (read by our safe reader, never
    unpickling code), an `.npz` of its arrays, or a dict of numpy arrays with its torch keys.

    The fingerprint is the sha256 of the file (the released one starts with `RELEASED_SHA256`,
    the 8 hex digits in its name), or of the dict's arrays (`arrays_fingerprint`).
    """
    if isinstance(path_or_state_dict, dict):
        sd, source = path_or_state_dict, "the given state dict"
        fingerprint = arrays_fingerprint(sd)
    else:
        source = os.fspath(path_or_state_dict)
        if source.endswith(".npz"):
            if not os.path.isfile(source):
                raise FileNotFoundError(f"no Inception weights at {source!r}")
            with np.load(source, allow_pickle=False) as z:
                sd = {k: z[k] for k in z.files}
        else:
            sd = load_torch_state_dict(source)
        fingerprint = path_fingerprint(source)
    check_state_dict(sd, source)
    return params_from_torch(sd), fingerprint
