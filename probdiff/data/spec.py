"""What the command line and the Python API accept as data: a built-in spec, a path, one array,
or a dict of named arrays."""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from probdiff.data.builtin import _BUILDERS, BUILTIN_DATASETS, _parse_params
from probdiff.data.dataset import _MAX_SEED, Dataset, _check_seed, dataset_from_arrays
from probdiff.data.files import _from_array, _load_path
from probdiff.errors import ProbdiffError


def load_dataset(spec: str | os.PathLike, *, seed: int = 0, stream: bool | None = None) -> Dataset:
    """Load a built-in (``name`` or ``name:key=value,...``) or a data file / PNG folder;
    ``stream`` True keeps a ``.npy`` file's rows or a PNG folder's images on disk, read per
    minibatch (None: those larger than ``probdiff.data.files.STREAM_BYTES``)."""
    seed = _check_seed(seed, upper=_MAX_SEED)
    if not isinstance(spec, (str, os.PathLike)):
        raise ProbdiffError(f"data spec must be a name or a path, got {spec!r}")
    spec = os.fspath(spec)
    if not isinstance(spec, str) or not spec.strip():
        raise ProbdiffError(f"empty data spec: {spec!r}")
    name, sep, rest = spec.partition(":")
    if name in BUILTIN_DATASETS:
        if stream:
            raise ProbdiffError(f"--stream reads .npy files and PNG folders; {name} is built in")
        params = _parse_params(name, rest if sep else "")
        return _BUILDERS[name](params, seed)
    return _load_path(spec, stream)


def as_dataset(data: Any, *, seed: int = 0, stream: bool | None = None) -> Dataset:
    """A :class:`Dataset` from what the Python API accepts: a data spec (built-in name or
    path), one array (rows first), a dict of named arrays, or a Dataset."""
    if isinstance(data, Dataset):
        return data
    if isinstance(data, (str, os.PathLike)):
        return load_dataset(data, seed=seed, stream=stream)
    if stream:
        raise ProbdiffError(
            "stream=True reads a .npy file or a PNG folder from disk: pass its path as data"
        )
    if isinstance(data, dict):
        return dataset_from_arrays(data)
    if hasattr(data, "__array__") or isinstance(data, (list, tuple)):
        x = np.asarray(data)
        return _finish_single(x) if x.ndim >= 2 else _from_array(x, None, "array")
    raise ProbdiffError(
        f"data must be a spec, an array or a dict of arrays, got {type(data).__name__}"
    )


def _finish_single(x: np.ndarray) -> Dataset:
    """One array of rows given in Python: kept with its own shape for a user's model."""
    ds = _from_array(x, None, "array")
    if x.dtype.kind in "iub":  # counts and labels keep their dtype
        return Dataset(
            ds.x,
            None,
            ds.name,
            ds.kind,
            None,
            {**ds.meta, "single": True},
            {"x": np.ascontiguousarray(x)},
        )
    return ds
