"""Data from files: ``.npy``, ``.npz`` (one array ``x``, or several named arrays), ``.csv``
(a header names its columns) and folders of PNG images; and the content hash a run records.

A ``.npy`` file of rows or a PNG folder larger than STREAM_BYTES (as float64), or any with
``stream=True``, is streamed: its rows stay on disk and are read per minibatch
(:mod:`probdiff.data.rows`), after one pass at load that checks every value is finite."""

from __future__ import annotations

import csv
import os
from pathlib import Path

import numpy as np

from probdiff.data.builtin import BUILTIN_DATASETS
from probdiff.data.dataset import (
    _INTEGER_8BIT,
    Dataset,
    _check_finite,
    _check_numeric,
    _finish,
    dataset_from_arrays,
)
from probdiff.data.rows import NpyReader, PngReader, Rows
from probdiff.errors import ProbdiffError, first_line

STREAM_BYTES = 1 << 30  # data larger than this (as float64) is streamed from disk


def _load_path(spec: str, stream: bool | None = None) -> Dataset:
    """Dispatch on the file type of ``spec``; ``stream`` True streams a ``.npy`` file of rows
    or a PNG folder, None streams those larger than STREAM_BYTES, False loads everything."""
    path = Path(spec).expanduser()
    if not path.exists():
        raise ProbdiffError(
            f"no such data file or built-in data set: {spec!r} "
            f"(built-ins: {', '.join(BUILTIN_DATASETS)})"
        )
    if path.is_dir():
        return _load_png_folder(path, spec, stream)
    suffix = path.suffix.lower()
    if stream and suffix != ".npy":
        raise ProbdiffError(
            f"--stream reads .npy files and PNG folders, not {spec!r}: save the rows with "
            "np.save(path, x)"
        )
    if suffix == ".npz":
        return _npz_dataset(_read_npz(path, spec), spec)
    elif suffix == ".npy":
        if stream is not False:
            reader = NpyReader(path, spec)
            size = int(np.prod(reader.shape, dtype=np.int64)) * 8
            if stream and not 2 <= len(reader.shape) <= 4:
                reader.close()
                raise ProbdiffError(
                    f"--stream needs rows of 2 to 4 dimensions, (N, D) to (N, C, H, W); "
                    f"{spec!r} has shape {reader.shape}"
                )
            if 2 <= len(reader.shape) <= 4 and (stream or size > STREAM_BYTES):
                return _stream_npy(reader, spec)
            reader.close()
        x, y = _read_array(path, spec, ".npy"), None
    elif suffix == ".csv":
        return _load_csv(path, spec)
    else:
        raise ProbdiffError(
            f"unsupported data file {spec!r}: expected .npz, .npy, .csv or a folder of PNG images"
        )
    return _from_array(x, y, spec)


def _read_array(path: Path, spec: str, what: str) -> np.ndarray:
    """``np.load`` a ``.npy`` file without pickles."""
    try:
        with open(path, "rb") as handle:  # our handle, so a failed parse leaks no file
            arr = np.load(handle, allow_pickle=False)
    except Exception as err:
        raise ProbdiffError(f"cannot read {spec!r} as {what}: {first_line(err)}") from None
    if not isinstance(arr, np.ndarray):
        raise ProbdiffError(
            f"cannot read {spec!r} as {what}: it holds several arrays (an .npz archive?)"
        )
    return arr


def _read_npz(path: Path, spec: str) -> dict[str, np.ndarray]:
    """Every array of an ``.npz`` archive, by name."""
    with open(path, "rb") as handle:  # our handle, so a failed parse leaks no file
        try:
            archive = np.load(handle, allow_pickle=False)
        except Exception as err:
            raise ProbdiffError(f"cannot read {spec!r} as .npz: {first_line(err)}") from None
        if isinstance(archive, np.ndarray):
            raise ProbdiffError(
                f"cannot read {spec!r} as .npz: it holds a single array (an .npy file?)"
            )
        with archive:
            try:
                arrays = {k: archive[k] for k in archive.files}
            except Exception as err:
                reason = first_line(err)
                raise ProbdiffError(
                    f"cannot read arrays of {spec!r}: {reason} (non-numeric data?)"
                ) from None
    if not arrays:
        raise ProbdiffError(f"{spec!r} holds no arrays")
    return arrays


def _npz_dataset(arrays: dict[str, np.ndarray], spec: str) -> Dataset:
    """One array ``x`` as before; several arrays as named fields (``x``, when present, and
    integer labels ``y`` also serve the built-in models)."""
    if set(arrays) == {"x"}:
        return _from_array(arrays["x"], None, spec)
    return dataset_from_arrays(arrays, spec)


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


def _stream_npy(reader: NpyReader, spec: str) -> Dataset:
    """The rows of a ``.npy`` file, read on demand, after one pass checking they are finite."""
    _check_numeric(np.empty(0, reader.dtype), spec, "x")
    if reader.n == 0:
        raise ProbdiffError(f"{spec!r} holds no data (0 rows)")
    if 0 in reader.row_shape:
        raise ProbdiffError(f"x in {spec!r} has an empty event shape {reader.row_shape}")
    x = Rows(reader)
    if reader.dtype.kind == "f":
        _check_finite(x, spec, "x")
    if x.ndim == 3:
        x = x.reshape(x.n, 1, *x.row_shape)
    meta = dict(_INTEGER_8BIT) if reader.dtype == np.uint8 else {}
    return Dataset(x, None, spec, "vector" if x.ndim == 2 else "image", None, meta)


def _load_csv(path: Path, spec: str) -> Dataset:
    """A numeric CSV; a non-numeric first row is a header, whose ``y`` / ``label`` column is ``y``."""
    rows = _read_csv_rows(path, spec)
    header: list[str] | None = None
    if rows and not all(_is_number(v) for v in rows[0][1]):
        header = rows.pop(0)[1]
    if not rows:
        raise ProbdiffError(f"{spec!r} holds no data (0 rows)")
    width = len(header) if header is not None else len(rows[0][1])
    for line, cols in rows:
        if len(cols) != width:
            raise ProbdiffError(f"{spec!r} line {line}: {len(cols)} columns, expected {width}")
    values = _csv_matrix(rows, spec, header)
    label_col = _label_column(header, spec)
    meta: dict = {}
    y = None
    fields: dict[str, np.ndarray] | None = None
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
    return (
        ds
        if fields is None
        else Dataset(ds.x, ds.y, ds.name, ds.kind, None, ds.meta, _finite_fields(fields, spec))
    )


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
        raise ProbdiffError(f"cannot read {spec!r} as CSV text: {first_line(err)}") from None
    return rows


def _is_number(text: str) -> bool:
    """Whether ``text`` parses as a float."""
    try:
        float(text)
    except ValueError:
        return False
    return True


def _csv_matrix(
    rows: list[tuple[int, list[str]]], spec: str, header: list[str] | None
) -> np.ndarray:
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


def _load_png_folder(path: Path, spec: str, stream: bool | None = None) -> Dataset:
    """Every ``*.png`` in a folder (sorted): grayscale ``(N,1,H,W)``, or ``(N,3,H,W)`` if all
    RGB. Sizes and modes come from the headers; the images are decoded now, or per read when
    streamed (as ``stream`` says: None streams above STREAM_BYTES as float64)."""
    files = sorted(p for p in path.iterdir() if p.suffix.lower() == ".png" and p.is_file())
    if not files:
        raise ProbdiffError(f"no PNG images in folder {spec!r}")
    heads = [_png_header(p) for p in files]
    _same_size(files, [size for size, _ in heads], spec)
    rgb = all(mode == "RGB" for _, mode in heads)
    rows = Rows(PngReader(files, rgb, heads[0][0], spec))
    meta = dict(_INTEGER_8BIT) | {"files": [p.name for p in files]}
    if stream or (stream is None and rows.size * 8 > STREAM_BYTES):
        return Dataset(rows, None, spec, "image", None, meta)
    return _finish(rows.reader.read(np.arange(rows.n)), None, spec, "image", spec, meta=meta)


def _same_size(files: list[Path], sizes: list[tuple[int, int]], spec: str) -> None:
    """Every image the size of the first, or a one-line error naming one that is not."""
    first = sizes[0]
    for p, size in zip(files, sizes):
        if size != first:
            raise ProbdiffError(
                f"images in {spec!r} differ in size: {files[0].name!r} is {first[0]}x{first[1]} "
                f"but {p.name!r} is {size[0]}x{size[1]} (width x height)"
            )


def _png_header(path: Path) -> tuple[tuple[int, int], str]:
    """(size, mode) of a PNG from its header, or a ProbdiffError naming it."""
    from PIL import Image

    try:
        with Image.open(path) as im:
            return im.size, im.mode
    except Exception as err:
        raise ProbdiffError(f"cannot decode image {str(path)!r}: {first_line(err)}") from None


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
