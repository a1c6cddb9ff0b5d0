"""A finished (or resumable) run folder, opened: the one place that reads a run back.

``probdiff.open_run(DIR)`` and :func:`probdiff.fit` both give a :class:`Run`: its settings,
metrics, fitted parameters and ArviZ InferenceData, and (where its model may run) samples,
predictive draws and evaluation on other data. ``probdiff report``, ``sample`` and
``evaluate`` are built on it.

Opening a folder never runs code from it. A run of a built-in model rebuilds the model from
probdiff itself. A run of a user's model keeps a copy of its source under ``code/``; that copy
runs only with ``trust_model_code=True`` (``--trust-model-code``), and only if it still has
the SHA-256 recorded at fit time. Data recorded by path must still have its recorded SHA-256.
"""

from __future__ import annotations

import contextlib
import inspect
from collections.abc import Callable
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np

from probdiff.data import (
    Dataset,
    data_sha256,
    evaluation_subset,
    load_dataset,
    train_test_split,
)
from probdiff.errors import ProbdiffError
from probdiff.runfolder import RunFolder
from probdiff.seeds import derive


def shown_subset(train: Dataset, seed: int) -> Dataset:
    """The training rows a fit keeps draws for and draws figures of: all of them, or
    ``DRAW_ROWS`` random ones (the same for ``fit`` and ``report``), in memory."""
    from probdiff.program import DRAW_ROWS, row_subset

    rows = row_subset(train.n, DRAW_ROWS, seed)
    return (train if rows is None else train.subset(rows)).loaded()


def dataset_from_config(run: RunFolder, config: dict) -> Dataset:
    """The data a run was fitted on: the built-in spec, the run's own copy, or the recorded
    file (refused if its content changed since the fit)."""
    from probdiff.data.files import _npz_dataset, _read_npz

    where = run.file("config.json")
    record = config.get("data", {})
    try:
        seed = config["request"]["settings"]["seed"]
        if config["request"].get("data_seed") is not None:
            seed = config["request"]["data_seed"]
    except (KeyError, TypeError):
        raise ProbdiffError(f"{where} records no seed") from None
    spec = record.get("spec") or config["request"].get("data")
    if not isinstance(spec, str) or not all(
        isinstance(record.get(k, ""), str) for k in ("path", "sha256")
    ):
        raise ProbdiffError(f"{where} records no data it could be read from")
    if record.get("in_run"):
        path = run.file(spec)
        if not path.is_file():
            raise ProbdiffError(f"{path} is missing: the run's data went with it")
        return (
            _npz_dataset(_read_npz(path, str(path)), "arrays")
            if not record.get("single")
            else load_dataset(str(path))
        )
    if "path" in record:
        path = Path(record["path"])
        if not path.exists():
            raise ProbdiffError(f"the run's data {path} is missing")
        if data_sha256(path) != record.get("sha256"):
            raise ProbdiffError(
                f"the run's data {path} changed since the fit (SHA-256 differs): "
                "restore it, or evaluate on it with --data"
            )
        return load_dataset(str(path), seed=seed, stream=config["request"].get("stream"))
    return load_dataset(spec, seed=seed)


def code_from_config(
    run: RunFolder,
    config: dict,
    trust: bool,
    model: Callable | None = None,
    guide: Callable | None = None,
):
    """The user code of a run: ``model``/``guide`` given here, or the folder's copies (with
    ``trust``, and only if unchanged)."""
    from probdiff.usermodel import CodeRef, UserCode, file_sha256

    record = config["code"]
    refs: dict[str, Any] = {}
    for role, given in (("model", model), ("guide", guide)):
        entry = record.get(role)
        if given is not None:
            refs[role] = given
        elif entry is None:
            refs[role] = None
        elif "autoguide" in entry:
            refs[role] = entry["autoguide"]
        else:
            if not entry.get("reopen") or not entry.get("file"):
                raise ProbdiffError(
                    f"{run.path}'s {role} was a Python object that a file cannot rebuild: open it "
                    f"with probdiff.open_run(dir, {role}=...) to run it"
                )
            if not trust:
                raise ProbdiffError(
                    f"{run.path}'s model is code ({entry['file']}); it runs only with "
                    "--trust-model-code (open_run(..., trust_model_code=True))"
                )
            path = run.file(entry["file"])
            if not path.is_file() or file_sha256(path) != entry.get("sha256"):
                raise ProbdiffError(f"{path} is missing or changed since the fit (SHA-256 differs)")
            refs[role] = CodeRef(path.resolve(), entry["function"])
    if refs["model"] is None:
        raise ProbdiffError(f"{run.path} records no model")
    return UserCode(refs["model"], refs["guide"])


class Run:
    """One run folder: ``config``, ``metrics``, ``params``, ``idata``; ``sample(n)``,
    ``predictive(data=...)``, ``evaluate(data=...)`` where its model may run."""

    def __init__(
        self,
        folder: RunFolder | str | Path,
        *,
        family=None,
        dataset: Dataset | None = None,
        trust_model_code: bool = False,
        model: Callable | None = None,
        guide: Callable | None = None,
    ):
        self.folder = folder if isinstance(folder, RunFolder) else RunFolder.existing(folder)
        self._family, self._dataset = family, dataset
        self._trust, self._model, self._guide = trust_model_code, model, guide

    def __repr__(self) -> str:
        return f"Run({str(self.path)!r}, model={self.request.model!r}, status={self.status!r})"

    # -- what the folder holds ------------------------------------------------------------
    @property
    def path(self) -> Path:
        return self.folder.path

    def file(self, name: str) -> Path:
        """A file of the run folder."""
        return self.folder.file(name)

    @property
    def config(self) -> dict:
        return self.folder.config

    @property
    def status(self) -> str | None:
        return self.config.get("status")

    @cached_property
    def request(self):
        from probdiff.request import request_from_config

        return request_from_config(self.config, out=str(self.path))

    @property
    def metrics(self) -> dict:
        """``metrics.json``: per-datum values in nats of the data (see the README)."""
        return self.folder.metrics()

    @property
    def params(self) -> dict[str, np.ndarray]:
        """Fitted parameters (constrained values), by Pyro/NumPyro parameter name."""
        from probdiff.runfolder import load_params

        self._require_complete()
        return load_params(self.folder)

    @property
    def idata(self):
        """The fit's ``arviz.InferenceData``."""
        self._require_complete()
        return self.folder.load_inference_data()

    @property
    def dataset(self) -> Dataset:
        if self._dataset is None:
            self._dataset = dataset_from_config(self.folder, self.config)
        return self._dataset

    def split(self) -> tuple[Dataset, Dataset]:
        """(train, held-out) exactly as the fit split them."""
        req = self.request
        return train_test_split(self.dataset, req.test_fraction, req.data_seed_value)

    def shown(self) -> Dataset:
        """The training rows its draws and figures cover (see :func:`shown_subset`)."""
        return shown_subset(self.split()[0], self.request.settings.seed)

    def family_for_report(self):
        """The family where it can be rebuilt without running a user's code; for a user's
        model, a family without code (figures and summaries come from the folder alone)."""
        if self.config.get("code") is None:
            return self.family
        from probdiff.usermodel import UserFamily

        return UserFamily(dict(self.request.options), None, None)

    @property
    def family(self):
        """The model family, rebuilt; for a user's model this needs its code (see the module
        docstring)."""
        if self._family is None:
            from probdiff.request import make_family, runtime

            req, code = self.request, None
            if self.config.get("code") is not None:
                code = code_from_config(
                    self.folder, self.config, self._trust, self._model, self._guide
                )
            self._family = make_family(
                req.model,
                dict(req.options),
                self.dataset,
                code=code,
                base_seed=req.settings.seed,
                runtime=runtime(req),
            )
            if req.inference != "svi":
                self._family.restore(self.folder.load_inference_data())
        return self._family

    def backend(self):
        from probdiff.backends import get_backend

        req = self.request
        return get_backend(req.backend, req.device, req.dtype, req.threads)  # one device

    def _require_complete(self) -> None:
        if self.status != "complete":
            raise ProbdiffError(f"{self.path} is not a finished run (status {self.status!r})")

    # -- using the fitted model -----------------------------------------------------------
    def sample(self, n: int, seed: int = 0, sampler: str | None = None) -> Any:
        """``n`` draws from the fitted model, shaped like the data (named arrays for a model of
        several arrays)."""
        if not isinstance(n, (int, np.integer)) or isinstance(n, bool) or n < 1:
            raise ProbdiffError(f"-n must be a positive integer, got {n!r}")
        self._require_complete()
        family, params = self.family, self.params
        if sampler is None:
            return family.sample(params, int(n), seed)
        if "sampler" not in inspect.signature(family.sample).parameters:
            raise ProbdiffError(f"model {self.request.model} has one sampler: drop --sampler")
        return family.sample(params, int(n), seed, sampler)

    def predictive(self, data: Any = None, num_samples: int = 100, seed: int = 0) -> dict:
        """Posterior-predictive draws of the observed sites, ``(num_samples, N, ...)`` each, on
        ``data`` (new covariates: an array or named arrays; default the training data)."""
        from probdiff.data import as_dataset

        self._require_complete()
        family = self.family
        if not hasattr(family, "predictive"):
            raise ProbdiffError(f"model {self.request.model} has no predictive draws")
        given = None if data is None else as_dataset(data)
        return family.predictive(
            self.backend(), self.params, self.split()[0], given, num_samples, seed
        )

    def evaluate(self, data: Any = None, update: bool = True, progress: bool = False) -> dict:
        """The family's metrics on ``data`` (default: the held-out split), merged into
        ``metrics.json`` (as ``test_*`` for the held-out split, ``eval_*`` for other data);
        with ``progress``, a line on stderr per phase."""
        from probdiff.data import as_dataset

        self._require_complete()
        req, family = self.request, self.family
        if data is None:
            _, test = self.split()
            if test.n == 0:
                raise ProbdiffError(
                    "the run has no held-out split (--test-fraction 0): pass --data"
                )
            test = evaluation_subset(test, derive(req.data_seed_value, 2))
            x, prefix = family.prepare(test), "test_"
        else:
            other = evaluation_subset(as_dataset(data, seed=req.data_seed_value), 0)
            if (
                self.dataset.x is not None
                and other.x is not None
                and other.event_shape != self.dataset.event_shape
            ):
                raise ProbdiffError(
                    f"the data has shape {other.event_shape}, the run was fitted "
                    f"on {self.dataset.event_shape}"
                )
            x, prefix = family.prepare(other), "eval_"
        from probdiff.phases import Phases

        family.clock = Phases(show=progress)
        backend = self.backend()
        program = (
            family.program(req.backend, x, req.settings.seed, req.dtype, req.device)
            if req.inference in ("svi", "em")
            else None
        )
        with self.folder.lock("evaluate") if update else contextlib.nullcontext():
            values = family.metrics(backend, program, self.params, None, x, req.settings.seed)
            # the data's own density describes the run's data set, not other data
            named = {
                prefix + k[len("test_") :]: v
                for k, v in values.items()
                if k.startswith("test_") and not (prefix == "eval_" and "true_" in k)
            }
            if prefix == "test_":
                named.update({k: values[k] for k in family.held_out_keys if k in values})
            if update:
                self.folder.update_metrics(named)
        return named

    def report(self) -> str:
        from probdiff.report import report

        return report(self)


def open_run(
    path: str | Path,
    *,
    trust_model_code: bool = False,
    model: Callable | None = None,
    guide: Callable | None = None,
) -> Run:
    """Open the run folder ``path``. Nothing in it runs unless a user's model is asked to
    (sample, predictive, evaluate) and ``trust_model_code`` is set, or ``model``/``guide``
    callables are given here."""
    return Run(
        RunFolder.existing(path), trust_model_code=trust_model_code, model=model, guide=guide
    )
