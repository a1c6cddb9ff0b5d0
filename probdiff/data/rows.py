"""Rows read on demand: a data set larger than memory, kept on disk and read a minibatch at a
time.

A :class:`Rows` stands where an in-memory array of rows would: it has ``shape``, ``ndim``,
``dtype`` and ``len``, and indexing it (a slice, integer indices, a boolean mask; NumPy, torch
or JAX) reads just those rows and returns a float64 array (or, once a backend has attached its
converter, the backend's tensor). Subsets compose index arrays and read nothing; maps (the
scaling a model applies, a reshape) run on each block as it is read. Whole-data statistics
(``mean``, ``var``, ``min``, ``max``) run over blocks of bounded size.

Two readers exist: :class:`NpyReader`, a ``.npy`` file read with positioned reads straight
into the rows asked for (the file's pages stay in the kernel's page cache, never in the
process: resident memory holds the rows in use, not the file), and :class:`PngReader`, a
folder of PNG images decoded per read.

What is not bounded: the row indices of the train/held-out split and of an epoch's shuffle,
8 bytes per row (as in any shuffled loader).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from probdiff.errors import ProbdiffError, first_line

BLOCK_BYTES = 32 << 20  # bytes (as float64) per block of a whole-data pass


class _Reader:
    """What a :class:`Rows` reads from: ``shape`` (rows first), ``dtype``, ``read(idx)``."""

    shape: tuple[int, ...]
    dtype: np.dtype
    spec: str  # the file or folder, as given

    @property
    def n(self) -> int:
        return self.shape[0]

    @property
    def row_shape(self) -> tuple[int, ...]:
        return self.shape[1:]

    def read(self, idx: np.ndarray) -> np.ndarray:
        """Rows ``idx`` (sorted, unique) as a new array."""
        raise NotImplementedError


class NpyReader(_Reader):
    """The rows of a C-ordered ``.npy`` file, read with positioned reads (``os.preadv``).

    Not through a memory map: a mapped file's pages count in the process's resident memory
    until released, and on recent kernels each scattered row faults in the page-cache folio
    around it (2 MiB: 128 rows of a minibatch could map 256 MiB); a file truncated under a
    map ends the process with SIGBUS, where a read returns short and is a clear error."""

    def __init__(self, path: Path, spec: str):
        self.spec = spec
        try:
            self.file = open(path, "rb")  # open for the reader's lifetime (see close)
            version = np.lib.format.read_magic(self.file)
            header = {
                (1, 0): np.lib.format.read_array_header_1_0,
                (2, 0): np.lib.format.read_array_header_2_0,
            }.get(version)
            if header is None:
                raise ValueError(f"unsupported .npy version {version}")
            shape, fortran, dtype = header(self.file)
            if dtype.hasobject:
                raise ValueError("it holds Python objects")
            if fortran and len(shape) > 1:
                raise ProbdiffError(
                    f"{spec!r} is stored in Fortran order: streamed rows need C order "
                    "(np.save(path, np.ascontiguousarray(x)))"
                )
            self.offset, self.fd = self.file.tell(), self.file.fileno()
            self.shape, self.dtype = tuple(int(s) for s in shape), dtype
            need = self.offset + int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
            if need > os.fstat(self.fd).st_size:
                raise ProbdiffError(f"cannot read {spec!r} as .npy: the file is truncated")
        except (OSError, ValueError) as err:
            self.close()
            raise ProbdiffError(f"cannot read {spec!r} as .npy: {first_line(err)}") from None
        except ProbdiffError:
            self.close()
            raise

    def close(self) -> None:
        """Close the file (rows read after this fail)."""
        if getattr(self, "file", None) is not None:
            self.file.close()

    __del__ = close  # a data set's reader closes with it

    def read(self, idx: np.ndarray) -> np.ndarray:
        """Rows ``idx`` (sorted, unique) as a new array: one read per run of consecutive rows,
        straight into the result."""
        out = np.empty((len(idx), *self.row_shape), self.dtype)
        if not len(idx):
            return out
        width = out[0].nbytes
        flat = out.data.cast("B")
        starts = np.concatenate([[0], np.flatnonzero(np.diff(idx) != 1) + 1])
        ends = np.append(starts[1:], len(idx))
        first = idx[starts]
        for c in range(0, len(starts), 4096):  # Python ints a chunk at a time
            chunk = zip(*(v[c : c + 4096].tolist() for v in (starts, ends, first)))
            for a, b, row in chunk:
                view = flat[a * width : b * width]
                if os.preadv(self.fd, [view], self.offset + row * width) != len(view):
                    raise ProbdiffError(f"{self.spec!r} changed while it was read (short read)")
        return out


class PngReader(_Reader):
    """A folder of same-sized PNG images, decoded per read: grayscale ``(1, H, W)`` rows, or
    ``(3, H, W)`` where every image is RGB (as :func:`probdiff.data.files` loads them)."""

    def __init__(self, files: list[Path], rgb: bool, size: tuple[int, int], spec: str):
        self.files, self.rgb, self.spec = files, rgb, spec
        width, height = size
        self.shape = (len(files), 3 if rgb else 1, height, width)
        self.dtype = np.dtype(np.uint8)

    def read(self, idx: np.ndarray) -> np.ndarray:
        out = np.empty((len(idx),) + self.row_shape, np.uint8)
        for i, row in enumerate(idx):
            im = _open_png(self.files[int(row)])
            if im.size != (self.shape[3], self.shape[2]):
                raise ProbdiffError(f"image {str(self.files[int(row)])!r} changed size")
            out[i] = np.asarray(im).transpose(2, 0, 1) if self.rgb else np.asarray(im.convert("L"))
        return out


def _open_png(path: Path) -> Any:
    """Decode one image fully with PIL, or raise a ProbdiffError naming it."""
    from PIL import Image

    try:
        with Image.open(path) as im:
            im.load()
            return im.copy()
    except Exception as err:
        raise ProbdiffError(f"cannot decode image {str(path)!r}: {first_line(err)}") from None


def _as_indices(idx: Any) -> Any:
    """A NumPy index from a NumPy, torch or JAX one (slices pass through)."""
    if isinstance(idx, (slice, int, np.integer, np.ndarray)):
        return idx
    if hasattr(idx, "detach"):  # torch
        return idx.detach().cpu().numpy()
    return np.asarray(idx)


class Rows:
    """Rows of a reader, read on demand (see the module docstring).

    ``index`` selects and orders the reader's rows (None: all, in order); ``maps`` run on each
    float64 block read, in order, giving rows of ``row_shape``; ``convert`` (a backend's
    array constructor) runs last on what indexing returns.
    """

    def __init__(
        self,
        reader: _Reader,
        index: np.ndarray | None = None,
        maps: tuple[Callable[[np.ndarray], np.ndarray], ...] = (),
        row_shape: tuple[int, ...] | None = None,
        convert: Callable[[np.ndarray], Any] | None = None,
    ):
        self.reader, self.index, self.maps, self.convert = reader, index, maps, convert
        self.row_shape = tuple(reader.row_shape if row_shape is None else row_shape)

    # -- the array-like surface --------------------------------------------------------
    @property
    def n(self) -> int:
        return self.reader.n if self.index is None else len(self.index)

    def __len__(self) -> int:
        return self.n

    @property
    def shape(self) -> tuple[int, ...]:
        return (self.n, *self.row_shape)

    @property
    def ndim(self) -> int:
        return 1 + len(self.row_shape)

    @property
    def size(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64))

    @property
    def dtype(self) -> np.dtype:
        return np.dtype(np.float64)

    def __repr__(self) -> str:
        return f"Rows(shape={self.shape}, source={self.reader.spec!r})"

    def __getitem__(self, idx: Any) -> Any:
        """The rows ``idx`` read now (float64, then ``convert``)."""
        rows = self._rows(_as_indices(idx))
        block = self._read(rows)
        return block if self.convert is None else self.convert(block)

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        """Every row, read into memory (what bounded memory avoids; small data only)."""
        out = self.load()
        return out if dtype is None else out.astype(dtype)

    def load(self) -> np.ndarray:
        """Every row as one float64 array."""
        return self._read(np.arange(self.n))

    # -- lazy views ----------------------------------------------------------------------
    def subset(self, idx: Any) -> Rows:
        """The rows ``idx`` without reading them."""
        rows = self._rows(_as_indices(idx))
        return Rows(self.reader, self._base(rows), self.maps, self.row_shape, self.convert)

    def map(self, fn: Callable[[np.ndarray], np.ndarray]) -> Rows:
        """Rows with ``fn`` applied to each block read (rows in, rows out, one per row)."""
        probe = fn(self._read(np.arange(min(self.n, 1))))
        return Rows(self.reader, self.index, (*self.maps, fn), probe.shape[1:], self.convert)

    def reshape(self, *shape: Any) -> Rows:
        """Rows reshaped to ``(n, ...)`` (the first entry must be n or -1)."""
        shape = tuple(shape[0]) if len(shape) == 1 and isinstance(shape[0], tuple) else shape
        if shape[0] not in (self.n, -1):
            raise ProbdiffError(f"cannot reshape {self.n} rows to {shape}")
        rest = tuple(int(s) for s in shape[1:])
        return self.map(lambda b: b.reshape((len(b), *rest)))

    def with_convert(self, convert: Callable[[np.ndarray], Any] | None) -> Rows:
        """The same rows, returned by indexing through ``convert``."""
        return Rows(self.reader, self.index, self.maps, self.row_shape, convert)

    # -- whole-data passes -----------------------------------------------------------------
    def blocks(self) -> Iterator[np.ndarray]:
        """Every row, in order, in float64 blocks of about BLOCK_BYTES."""
        per_row = max(1, int(np.prod(self.row_shape, dtype=np.int64)) * 8)
        rows = max(1, BLOCK_BYTES // per_row)
        for start in range(0, self.n, rows):
            yield self._read(np.arange(start, min(start + rows, self.n)))

    def min(self) -> float:
        return float(min(b.min() for b in self.blocks()))

    def max(self) -> float:
        return float(max(b.max() for b in self.blocks()))

    def mean(self, axis: int = 0) -> np.ndarray:
        return self._moments(axis)[0]

    def var(self, axis: int = 0) -> np.ndarray:
        return self._moments(axis)[1]

    def _moments(self, axis: int) -> tuple[np.ndarray, np.ndarray]:
        """Mean and (population) variance over rows, merging blocks by Chan et al.'s update."""
        if axis != 0:
            raise ProbdiffError("streamed rows reduce over rows only (axis 0)")
        count, mean, m2 = 0, np.zeros(self.row_shape), np.zeros(self.row_shape)
        for b in self.blocks():
            k, bm = len(b), b.mean(0)
            delta = bm - mean
            m2 = m2 + ((b - bm) ** 2).sum(0) + delta**2 * count * k / (count + k)
            mean = mean + delta * k / (count + k)
            count += k
        return mean, m2 / count

    # -- internals -------------------------------------------------------------------------
    def _rows(self, idx: Any) -> np.ndarray:
        """Positions (into this view) selected by ``idx``."""
        if isinstance(idx, slice):
            return np.arange(*idx.indices(self.n))
        idx = np.asarray(idx)
        if idx.dtype == np.bool_:
            if idx.shape != (self.n,):
                raise IndexError(f"a boolean mask of shape {idx.shape} for {self.n} rows")
            return np.flatnonzero(idx)
        if idx.ndim == 0:
            idx = idx.reshape(1)
        low, high = (int(idx.min()), int(idx.max())) if idx.size else (0, 0)
        if low < -self.n or high >= self.n:
            raise IndexError(f"row index out of range for {self.n} rows")
        idx = idx.astype(np.int64, copy=False)
        return np.where(idx < 0, idx + self.n, idx) if low < 0 else idx

    def _base(self, rows: np.ndarray) -> np.ndarray:
        return rows if self.index is None else self.index[rows]

    def _read(self, rows: np.ndarray) -> np.ndarray:
        """Rows at positions ``rows`` of this view: read in file order, returned in ``rows``'
        order, as float64 with the maps applied."""
        base = self._base(rows)
        if len(base) < 2 or bool(np.all(base[1:] > base[:-1])):  # sorted, unique: as read
            block = np.asarray(self.reader.read(base), dtype=np.float64)
        else:
            unique, back = np.unique(base, return_inverse=True)
            raw = self.reader.read(unique)
            block = np.asarray(raw, dtype=np.float64)[back.reshape(-1)]
        for fn in self.maps:
            block = fn(block)
        return block


def is_rows(data: Any) -> bool:
    """Whether ``data`` (one array or named arrays) holds rows read on demand."""
    if isinstance(data, dict):
        return any(isinstance(v, Rows) for v in data.values())
    return isinstance(data, Rows)


def spread_rows(n: int, k: int) -> np.ndarray:
    """``min(n, k)`` row positions spread evenly over ``0..n-1`` (a sample of a file that may
    be sorted, read without a shuffle)."""
    if k >= n:
        return np.arange(n)
    return np.unique(np.linspace(0, n - 1, k).round().astype(np.int64))
