"""The run folder of DESIGN.md: config.json, metrics.json, checkpoint, inference_data.nc, figures.

Every file is written atomically (a uniquely named temporary file ``.NAME.XXXX.tmp`` in the same
folder, then ``os.replace``), so a run stopped at any moment leaves either the old or the new
version of each file; leftover temporaries are removed the next time a command takes the
folder's lock. One writer at a time: commands that write take an OS file lock on ``.lock``,
which the kernel releases when its holder dies, so a killed process never leaves a stale lock.

A run is complete when ``config.json`` says ``"status": "complete"``; ``"failed"`` (with its
reason under ``"error"``) and ``"interrupted"`` runs keep their last checkpoint for
``--resume``. Every file is validated when read: a corrupt or foreign file is a one-line error
naming it.
"""

from __future__ import annotations

import contextlib
import datetime
import errno
import fcntl
import json
import os
import signal
import socket
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from probdiff import treefile
from probdiff.errors import ProbdiffError

CONFIG, METRICS, CHECKPOINT, IDATA = (
    "config.json",
    "metrics.json",
    "checkpoint",
    "inference_data.nc",
)
PARAMS = "params.npz"
ARTEFACTS = "artefacts.npz"
LOCK = ".lock"
STATUSES = ("running", "complete", "failed", "interrupted")
# what a folder may hold and still count as empty (a fit killed before its first config write)
LEFTOVERS = (LOCK, "code", "data.npz")


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def temporary(path: Path) -> Path:
    """A unique temporary name beside ``path`` (``.NAME.XXXX.tmp``), created empty."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    return Path(tmp)


def publish(tmp: Path, path: Path) -> None:
    """Move a finished temporary file into place, with the permissions any new file gets."""
    os.chmod(tmp, 0o666 & ~_umask())
    os.replace(tmp, path)


_WRITES: dict[str, int] = {}


def _fault_point(name: str) -> None:
    """Fault injection for the test suite: ``PROBDIFF_FAULT_KILL=NAME:N`` kills this process
    (SIGKILL) at its N-th write of a file NAME, after the temporary file is written and before
    it replaces the old one. Unset (always, outside tests), it costs one lookup."""
    spec = os.environ.get("PROBDIFF_FAULT_KILL")
    if not spec:
        return
    target, _, count = spec.rpartition(":")
    if target == name:
        _WRITES[name] = _WRITES.get(name, 0) + 1
        if str(_WRITES[name]) == count:
            os.kill(os.getpid(), signal.SIGKILL)


def atomic_write(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` so that readers see the old file or the new one, never half."""
    tmp = temporary(path)
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        _fault_point(path.name)
        publish(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


class RunFolder:
    """A folder holding one fit; see :meth:`check_new`, :meth:`existing` and :meth:`lock`."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)

    # -- opening ------------------------------------------------------------------------
    @classmethod
    def check_new(cls, path: str | os.PathLike) -> RunFolder:
        """Validate that ``path`` can hold a new run, without creating anything yet."""
        run = cls(path)
        if run.path.exists() and not run.path.is_dir():
            raise ProbdiffError(f"--out {run.path} is a file, not a folder")
        parent = next((p for p in [run.path, *run.path.parents] if p.exists()), None)
        if parent is not None and not parent.is_dir():
            raise ProbdiffError(f"--out {run.path}: {parent} is a file, not a folder")
        if parent is not None and not os.access(parent, os.W_OK | os.X_OK):
            raise ProbdiffError(f"--out {run.path}: no permission to write in {parent}")
        run.require_empty()
        return run

    def require_empty(self) -> None:
        """A one-line error unless the folder holds nothing of value (files of a fit killed
        before it wrote its first config are leftovers, not value)."""
        if not self.path.is_dir():
            return
        if (self.path / CONFIG).exists():
            raise ProbdiffError(
                f"--out {self.path} already holds a run; pass --resume to continue "
                "it, or choose a new folder"
            )
        other = [
            p.name for p in self.path.iterdir() if p.name not in LEFTOVERS and not _is_temporary(p)
        ]
        if other:
            raise ProbdiffError(
                f"--out {self.path} already holds files ({', '.join(sorted(other)[:3])}"
                f"{', ...' if len(other) > 3 else ''}); choose a new folder"
            )

    @classmethod
    def existing(cls, path: str | os.PathLike) -> RunFolder:
        """An existing run folder (complete or not); error if there is none."""
        run = cls(path)
        if not run.path.is_dir():
            raise ProbdiffError(f"{run.path} is not a folder")
        if not (run.path / CONFIG).is_file():
            raise ProbdiffError(f"{run.path} is not a probdiff run folder (no {CONFIG})")
        return run

    def create(self) -> bool:
        """Make the folder (and its parents); True if it did not exist before."""
        existed = self.path.is_dir()
        try:
            self.path.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise ProbdiffError(f"cannot create --out {self.path}: {e.strerror}") from None
        return not existed

    @contextlib.contextmanager
    def lock(self, command: str):
        """Hold the folder's lock for ``command``; a second writer gets a one-line error naming
        the holder. Leftover temporary files are removed once the lock is held."""
        path = self.path / LOCK
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666 & ~_umask())
        except OSError as e:
            raise ProbdiffError(f"cannot lock {self.path}: {e.strerror}") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            holder = (
                os.read(fd, 400).decode(errors="replace").strip()
                if e.errno in (errno.EWOULDBLOCK, errno.EAGAIN)
                else ""
            )
            os.close(fd)
            raise ProbdiffError(
                f"{self.path} is in use by {holder or 'another process'}; wait "
                "for it to finish or stop it"
            ) from None
        try:
            since = datetime.datetime.now().isoformat(timespec="seconds")
            os.ftruncate(fd, 0)
            os.pwrite(
                fd,
                f"pid {os.getpid()} on {socket.gethostname()} "
                f"(probdiff {command}, since {since})".encode(),
                0,
            )
            self.clean_temporaries()
            yield self
        finally:
            with contextlib.suppress(OSError):
                os.ftruncate(fd, 0)
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)

    def clean_temporaries(self) -> None:
        """Remove the temporary files of writes that a killed process never finished."""
        for folder in (self.path, self.path / "code", self.path / "samples"):
            if folder.is_dir():
                for p in folder.iterdir():
                    if _is_temporary(p):
                        p.unlink(missing_ok=True)

    def discard(self, created: bool) -> None:
        """Remove what a failed new fit wrote (nothing of value): the folder itself if the fit
        created it, else its contents."""
        import shutil

        if created:
            shutil.rmtree(self.path, ignore_errors=True)
            return
        for p in self.path.iterdir():
            if p.is_dir():
                shutil.rmtree(p, ignore_errors=True)
            else:
                p.unlink(missing_ok=True)

    # -- files --------------------------------------------------------------------------
    def file(self, name: str) -> Path:
        return self.path / name

    def write_json(self, name: str, obj: Any) -> None:
        atomic_write(
            self.path / name,
            (json.dumps(obj, indent=2, sort_keys=True, default=_json_default) + "\n").encode(),
        )

    def read_json(self, name: str) -> dict:
        path = self.path / name
        try:
            value = json.loads(path.read_text())
        except FileNotFoundError:
            raise ProbdiffError(f"{path} is missing") from None
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise ProbdiffError(f"{path} is not valid JSON: {e}") from None
        except OSError as e:
            raise ProbdiffError(f"cannot read {path}: {e.strerror}") from None
        if not isinstance(value, dict):
            raise ProbdiffError(f"{path} holds a {type(value).__name__}, not a JSON object")
        return value

    @property
    def config(self) -> dict:
        config = self.read_json(CONFIG)
        where = self.path / CONFIG
        for key, kind in (("request", dict), ("data", dict), ("status", str)):
            if not isinstance(config.get(key), kind):
                raise ProbdiffError(
                    f"{where} is not a probdiff config: {key!r} is missing or not a {kind.__name__}"
                )
        if config["status"] not in STATUSES:
            raise ProbdiffError(f"{where}: unknown status {config['status']!r}")
        if config.get("code") is not None and not isinstance(config["code"], dict):
            raise ProbdiffError(f"{where}: 'code' is not a JSON object")
        if config.get("history") is not None and not isinstance(config["history"], list):
            raise ProbdiffError(f"{where}: 'history' is not a list")
        return config

    @property
    def complete(self) -> bool:
        return (self.path / CONFIG).is_file() and self.config.get("status") == "complete"

    def metrics(self) -> dict:
        return self.read_json(METRICS) if (self.path / METRICS).exists() else {}

    def update_metrics(self, values: dict) -> dict:
        merged = {**self.metrics(), **values}
        self.write_json(METRICS, merged)
        return merged

    def set_status(self, status: str, **extra: Any) -> None:
        config = {k: v for k, v in self.config.items() if k != "error"}
        self.write_json(CONFIG, {**config, "status": status, **extra})

    def save_checkpoint(self, state: dict) -> None:
        """Write the fitting loop's state as plain data (:mod:`probdiff.treefile`: arrays and
        JSON, nothing that can run code when read)."""
        atomic_write(self.path / CHECKPOINT, treefile.dumps(state))

    def load_checkpoint(self) -> dict | None:
        path = self.path / CHECKPOINT
        if not path.is_file():
            return None
        try:
            data = path.read_bytes()
        except OSError as e:
            raise ProbdiffError(f"cannot read {path}: {e.strerror}") from None
        return treefile.loads(data, where=str(path))

    def save_inference_data(self, idata) -> None:
        """Write the ArviZ InferenceData to netCDF through a temporary file."""
        tmp = temporary(self.path / IDATA)
        try:
            idata.to_netcdf(tmp)
            _fault_point(IDATA)
            publish(tmp, self.path / IDATA)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise

    def load_inference_data(self):
        import arviz as az

        path = self.path / IDATA
        if not path.is_file():
            raise ProbdiffError(f"{path} is missing: the run did not finish")
        try:
            return az.from_netcdf(path)
        except Exception as e:  # netCDF/HDF5 raise many types on a damaged file
            raise ProbdiffError(
                f"{path} is not a readable InferenceData file ({type(e).__name__})"
            ) from None


def save_params(run: RunFolder, params: dict[str, np.ndarray]) -> None:
    import io

    buf = io.BytesIO()
    np.savez(buf, **{k: np.asarray(v) for k, v in params.items()})  # type: ignore[arg-type]
    atomic_write(run.file(PARAMS), buf.getvalue())


def load_params(run: RunFolder) -> dict[str, np.ndarray]:
    path = run.file(PARAMS)
    if not path.is_file():
        raise ProbdiffError(f"{path} is missing: the run did not finish")
    try:
        with np.load(path, allow_pickle=False) as f:
            return {k: f[k] for k in f.files}
    except Exception as e:
        raise ProbdiffError(
            f"{path} is not a readable parameter file: {type(e).__name__}"
        ) from None


def save_artefacts(run: RunFolder, artefacts: dict[str, np.ndarray]) -> None:
    """The arrays a family's metrics kept for its figures, as ``artefacts.npz``."""
    import io

    buf = io.BytesIO()
    np.savez(buf, **{k: np.asarray(v) for k, v in artefacts.items()})  # type: ignore[arg-type]
    atomic_write(run.file(ARTEFACTS), buf.getvalue())


def load_artefacts(run: RunFolder) -> dict[str, np.ndarray]:
    """``artefacts.npz`` (empty where a run has none)."""
    path = run.file(ARTEFACTS)
    if not path.is_file():
        return {}
    try:
        with np.load(path, allow_pickle=False) as f:
            return {k: f[k] for k in f.files}
    except Exception as e:
        raise ProbdiffError(f"{path} is not a readable artefact file: {type(e).__name__}") from None


def _is_temporary(p: Path) -> bool:
    return p.name.startswith(".") and p.name.endswith(".tmp") and p.is_file()


def _json_default(obj):
    import numpy as np

    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"cannot write {type(obj).__name__} to JSON")
