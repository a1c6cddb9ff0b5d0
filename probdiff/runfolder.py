"""The run folder of DESIGN.md: config.json, metrics.json, checkpoint, inference_data.nc, figures.

Every file is written atomically (a temporary file in the same folder, then ``os.replace``), so
a run stopped at any moment leaves either the old or the new version of each file. A run is
complete when ``config.json`` says ``"status": "complete"``; a folder that holds anything is
never reused without ``--resume``.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

from probdiff import treefile
from probdiff.errors import ProbdiffError

CONFIG, METRICS, CHECKPOINT, IDATA = "config.json", "metrics.json", "checkpoint", "inference_data.nc"


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` so that readers see the old file or the new one, never half.
    The file gets the permissions any new file gets (``0o666`` less the umask), not the
    owner-only ones of a temporary file."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


class RunFolder:
    """A folder holding one fit; open it with :meth:`new`, :meth:`resume` or :meth:`existing`."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)

    # -- opening ------------------------------------------------------------------------
    @classmethod
    def check_new(cls, path: str | os.PathLike) -> "RunFolder":
        """Validate that ``path`` can hold a new run, without creating anything yet."""
        run = cls(path)
        if run.path.exists() and not run.path.is_dir():
            raise ProbdiffError(f"--out {run.path} is a file, not a folder")
        if run.path.is_dir() and any(run.path.iterdir()):
            raise ProbdiffError(f"--out {run.path} already holds files; pass --resume to continue "
                                "that run, or choose a new folder")
        return run

    @classmethod
    def existing(cls, path: str | os.PathLike) -> "RunFolder":
        """An existing run folder (complete or not); error if there is none."""
        run = cls(path)
        if not (run.path / CONFIG).is_file():
            raise ProbdiffError(f"{run.path} is not a probdiff run folder (no {CONFIG})")
        return run

    def create(self) -> None:
        self.path.mkdir(parents=True, exist_ok=True)

    # -- files --------------------------------------------------------------------------
    def file(self, name: str) -> Path:
        return self.path / name

    def write_json(self, name: str, obj: Any) -> None:
        atomic_write(self.path / name, (json.dumps(obj, indent=2, sort_keys=True, default=_json_default)
                                        + "\n").encode())

    def read_json(self, name: str) -> dict:
        try:
            return json.loads((self.path / name).read_text())
        except FileNotFoundError:
            raise ProbdiffError(f"{self.path / name} is missing") from None
        except json.JSONDecodeError as e:
            raise ProbdiffError(f"{self.path / name} is not valid JSON: {e}") from None

    @property
    def config(self) -> dict:
        return self.read_json(CONFIG)

    @property
    def complete(self) -> bool:
        return (self.path / CONFIG).is_file() and self.config.get("status") == "complete"

    def metrics(self) -> dict:
        return self.read_json(METRICS) if (self.path / METRICS).is_file() else {}

    def update_metrics(self, values: dict) -> dict:
        merged = {**self.metrics(), **values}
        self.write_json(METRICS, merged)
        return merged

    def set_status(self, status: str) -> None:
        self.write_json(CONFIG, {**self.config, "status": status})

    def save_checkpoint(self, state: dict) -> None:
        """Write the fitting loop's state as plain data (:mod:`probdiff.treefile`: arrays and
        JSON, nothing that can run code when read)."""
        atomic_write(self.path / CHECKPOINT, treefile.dumps(state))

    def load_checkpoint(self) -> dict | None:
        path = self.path / CHECKPOINT
        if not path.is_file():
            return None
        return treefile.loads(path.read_bytes(), where=str(path))

    def save_inference_data(self, idata) -> None:
        """Write the ArviZ InferenceData to netCDF through a temporary file."""
        fd, tmp = tempfile.mkstemp(dir=self.path, prefix=f".{IDATA}.", suffix=".tmp")
        os.close(fd)
        try:
            idata.to_netcdf(tmp)
            os.chmod(tmp, 0o666 & ~_umask())
            os.replace(tmp, self.path / IDATA)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def load_inference_data(self):
        import arviz as az
        path = self.path / IDATA
        if not path.is_file():
            raise ProbdiffError(f"{path} is missing: the run did not finish")
        return az.from_netcdf(path)


def _json_default(obj):
    import numpy as np
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"cannot write {type(obj).__name__} to JSON")
