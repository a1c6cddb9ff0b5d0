"""``probdiff fit``: validate everything, then fit, evaluate and fill the run folder.

Order matters for the run-folder contract: every check that can fail on bad input (options,
data, model file, device) runs before the folder is created, and ``config.json`` says
``"status": "complete"`` only once metrics, ArviZ data and figures are written.
"""

from __future__ import annotations

import io
import platform
import shutil
import time
from dataclasses import asdict, dataclass, field

import numpy as np

from probdiff import __version__
from probdiff.backends import BACKENDS, get_backend
from probdiff.data import Dataset, load_dataset, train_test_split
from probdiff.errors import ProbdiffError
from probdiff.family import Family, get_family
from probdiff.inference_data import svi_inference_data
from probdiff.runfolder import METRICS, RunFolder, atomic_write
from probdiff.svi import SVISettings, run_svi
from probdiff.usermodel import UserFamily, is_reference

PARAMS = "params.npz"


@dataclass
class FitRequest:
    """Everything ``probdiff fit`` was asked, as written to ``config.json``."""

    model: str
    data: str
    out: str
    backend: str = "pyro"
    device: str = "cpu"
    dtype: str = "float32"
    inference: str = "svi"
    test_fraction: float = 0.2
    posterior_samples: int = 200
    threads: int | None = 1
    settings: SVISettings = field(default_factory=SVISettings)
    options: dict = field(default_factory=dict)

    def validate(self) -> None:
        self.settings.validate()
        if self.backend not in BACKENDS:
            raise ProbdiffError(f"unknown --backend {self.backend!r}: choose {' or '.join(BACKENDS)}")
        if self.dtype not in ("float32", "float64"):
            raise ProbdiffError(f"--dtype must be float32 or float64, got {self.dtype!r}")
        if not 0.0 <= self.test_fraction < 1.0:
            raise ProbdiffError(f"--test-fraction must be in [0, 1), got {self.test_fraction}")
        if self.threads is not None and self.threads < 1:
            raise ProbdiffError(f"--threads must be >= 1, got {self.threads}")
        if self.posterior_samples < 1:
            raise ProbdiffError(f"--posterior-samples must be >= 1, got {self.posterior_samples}")


def make_family(model: str, options: dict, data: Dataset) -> Family:
    """A built-in family by name, or a user's model given as ``file.py:function``."""
    if is_reference(model):
        return UserFamily(options, data, model)
    return get_family(model)(options, data)


def request_from_config(config: dict) -> FitRequest:
    req = dict(config["request"])
    req["settings"] = SVISettings(**req["settings"])
    return FitRequest(**req)


def fit(req: FitRequest, resume: bool = False) -> RunFolder:
    """Run one fit into ``req.out`` and return its run folder."""
    req.validate()
    run = RunFolder.existing(req.out) if resume else RunFolder.check_new(req.out)
    dataset = load_dataset(req.data, seed=req.settings.seed)
    family = make_family(req.model, req.options, dataset)
    if req.backend not in family.backends:
        raise ProbdiffError(f"model {req.model} has no {req.backend} backend")
    if req.inference not in family.inferences:
        raise ProbdiffError(f"model {req.model} supports --inference {', '.join(family.inferences)}, "
                            f"not {req.inference!r}")
    backend = get_backend(req.backend, req.device, req.dtype, req.threads)
    train, test = train_test_split(dataset, req.test_fraction, req.settings.seed)
    family.validate_request(req.inference, req.backend, req.settings, train.n, req.dtype)
    run.create()
    run.write_json("config.json", _config(req, dataset))
    try:
        return _fit(req, run, family, backend, dataset, train, test, resume)
    except Exception:  # not KeyboardInterrupt: an interrupted fit keeps its checkpoint
        if not resume:  # the folder was new or empty: leave nothing half-made behind
            shutil.rmtree(run.path, ignore_errors=True)
        raise


def _fit(req: FitRequest, run: RunFolder, family: Family, backend, dataset: Dataset,
         train: Dataset, test: Dataset, resume: bool) -> RunFolder:
    checkpoint = run.load_checkpoint() if resume else None
    x_train, x_test = family.prepare(train), family.prepare(test)
    start = time.perf_counter()
    if req.inference == "svi":
        def make_program(seed: int):
            return family.program(req.backend, x_train, seed, req.dtype, req.device)
        result = run_svi(backend, make_program, x_train, req.settings, save=run.save_checkpoint,
                         resume=checkpoint, x_test=x_test[:family.trace_rows(len(x_test))],
                         display_offset=family.data_log_jacobian,
                         eval_program=family.evaluation_program)
        params, seconds = result.params, result.seconds
        traces = [t + family.data_log_jacobian for t in result.traces]
        test_traces = [t + [0.0, family.data_log_jacobian] for t in result.test_traces]
        program = make_program(req.settings.seed + 1000 * result.best)
        extra = {"restart_elbos": [e + family.data_log_jacobian for e in result.final_elbos],
                 "best_restart": result.best}
    else:
        params, idata, extra = family.run_other(req.inference, x_train, req.settings, req.backend)
        seconds = time.perf_counter() - start
        traces = [np.asarray(extra.pop("trace"))] if "trace" in extra else []
        test_traces = []
        program = (family.program(req.backend, x_train, req.settings.seed, req.dtype, req.device)
                   if idata is None else None)
    metrics = family.metrics(backend, program, params, x_train, x_test, req.settings.seed)
    if req.inference == "svi" or idata is None:
        draws = (family.posterior(backend, program, params, x_train, req.posterior_samples,
                                  req.settings.seed) if program is not None else {})
        idata = svi_inference_data(draws, traces, x_train, test_traces=test_traces,
                                   attrs={"model": req.model, "backend": req.backend,
                                          "inference": req.inference})
    metrics.update({"steps": req.settings.steps, "seconds": seconds, "backend": req.backend,
                    "device": req.device, "inference": req.inference, **extra,
                    **mcmc_metrics(idata)})
    _save_params(run, params)
    run.save_inference_data(idata)
    from probdiff.report import write_figures
    write_figures(run, family, idata, params, dataset)
    run.write_json(METRICS, metrics)  # whole: a resumed run keeps no stale keys
    run.set_status("complete")
    return run


def mcmc_metrics(idata) -> dict:
    """max R-hat, min bulk ESS and the divergence count of a posterior with several chains."""
    import arviz as az
    if "posterior" not in idata.groups() or idata.posterior.sizes["chain"] < 2:
        return {}
    post = idata.posterior
    small = [k for k, v in post.data_vars.items() if np.prod(v.shape[2:], dtype=int) <= 64]
    out = {"max_rhat": float(max(np.nanmax(az.rhat(post[small])[k].values) for k in small)),
           "min_ess_bulk": float(min(np.nanmin(az.ess(post[small])[k].values) for k in small))}
    if "sample_stats" in idata.groups() and "diverging" in idata.sample_stats:
        out["divergences"] = int(idata.sample_stats["diverging"].sum())
    return out


def _save_params(run: RunFolder, params: dict[str, np.ndarray]) -> None:
    buf = io.BytesIO()
    np.savez(buf, **{k: np.asarray(v) for k, v in params.items()})
    atomic_write(run.file(PARAMS), buf.getvalue())


def load_params(run: RunFolder) -> dict[str, np.ndarray]:
    path = run.file(PARAMS)
    if not path.is_file():
        raise ProbdiffError(f"{path} is missing: the run did not finish")
    with np.load(path) as f:
        return {k: f[k] for k in f.files}


def _config(req: FitRequest, dataset: Dataset) -> dict:
    import arviz, jax, numpyro, pyro, torch
    return {
        "request": asdict(req),
        "status": "running",
        "data": {"name": dataset.name, "n": dataset.n, "event_shape": list(dataset.event_shape),
                 "kind": dataset.kind},
        "versions": {"probdiff": __version__, "python": platform.python_version(),
                     "torch": torch.__version__, "pyro": pyro.__version__, "jax": jax.__version__,
                     "numpyro": numpyro.__version__, "arviz": arviz.__version__},
    }
