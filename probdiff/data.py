"""Data sets: seeded built-ins, files on disk, train/test splits and minibatches.

A data spec is either a built-in name, optionally with parameters
(``moons``, ``moons:n=2000,noise=0.05``), or a path to a ``.npz`` / ``.npy`` / ``.csv`` file
or a folder of PNG images. A built-in name wins over a file of the same name.
Nothing here downloads anything. Bad input raises :class:`ProbdiffError` with a one-line
message naming the bad value or path.
"""

from __future__ import annotations

import csv
import functools
import math
import operator
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np

from probdiff.errors import ProbdiffError

__all__ = [
    "BUILTIN_DATASETS",
    "Dataset",
    "Minibatches",
    "as_dataset",
    "data_sha256",
    "dataset_from_arrays",
    "SphericalGaussianMixture",
    "load_dataset",
    "mixture2d_density",
    "train_test_split",
]

BUILTIN_DATASETS: dict[str, str] = {
    "blobs": "isotropic Gaussian blobs, known density (n=1000, centers=3, dim=2, std=1.0)",
    "moons": "two interleaving half circles (n=1000, noise=0.05)",
    "swissroll": "2-D swiss roll (n=1000, noise=0.5)",
    "mixture2d": "fixed 3-component 2-D Gaussian mixture, known density (n=1000)",
    "digits": "scikit-learn 8x8 digits, 1x8x8 images with values 0..16 (n=1797)",
    "patches": "grayscale patches of scikit-image's bundled photos, values 0..255 (size=8, n=2000)",
}

_INTEGER_8BIT = {"integer": True, "levels": 256, "low": 0.0, "high": 255.0}
_PATCH_IMAGES = ("camera", "coins", "moon", "text", "page")
_MIXTURE2D_WEIGHTS = (0.5, 0.3, 0.2)
_MIXTURE2D_LOCS = ((-2.0, -1.0), (2.0, -1.0), (0.0, 2.5))
_MIXTURE2D_SCALES = (0.6, 0.4, 0.5)
_DIGITS_N = 1797
_MAX_SEED = 2**32 - 1


# ----------------------------------------------------------------------------- Dataset


@dataclass(frozen=True, eq=False, repr=False)
class Dataset:
    """An in-memory data set: ``x`` is float64 with shape ``(N, *event_shape)``.

    ``kind`` is ``"vector"`` (``x`` is ``(N, D)``) or ``"image"`` (``x`` is ``(N, C, H, W)``).
    ``log_prob`` is the true log density per row where it is known, else ``None``.
    ``meta`` carries extras such as ``{"integer": True, "levels": 17, "low": 0.0,
    "high": 16.0}`` for integer-valued images or the mixture parameters of synthetic sets.

    ``fields`` holds the named arrays of data given as several arrays (an ``.npz`` with more
    than one array, a CSV with a header, a dict): they share their first dimension and reach a
    user's model as keyword arguments. ``x`` may then be None (no array named ``x``); the
    built-in models, which read ``x``, refuse such data.
    """

    x: np.ndarray | None
    y: np.ndarray | None
    name: str
    kind: str
    log_prob: Callable[[np.ndarray], np.ndarray] | None = None
    meta: dict = field(default_factory=dict)
    fields: dict[str, np.ndarray] | None = None

    def __post_init__(self) -> None:
        if self.kind not in ("vector", "image"):
            raise ProbdiffError(f"data set kind must be 'vector' or 'image', not {self.kind!r}")
        if self.x is None and not self.fields:
            raise ProbdiffError(f"data set {self.name!r} has no arrays")
        if self.x is not None and self.x.ndim < 2:
            raise ProbdiffError(
                f"data set {self.name!r}: x needs at least 2-D: (N, D), got shape {self.x.shape}"
            )
        if self.y is not None and len(self.y) != self.n:
            raise ProbdiffError(
                f"data set {self.name!r}: y has {len(self.y)} entries but x has {self.n} rows"
            )
        if self.fields:
            rows = {k: len(v) for k, v in self.fields.items()}
            if len(set(rows.values()) | {self.n}) > 1:
                listed = ", ".join(f"{k} {r}" for k, r in rows.items())
                raise ProbdiffError(f"data set {self.name!r}: arrays differ in rows ({listed})")

    def __repr__(self) -> str:
        labels = "" if self.y is None else ", labelled"
        named = "" if not self.fields else f", arrays={list(self.fields)}"
        shape = "" if self.x is None else f", event_shape={self.event_shape}"
        return f"Dataset(name={self.name!r}, kind={self.kind!r}, n={self.n}{shape}{labels}{named})"

    def __len__(self) -> int:
        return self.n

    @property
    def n(self) -> int:
        """Number of data points."""
        if self.x is not None:
            return int(self.x.shape[0])
        return int(len(next(iter(self.fields.values()))))

    def require_x(self) -> np.ndarray:
        """``x``, or a one-line error for data the built-in models cannot read."""
        if self.x is None:
            if self.meta.get("single"):
                raise ProbdiffError(
                    f"x in {self.name!r} has shape {self.fields['x'].shape}: the built-in models "
                    "need at least 2-D: (N, D) for vectors or (N, C, H, W) for images")
            raise ProbdiffError(f"data {self.name!r} holds the arrays {', '.join(self.fields)} and "
                                "none named 'x': the built-in models need x")
        return self.x

    @property
    def event_shape(self) -> tuple[int, ...]:
        """Shape of one data point."""
        return tuple(int(s) for s in self.require_x().shape[1:])

    @property
    def dim(self) -> int:
        """Number of scalar entries per data point."""
        return int(math.prod(self.event_shape))

    def flat(self) -> np.ndarray:
        """``x`` as ``(N, dim)`` (a view when ``x`` is contiguous)."""
        return self.require_x().reshape(self.n, self.dim)

    def arrays(self) -> np.ndarray | dict[str, np.ndarray]:
        """What a user's model is called with: the named arrays, or the one array as loaded."""
        if self.meta.get("single"):
            return self.fields["x"]
        return dict(self.fields) if self.fields else self.require_x()

    def subset(self, idx: Any) -> Dataset:
        """The rows ``idx`` (indices, boolean mask or slice) of every array, keeping name,
        kind, log_prob and meta."""
        if not isinstance(idx, slice):
            idx = np.asarray(idx)
            if idx.ndim == 0:
                idx = idx.reshape(1)
        y = None if self.y is None else self.y[idx]
        x = None if self.x is None else self.x[idx]
        fields = None if self.fields is None else {k: v[idx] for k, v in self.fields.items()}
        return Dataset(x, y, self.name, self.kind, self.log_prob, self.meta, fields)


@dataclass(frozen=True, eq=False)
class SphericalGaussianMixture:
    """Log density of a mixture of isotropic Gaussians; callable on ``(..., D)`` arrays."""

    weights: np.ndarray  # (K,)
    locs: np.ndarray  # (K, D)
    scales: np.ndarray  # (K,) standard deviation per component

    def __call__(self, x: np.ndarray) -> np.ndarray:
        """Log density of each row of ``x``; returns shape ``x.shape[:-1]``."""
        x = np.asarray(x, dtype=np.float64)
        dim = self.locs.shape[1]
        if x.ndim < 1 or x.shape[-1] != dim:
            raise ValueError(f"log_prob expects rows of length {dim}, got shape {x.shape}")
        sq = np.sum((x[..., None, :] - self.locs) ** 2, axis=-1)  # (..., K)
        comp = (
            np.log(self.weights)
            - 0.5 * sq / self.scales**2
            - dim * np.log(self.scales)
            - 0.5 * dim * np.log(2.0 * np.pi)
        )
        top = np.max(comp, axis=-1, keepdims=True)
        return (top + np.log(np.sum(np.exp(comp - top), axis=-1, keepdims=True)))[..., 0]

    def as_meta(self) -> dict:
        """The parameters as a ``meta`` dictionary."""
        return {"weights": self.weights.copy(), "locs": self.locs.copy(), "scales": self.scales.copy()}


# ----------------------------------------------------------------------------- spec parsing


def load_dataset(spec: str | os.PathLike, *, seed: int = 0) -> Dataset:
    """Load a built-in (``name`` or ``name:key=value,...``) or a data file / PNG folder."""
    seed = _check_seed(seed, upper=_MAX_SEED)
    if not isinstance(spec, (str, os.PathLike)):
        raise ProbdiffError(f"data spec must be a name or a path, got {spec!r}")
    spec = os.fspath(spec)
    if not isinstance(spec, str) or not spec.strip():
        raise ProbdiffError(f"empty data spec: {spec!r}")
    name, sep, rest = spec.partition(":")
    if name in BUILTIN_DATASETS:
        params = _parse_params(name, rest if sep else "")
        return _BUILDERS[name](params, seed)
    return _load_path(spec)


def _parse_params(name: str, text: str) -> dict[str, str]:
    """Split ``key=value,key=value`` into a dict, rejecting malformed and duplicate keys."""
    params: dict[str, str] = {}
    for item in text.split(","):
        item = item.strip()
        if not item:
            continue
        key, eq, value = item.partition("=")
        key, value = key.strip(), value.strip()
        if not eq or not key:
            raise ProbdiffError(f"{name}: expected key=value in the data spec, got {item!r}")
        if key in params:
            raise ProbdiffError(f"{name}: key {key!r} given twice")
        params[key] = value
    return params


def _take_params(name: str, params: dict[str, str], schema: dict[str, tuple]) -> dict[str, Any]:
    """Convert ``params`` by ``schema`` (key -> (type, default, low, high)); reject unknown keys."""
    unknown = sorted(set(params) - set(schema))
    if unknown:
        raise ProbdiffError(
            f"{name}: unknown key(s) {', '.join(map(repr, unknown))} "
            f"(known: {', '.join(schema)})"
        )
    out: dict[str, Any] = {}
    for key, (typ, default, low, high) in schema.items():
        out[key] = default if key not in params else _convert(name, key, params[key], typ)
        _check_range(name, key, out[key], low, high)
    return out


def _convert(name: str, key: str, text: str, typ: type) -> Any:
    """Parse one parameter value as ``int`` or ``float``."""
    try:
        value = typ(text)
    except ValueError:
        kind = "an integer" if typ is int else "a number"
        raise ProbdiffError(f"{name}: {key} must be {kind}, got {text!r}") from None
    if typ is float and not math.isfinite(value):
        raise ProbdiffError(f"{name}: {key} must be finite, got {text!r}")
    return value


def _check_range(name: str, key: str, value: Any, low: Any, high: Any) -> None:
    """Raise unless ``low <= value <= high`` (``low`` exclusive when given as a 1-tuple)."""
    if isinstance(low, tuple):
        if value <= low[0]:
            raise ProbdiffError(f"{name}: {key} must be > {low[0]}, got {value}")
    elif low is not None and value < low:
        raise ProbdiffError(f"{name}: {key} must be >= {low}, got {value}")
    if high is not None and value > high:
        raise ProbdiffError(f"{name}: {key} must be <= {high}, got {value}")


def _check_seed(seed: Any, upper: int | None = None) -> int:
    """A non-negative integer seed (at most ``upper``)."""
    if isinstance(seed, bool):
        raise ProbdiffError(f"seed must be an integer, got {seed!r}")
    try:
        seed = operator.index(seed)
    except TypeError:
        raise ProbdiffError(f"seed must be an integer, got {seed!r}") from None
    if seed < 0 or (upper is not None and seed > upper):
        limit = f" and <= {upper}" if upper is not None else ""
        raise ProbdiffError(f"seed must be >= 0{limit}, got {seed}")
    return seed


# ----------------------------------------------------------------------------- built-ins


def _blobs(params: dict[str, str], seed: int) -> Dataset:
    """sklearn ``make_blobs`` with its equal-weight spherical mixture density."""
    from sklearn.datasets import make_blobs

    p = _take_params(
        "blobs",
        params,
        {"n": (int, 1000, 1, None), "centers": (int, 3, 1, None), "dim": (int, 2, 1, None),
         "std": (float, 1.0, (0.0,), None)},
    )
    x, y, centers = make_blobs(
        n_samples=p["n"], n_features=p["dim"], centers=p["centers"], cluster_std=p["std"],
        random_state=seed, return_centers=True,
    )
    k = p["centers"]
    density = SphericalGaussianMixture(
        np.full(k, 1.0 / k), np.asarray(centers, dtype=np.float64), np.full(k, p["std"])
    )
    meta = density.as_meta() | {"params": p | {"seed": seed}}
    return _finish(x, y, "blobs", "vector", "blobs", meta=meta, log_prob=density)


def _moons(params: dict[str, str], seed: int) -> Dataset:
    """sklearn ``make_moons``."""
    from sklearn.datasets import make_moons

    p = _take_params("moons", params, {"n": (int, 1000, 1, None), "noise": (float, 0.05, 0.0, None)})
    x, y = make_moons(n_samples=p["n"], noise=p["noise"], random_state=seed)
    return _finish(x, y, "moons", "vector", "moons", meta={"params": p | {"seed": seed}})


def _swissroll(params: dict[str, str], seed: int) -> Dataset:
    """sklearn ``make_swiss_roll`` projected on its columns 0 and 2, divided by 5."""
    from sklearn.datasets import make_swiss_roll

    p = _take_params("swissroll", params, {"n": (int, 1000, 1, None), "noise": (float, 0.5, 0.0, None)})
    x3, _ = make_swiss_roll(n_samples=p["n"], noise=p["noise"], random_state=seed)
    x = x3[:, [0, 2]] / 5.0
    return _finish(x, None, "swissroll", "vector", "swissroll", meta={"params": p | {"seed": seed}})


def mixture2d_density() -> SphericalGaussianMixture:
    """The fixed density of the ``mixture2d`` built-in."""
    return SphericalGaussianMixture(
        np.array(_MIXTURE2D_WEIGHTS), np.array(_MIXTURE2D_LOCS), np.array(_MIXTURE2D_SCALES)
    )


def _mixture2d(params: dict[str, str], seed: int) -> Dataset:
    """Samples of :func:`mixture2d_density`; ``y`` is the component of each sample."""
    p = _take_params("mixture2d", params, {"n": (int, 1000, 1, None)})
    density = mixture2d_density()
    rng = np.random.default_rng(seed)
    comp = rng.choice(len(density.weights), size=p["n"], p=density.weights)
    x = density.locs[comp] + density.scales[comp, None] * rng.standard_normal((p["n"], 2))
    meta = density.as_meta() | {"params": p | {"seed": seed}}
    return _finish(x, comp, "mixture2d", "vector", "mixture2d", meta=meta, log_prob=density)


def _digits(params: dict[str, str], seed: int) -> Dataset:
    """scikit-learn's bundled 8x8 digits as ``(N, 1, 8, 8)`` images with values 0..16."""
    from sklearn.datasets import load_digits

    p = _take_params("digits", params, {"n": (int, _DIGITS_N, 1, _DIGITS_N)})
    bunch = load_digits()
    x = bunch.images[: p["n"], None, :, :]
    meta = {"integer": True, "levels": 17, "low": 0.0, "high": 16.0, "params": p}
    return _finish(x, bunch.target[: p["n"]], "digits", "image", "digits", meta=meta)


@functools.lru_cache(maxsize=1)
def _patch_sources() -> tuple[np.ndarray, ...]:
    """The grayscale photos shipped inside the scikit-image package (read from disk, no fetcher)."""
    import skimage.data
    from PIL import Image

    folder = Path(skimage.data.__file__).parent
    images = []
    for stem in _PATCH_IMAGES:
        path = folder / f"{stem}.png"
        try:
            with Image.open(path) as im:
                images.append(np.asarray(im.convert("L")))
        except Exception as err:  # a broken scikit-image install, not user input
            reason = _one_line(err)
            raise ProbdiffError(f"patches: cannot read bundled image {str(path)!r}: {reason}") from None
    return tuple(images)


def _patches(params: dict[str, str], seed: int) -> Dataset:
    """Random square crops of the bundled photos; ``y`` is the index of the source photo."""
    sources = _patch_sources()
    max_size = min(min(im.shape) for im in sources)
    p = _take_params("patches", params, {"size": (int, 8, 1, max_size), "n": (int, 2000, 1, None)})
    size, n = p["size"], p["n"]
    rng = np.random.default_rng(seed)
    which = rng.integers(0, len(sources), size=n)
    x = np.empty((n, 1, size, size), dtype=np.float64)
    offsets = np.arange(size)
    for k, image in enumerate(sources):
        rows = np.flatnonzero(which == k)
        tops = rng.integers(0, image.shape[0] - size + 1, size=len(rows))
        lefts = rng.integers(0, image.shape[1] - size + 1, size=len(rows))
        r = tops[:, None, None] + offsets[None, :, None]
        c = lefts[:, None, None] + offsets[None, None, :]
        x[rows, 0] = image[r, c]
    meta = _INTEGER_8BIT | {"sources": list(_PATCH_IMAGES), "params": p | {"seed": seed}}
    return _finish(x, which, "patches", "image", "patches", meta=meta)


_BUILDERS: dict[str, Callable[[dict[str, str], int], Dataset]] = {
    "blobs": _blobs,
    "moons": _moons,
    "swissroll": _swissroll,
    "mixture2d": _mixture2d,
    "digits": _digits,
    "patches": _patches,
}


# ----------------------------------------------------------------------------- files


def _load_path(spec: str) -> Dataset:
    """Dispatch on the file type of ``spec``."""
    path = Path(spec).expanduser()
    if not path.exists():
        raise ProbdiffError(
            f"no such data file or built-in data set: {spec!r} "
            f"(built-ins: {', '.join(BUILTIN_DATASETS)})"
        )
    if path.is_dir():
        return _load_png_folder(path, spec)
    suffix = path.suffix.lower()
    if suffix == ".npz":
        return _npz_dataset(_read_npz(path, spec), spec)
    elif suffix == ".npy":
        x, y = _read_array(path, spec, ".npy"), None
    elif suffix == ".csv":
        return _load_csv(path, spec)
    else:
        raise ProbdiffError(
            f"unsupported data file {spec!r}: expected .npz, .npy, .csv or a folder of PNG images"
        )
    return _from_array(x, y, spec)


def _one_line(err: BaseException) -> str:
    """The first line of an exception's message (or its type name)."""
    text = str(err).strip().splitlines()
    return text[0] if text else type(err).__name__


def _read_array(path: Path, spec: str, what: str) -> np.ndarray:
    """``np.load`` a ``.npy`` file without pickles."""
    try:
        with open(path, "rb") as handle:  # our handle, so a failed parse leaks no file
            arr = np.load(handle, allow_pickle=False)
    except Exception as err:
        raise ProbdiffError(f"cannot read {spec!r} as {what}: {_one_line(err)}") from None
    if not isinstance(arr, np.ndarray):
        raise ProbdiffError(f"cannot read {spec!r} as {what}: it holds several arrays (an .npz archive?)")
    return arr


def _read_npz(path: Path, spec: str) -> dict[str, np.ndarray]:
    """Every array of an ``.npz`` archive, by name."""
    with open(path, "rb") as handle:  # our handle, so a failed parse leaks no file
        try:
            archive = np.load(handle, allow_pickle=False)
        except Exception as err:
            raise ProbdiffError(f"cannot read {spec!r} as .npz: {_one_line(err)}") from None
        if isinstance(archive, np.ndarray):
            raise ProbdiffError(f"cannot read {spec!r} as .npz: it holds a single array (an .npy file?)")
        with archive:
            try:
                arrays = {k: archive[k] for k in archive.files}
            except Exception as err:
                reason = _one_line(err)
                raise ProbdiffError(f"cannot read arrays of {spec!r}: {reason} (non-numeric data?)") from None
    if not arrays:
        raise ProbdiffError(f"{spec!r} holds no arrays")
    return arrays


def _npz_dataset(arrays: dict[str, np.ndarray], spec: str) -> Dataset:
    """One array ``x`` as before; several arrays as named fields (``x``, when present, and
    integer labels ``y`` also serve the built-in models)."""
    if set(arrays) == {"x"}:
        return _from_array(arrays["x"], None, spec)
    return dataset_from_arrays(arrays, spec)


def dataset_from_arrays(arrays: dict[str, Any], name: str = "arrays") -> Dataset:
    """Named arrays sharing their first dimension (a dict, an ``.npz`` with several arrays):
    each numeric, finite, at least 1-D. Integers and booleans keep their dtype (counts and
    class labels), floating point becomes float64. ``x``, when it is 2-D or more, is also the
    data of the built-in models; ``y`` their labels when it holds integers."""
    if not isinstance(arrays, dict) or not arrays:
        raise ProbdiffError(f"{name!r}: expected a non-empty dict of arrays")
    fields: dict[str, np.ndarray] = {}
    for key, value in arrays.items():
        if not isinstance(key, str) or not key:
            raise ProbdiffError(f"{name!r}: array names must be non-empty strings, got {key!r}")
        a = np.asarray(value)
        _check_numeric(a, name, key)
        if a.ndim < 1:
            raise ProbdiffError(f"{key} in {name!r} is a scalar: every array needs a row per datum")
        if a.shape[0] == 0:
            raise ProbdiffError(f"{key} in {name!r} holds no data (0 rows)")
        if 0 in a.shape[1:]:
            raise ProbdiffError(f"{key} in {name!r} has an empty event shape {a.shape[1:]}")
        if a.dtype.kind == "f":
            a = np.ascontiguousarray(a, dtype=np.float64)
            _check_finite(a, name, key)
        fields[key] = np.ascontiguousarray(a)
    rows = {k: len(v) for k, v in fields.items()}
    if len(set(rows.values())) > 1:
        listed = ", ".join(f"{k} {r}" for k, r in rows.items())
        raise ProbdiffError(f"arrays in {name!r} differ in rows ({listed}): each needs one row per datum")
    x = fields.get("x")
    x = np.asarray(x, dtype=np.float64) if x is not None and 2 <= x.ndim <= 4 else None
    if x is not None and x.ndim == 3:
        x = x[:, None]
    y = fields.get("y")
    labels = None
    if y is not None and y.ndim == 1 and np.array_equal(y, np.round(y)):
        labels = y.astype(np.int64)
    kind = "image" if x is not None and x.ndim == 4 else "vector"
    meta = dict(_INTEGER_8BIT) if "x" in fields and fields["x"].dtype == np.uint8 else {}
    return Dataset(x, labels, name, kind, None, meta, fields)


def _from_array(x: np.ndarray, y: np.ndarray | None, spec: str) -> Dataset:
    """Shape an array from ``.npz`` / ``.npy`` into a vector or image data set (a 1-D array
    is one value per datum: a user's model takes it, the built-in models refuse it)."""
    _check_numeric(x, spec, "x")
    if x.ndim == 1 and y is None:
        ds = dataset_from_arrays({"x": x}, spec)
        return Dataset(None, None, spec, "vector", None, {"single": True}, ds.fields)
    if x.ndim < 2:
        raise ProbdiffError(
            f"x in {spec!r} has shape {x.shape}: need at least 2-D: (N, D) for vectors "
            "or (N, C, H, W) for images"
        )
    if x.ndim > 4:
        raise ProbdiffError(f"x in {spec!r} has shape {x.shape}: at most 4-D (N, C, H, W)")
    meta = dict(_INTEGER_8BIT) if x.dtype == np.uint8 else {}
    if x.ndim == 3:
        x = x[:, None, :, :]
    kind = "vector" if x.ndim == 2 else "image"
    return _finish(x, y, spec, kind, spec, meta=meta)


def _load_csv(path: Path, spec: str) -> Dataset:
    """A numeric CSV; a non-numeric first row is a header, whose ``y`` / ``label`` column is ``y``."""
    rows = _read_csv_rows(path, spec)
    header: list[str] | None = None
    if rows and not all(_is_number(v) for v in rows[0][1]):
        header = rows.pop(0)[1]
    if not rows:
        raise ProbdiffError(f"{spec!r} holds no data (0 rows)")
    width = len(header) if header is not None else len(rows[0][1])
    for line, fields in rows:
        if len(fields) != width:
            raise ProbdiffError(f"{spec!r} line {line}: {len(fields)} columns, expected {width}")
    values = _csv_matrix(rows, spec, header)
    label_col = _label_column(header, spec)
    meta: dict = {}
    y = None
    fields = None
    if header is not None:
        if len(set(header)) != len(header):
            raise ProbdiffError(f"{spec!r} has repeated column names: {', '.join(header)}")
        fields = {h: values[:, i].copy() for i, h in enumerate(header)}
    if label_col is not None:
        y = values[:, label_col]
        values = np.delete(values, label_col, axis=1)
        if not np.array_equal(y, np.round(y)):  # a numeric target, not class labels
            y = None
    if header is not None:
        meta["columns"] = [h for i, h in enumerate(header) if i != label_col]
    if values.shape[1] == 0:
        raise ProbdiffError(f"{spec!r} has no feature columns")
    ds = _finish(values, y, spec, "vector", spec, meta=meta)
    return ds if fields is None else Dataset(ds.x, ds.y, ds.name, ds.kind, None, ds.meta,
                                             _finite_fields(fields, spec))


def _read_csv_rows(path: Path, spec: str) -> list[tuple[int, list[str]]]:
    """Non-blank rows of a CSV file with their line numbers, fields stripped."""
    try:
        with open(path, newline="", encoding="utf-8-sig") as handle:
            reader = csv.reader(handle)
            rows = []
            for fields in reader:
                fields = [f.strip() for f in fields]
                if any(fields):
                    rows.append((reader.line_num, fields))
    except (UnicodeDecodeError, csv.Error, OSError) as err:
        raise ProbdiffError(f"cannot read {spec!r} as CSV text: {_one_line(err)}") from None
    return rows


def _is_number(text: str) -> bool:
    """Whether ``text`` parses as a float."""
    try:
        float(text)
    except ValueError:
        return False
    return True


def _csv_matrix(rows: list[tuple[int, list[str]]], spec: str, header: list[str] | None) -> np.ndarray:
    """The CSV body as a float64 matrix; names the first non-numeric cell on failure."""
    try:
        return np.array([fields for _, fields in rows], dtype=np.float64)
    except ValueError:
        pass
    for line, fields in rows:
        for col, text in enumerate(fields):
            if not _is_number(text):
                column = header[col] if header is not None else str(col + 1)
                raise ProbdiffError(
                    f"{spec!r} line {line}, column {column!r}: non-numeric value {text!r}"
                )
    raise ProbdiffError(f"{spec!r}: cannot parse as a numeric table")  # pragma: no cover


def _finite_fields(fields: dict[str, np.ndarray], spec: str) -> dict[str, np.ndarray]:
    for key, value in fields.items():
        _check_finite(value, spec, key)
    return fields


def _label_column(header: list[str] | None, spec: str) -> int | None:
    """Index of the header column named ``y`` or ``label`` (case-insensitive), if any."""
    if header is None:
        return None
    found = [i for i, h in enumerate(header) if h.lower() in ("y", "label")]
    if len(found) > 1:
        names = ", ".join(repr(header[i]) for i in found)
        raise ProbdiffError(f"{spec!r} has several label columns: {names}")
    return found[0] if found else None


def _load_png_folder(path: Path, spec: str) -> Dataset:
    """Every ``*.png`` in a folder (sorted): grayscale ``(N,1,H,W)``, or ``(N,3,H,W)`` if all RGB."""
    files = sorted(p for p in path.iterdir() if p.suffix.lower() == ".png" and p.is_file())
    if not files:
        raise ProbdiffError(f"no PNG images in folder {spec!r}")
    images = [_open_png(p) for p in files]
    rgb = all(im.mode == "RGB" for im in images)
    first = images[0].size
    for p, im in zip(files, images):
        if im.size != first:
            raise ProbdiffError(
                f"images in {spec!r} differ in size: {files[0].name!r} is {first[0]}x{first[1]} "
                f"but {p.name!r} is {im.size[0]}x{im.size[1]} (width x height)"
            )
    if rgb:
        arrays = [np.asarray(im).transpose(2, 0, 1) for im in images]
    else:
        arrays = [np.asarray(im.convert("L"))[None] for im in images]
    x = np.stack(arrays)
    meta = dict(_INTEGER_8BIT) | {"files": [p.name for p in files]}
    return _finish(x, None, spec, "image", spec, meta=meta)


def _open_png(path: Path) -> Any:
    """Decode one image fully with PIL, or raise a ProbdiffError naming it."""
    from PIL import Image

    try:
        with Image.open(path) as im:
            im.load()
            return im.copy()
    except Exception as err:
        raise ProbdiffError(f"cannot decode image {str(path)!r}: {_one_line(err)}") from None


# ----------------------------------------------------------------------------- validation


def _check_numeric(arr: np.ndarray, where: str, what: str) -> None:
    """Reject non-numeric (object, string, complex, ...) arrays."""
    if arr.dtype == np.bool_:
        return
    if not np.issubdtype(arr.dtype, np.integer) and not np.issubdtype(arr.dtype, np.floating):
        raise ProbdiffError(f"{what} in {where!r} is not numeric (dtype {arr.dtype})")


def _check_finite(arr: np.ndarray, where: str, what: str) -> None:
    """Reject NaN / inf, naming how many entries and the first row holding one."""
    bad = ~np.isfinite(arr)
    if bad.any():
        rows = bad.reshape(len(arr), -1).any(axis=1)
        count, first = int(bad.sum()), int(np.argmax(rows))
        raise ProbdiffError(f"{what} in {where!r} has {count} NaN/inf entries (first in row {first})")


def _labels(y: np.ndarray | None, n: int, where: str) -> np.ndarray | None:
    """Labels as a 1-D int64 array of length ``n``."""
    if y is None:
        return None
    y = np.asarray(y)
    _check_numeric(y, where, "y")
    if y.ndim != 1:
        raise ProbdiffError(f"y in {where!r} must be 1-D, got shape {y.shape}")
    if len(y) != n:
        raise ProbdiffError(f"y in {where!r} has {len(y)} entries but x has {n} rows")
    _check_finite(y.astype(np.float64), where, "y")
    as_int = y.astype(np.int64)
    if not np.array_equal(as_int, y):
        raise ProbdiffError(f"y in {where!r} must hold integer labels")
    return as_int


def _finish(
    x: Any,
    y: Any,
    where: str,
    kind: str,
    name: str,
    *,
    meta: dict | None = None,
    log_prob: Callable[[np.ndarray], np.ndarray] | None = None,
) -> Dataset:
    """Validate and convert to a :class:`Dataset` (float64, C-contiguous ``x``)."""
    x = np.asarray(x)
    _check_numeric(x, where, "x")
    if x.shape[0] == 0:
        raise ProbdiffError(f"{where!r} holds no data (0 rows)")
    if 0 in x.shape[1:]:
        raise ProbdiffError(f"x in {where!r} has an empty event shape {x.shape[1:]}")
    x = np.ascontiguousarray(x, dtype=np.float64)
    _check_finite(x, where, "x")
    labels = _labels(y, len(x), where)
    return Dataset(x, labels, name, kind, log_prob, dict(meta or {}))


def as_dataset(data: Any, *, seed: int = 0) -> Dataset:
    """A :class:`Dataset` from what the Python API accepts: a data spec (built-in name or
    path), one array (rows first), a dict of named arrays, or a Dataset."""
    if isinstance(data, Dataset):
        return data
    if isinstance(data, (str, os.PathLike)):
        return load_dataset(data, seed=seed)
    if isinstance(data, dict):
        return dataset_from_arrays(data)
    if hasattr(data, "__array__") or isinstance(data, (list, tuple)):
        x = np.asarray(data)
        return _finish_single(x) if x.ndim >= 2 else _from_array(x, None, "array")
    raise ProbdiffError(f"data must be a spec, an array or a dict of arrays, got {type(data).__name__}")


def _finish_single(x: np.ndarray) -> Dataset:
    """One array of rows given in Python: kept with its own shape for a user's model."""
    ds = _from_array(x, None, "array")
    if x.dtype.kind in "iub":  # counts and labels keep their dtype
        return Dataset(ds.x, None, ds.name, ds.kind, None, {**ds.meta, "single": True},
                       {"x": np.ascontiguousarray(x)})
    return ds


def data_sha256(path: str | os.PathLike) -> str:
    """SHA-256 of a data file, or of a PNG folder (its sorted PNG names and contents)."""
    import hashlib

    path = Path(path)
    digest = hashlib.sha256()
    if path.is_dir():
        for p in sorted(q for q in path.iterdir() if q.suffix.lower() == ".png" and q.is_file()):
            digest.update(p.name.encode() + b"\0" + p.read_bytes())
    else:
        with open(path, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


# ----------------------------------------------------------------------------- splits and batches


def train_test_split(ds: Dataset, test_fraction: float, seed: int) -> tuple[Dataset, Dataset]:
    """Seeded random split into (train, test); each keeps the original row order.

    The test set has ``round(test_fraction * N)`` rows (at least one when the fraction is
    positive); ``test_fraction == 0`` gives an empty test set. The training set must keep at
    least one row.
    """
    seed = _check_seed(seed)
    try:
        fraction = float(test_fraction)
    except (TypeError, ValueError):
        raise ProbdiffError(f"test fraction must be a number, got {test_fraction!r}") from None
    if not 0.0 <= fraction < 1.0:
        raise ProbdiffError(f"test fraction must be in [0, 1), got {test_fraction!r}")
    n_test = int(round(fraction * ds.n))
    if fraction > 0 and n_test == 0:
        n_test = 1
    if ds.n - n_test < 1:
        raise ProbdiffError(
            f"test fraction {test_fraction!r} of {ds.n} data points leaves no training data"
        )
    perm = np.random.default_rng(seed).permutation(ds.n)
    return ds.subset(np.sort(perm[n_test:])), ds.subset(np.sort(perm[:n_test]))


class Minibatches:
    """Seeded, epoch-shuffled minibatches of indices ``0..n-1``.

    Epoch ``e`` uses the permutation drawn from ``(seed, e)``, so the stream depends only on
    ``(n, batch_size, seed)``; the last batch of an epoch may be smaller. ``batch_size`` None
    or ``>= n`` means the full batch, in order, every time. ``next_batch()`` crosses epochs;
    ``for batch in mb`` runs to the end of the current epoch (a full epoch when started at
    an epoch boundary) and both share one cursor, saved by ``state_dict()``.
    """

    def __init__(self, n: int, batch_size: int | None, seed: int) -> None:
        self.n = _positive_int(n, "number of data points")
        self.batch_size = None if batch_size is None else _positive_int(batch_size, "batch size")
        self.seed = _check_seed(seed)
        self.epoch = 0
        self._pos = 0  # index of the next batch within the epoch
        self._perm: np.ndarray | None = None

    @property
    def full_batch(self) -> bool:
        """Whether every batch is the whole data set."""
        return self.batch_size is None or self.batch_size >= self.n

    def __len__(self) -> int:
        """Batches per epoch."""
        return 1 if self.full_batch else -(-self.n // self.batch_size)

    def __iter__(self) -> Iterator[np.ndarray]:
        """The remaining batches of the current epoch."""
        epoch = self.epoch
        while self.epoch == epoch:
            yield self.next_batch()

    def next_batch(self) -> np.ndarray:
        """The next index array, moving on to the next epoch after the last batch."""
        if self.full_batch:
            batch = np.arange(self.n)
        else:
            perm = self._permutation()
            batch = perm[self._pos * self.batch_size : (self._pos + 1) * self.batch_size].copy()
        self._pos += 1
        if self._pos >= len(self):
            self.epoch += 1
            self._pos = 0
            self._perm = None
        return batch

    def _permutation(self) -> np.ndarray:
        """The current epoch's permutation (cached)."""
        if self._perm is None:
            self._perm = np.random.default_rng([self.seed, self.epoch]).permutation(self.n)
        return self._perm

    def state_dict(self) -> dict[str, int | None]:
        """JSON-friendly cursor: settings plus epoch and batch position."""
        return {"n": self.n, "batch_size": self.batch_size, "seed": self.seed,
                "epoch": self.epoch, "position": self._pos}

    def load_state_dict(self, state: dict) -> None:
        """Resume from :meth:`state_dict`; the settings must match this instance's."""
        missing = {"n", "batch_size", "seed", "epoch", "position"} - set(state)
        if missing:
            raise ProbdiffError(f"minibatch state lacks {', '.join(sorted(missing))}")
        for key in ("n", "batch_size", "seed"):
            if state[key] != getattr(self, key):
                raise ProbdiffError(
                    f"minibatch state was saved with {key}={state[key]!r}, not {getattr(self, key)!r}"
                )
        epoch, position = int(state["epoch"]), int(state["position"])
        if epoch < 0 or not 0 <= position < len(self):
            raise ProbdiffError(f"minibatch state has a bad cursor: epoch {epoch}, position {position}")
        self.epoch, self._pos, self._perm = epoch, position, None


def _positive_int(value: Any, what: str) -> int:
    """``value`` as an int >= 1."""
    if isinstance(value, bool):
        raise ProbdiffError(f"{what} must be a positive integer, got {value!r}")
    try:
        value = operator.index(value)
    except TypeError:
        raise ProbdiffError(f"{what} must be a positive integer, got {value!r}") from None
    if value < 1:
        raise ProbdiffError(f"{what} must be a positive integer, got {value}")
    return value
