"""The data set type: one array (``x``, its labels ``y``) or named arrays sharing their rows,
validated where it is made: numeric, finite, non-empty; plus the checks every reader shares."""

from __future__ import annotations

import math
import operator
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from probdiff.data.rows import Rows
from probdiff.errors import ProbdiffError

_INTEGER_8BIT = {"integer": True, "levels": 256, "low": 0.0, "high": 255.0}


_MAX_SEED = 2**32 - 1


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

    A streamed data set (``streamed``) has ``x`` as :class:`~probdiff.data.rows.Rows`: rows on
    disk, read when indexed; :meth:`loaded` reads a (small) subset into memory.
    """

    x: np.ndarray | Rows | None
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
        return int(len(next(iter((self.fields or {}).values()))))

    def require_x(self) -> np.ndarray | Rows:
        """``x``, or a one-line error for data the built-in models cannot read."""
        if self.x is None:
            fields = self.fields or {}
            if self.meta.get("single"):
                raise ProbdiffError(
                    f"x in {self.name!r} has shape {fields['x'].shape}: the built-in models "
                    "need at least 2-D: (N, D) for vectors or (N, C, H, W) for images"
                )
            raise ProbdiffError(
                f"data {self.name!r} holds the arrays {', '.join(fields)} and "
                "none named 'x': the built-in models need x"
            )
        return self.x

    @property
    def event_shape(self) -> tuple[int, ...]:
        """Shape of one data point."""
        return tuple(int(s) for s in self.require_x().shape[1:])

    @property
    def dim(self) -> int:
        """Number of scalar entries per data point."""
        return int(math.prod(self.event_shape))

    def flat(self) -> np.ndarray | Rows:
        """``x`` as ``(N, dim)`` (a view when ``x`` is contiguous)."""
        return self.require_x().reshape(self.n, self.dim)

    def arrays(self) -> np.ndarray | Rows | dict[str, np.ndarray]:
        """What a user's model is called with: the named arrays, or the one array as loaded."""
        if self.meta.get("single") and self.fields:
            return self.fields["x"]
        return dict(self.fields) if self.fields else self.require_x()

    @property
    def streamed(self) -> bool:
        """Whether the rows stay on disk (read per minibatch)."""
        return isinstance(self.x, Rows)

    def loaded(self) -> Dataset:
        """The same data set with every row in memory (itself where it is not streamed)."""
        if not isinstance(self.x, Rows):
            return self
        return Dataset(self.x.load(), self.y, self.name, self.kind, self.log_prob, self.meta)

    def subset(self, idx: Any) -> Dataset:
        """The rows ``idx`` (indices, boolean mask or slice) of every array, keeping name,
        kind, log_prob and meta (streamed rows stay on disk)."""
        if not isinstance(idx, slice):
            idx = np.asarray(idx)
            if idx.ndim == 0:
                idx = idx.reshape(1)
        y = None if self.y is None else self.y[idx]
        x = (
            self.x.subset(idx)
            if isinstance(self.x, Rows)
            else (None if self.x is None else self.x[idx])
        )
        fields = None if self.fields is None else {k: v[idx] for k, v in self.fields.items()}
        return Dataset(x, y, self.name, self.kind, self.log_prob, self.meta, fields)


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
        raise ProbdiffError(
            f"arrays in {name!r} differ in rows ({listed}): each needs one row per datum"
        )
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


def _check_numeric(arr: np.ndarray, where: str, what: str) -> None:
    """Reject non-numeric (object, string, complex, ...) arrays."""
    if arr.dtype == np.bool_:
        return
    if not np.issubdtype(arr.dtype, np.integer) and not np.issubdtype(arr.dtype, np.floating):
        raise ProbdiffError(f"{what} in {where!r} is not numeric (dtype {arr.dtype})")


def _check_finite(arr: Any, where: str, what: str) -> None:
    """Reject NaN / inf, naming how many entries and the first row holding one; ``arr`` is an
    array or streamed rows (checked block by block)."""
    start, count, first = 0, 0, None
    for block in arr.blocks() if isinstance(arr, Rows) else [arr]:
        if not block.size:
            continue
        bad = ~np.isfinite(block.reshape(len(block), -1))
        if first is None and bad.any():
            first = start + int(np.argmax(bad.any(axis=1)))
        count += int(bad.sum())
        start += len(block)
    if count:
        raise ProbdiffError(
            f"{what} in {where!r} has {count} NaN/inf entries (first in row {first})"
        )


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
