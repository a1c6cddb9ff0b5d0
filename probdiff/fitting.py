"""``probdiff fit``: validate everything, then fit, evaluate and fill the run folder.

Order matters for the run-folder contract: every check that can fail on bad input (options,
data, model code, device, minibatch scaling) runs before the folder is created, and
``config.json`` says ``"status": "complete"`` only once metrics, ArviZ data and figures are
written.
"""

from __future__ import annotations

import io
import platform
import time
from dataclasses import asdict, replace
from importlib import metadata
from pathlib import Path

import numpy as np

from probdiff import __version__
from probdiff.backends import get_backend
from probdiff.data import Dataset, evaluation_subset, load_dataset, train_test_split
from probdiff.errors import ProbdiffError
from probdiff.family import Family
from probdiff.phases import Phases
from probdiff.program import num_rows
from probdiff.request import (
    FitRequest,
    make_family,
    request_from_config,
    runtime,
    user_code_from_request,
)
from probdiff.runfolder import (
    CHECKPOINT,
    CONFIG,
    METRICS,
    RunFolder,
    atomic_write,
    load_artefacts,
    save_artefacts,
    save_params,
)
from probdiff.seeds import derive
from probdiff.svi import run_svi
from probdiff.usermodel import CodeRef, UserCode, is_reference

CODE_DIR = "code"
DATA_COPY = "data.npz"


def fit(
    req: FitRequest,
    resume: bool = False,
    *,
    code: UserCode | None = None,
    dataset: Dataset | None = None,
    trust_model_code: bool = False,
):
    """Run one fit into ``req.out`` and return it as a :class:`probdiff.run.Run`.

    ``code`` and ``dataset`` carry a user's callables and in-memory arrays (the Python API);
    otherwise both come from ``req``. Resuming a run of a user's model executes the run
    folder's copy of its code, so it needs ``trust_model_code``.

    Everything that can fail on bad input is checked before the folder is touched. A new fit
    that fails before its first checkpoint removes what it wrote (the folder too, if it made
    it); one that fails later, and any resumed fit that fails, keeps its folder with status
    ``"failed"``, the reason, and its last good checkpoint, from which ``--resume`` continues.
    Ctrl-C leaves status ``"interrupted"`` and the checkpoint.
    """
    req.validate()
    from probdiff import distributed

    rank, size = distributed.world()
    if size > 1:
        if req.backend != "pyro" or req.inference != "svi":
            raise ProbdiffError("torchrun runs Pyro SVI fits (--backend pyro --inference svi)")
        if req.settings.batch_size is None:
            raise ProbdiffError(
                "--batch-size is needed under torchrun: each process takes its share of "
                "every minibatch"
            )
        if rank > 0:
            return _worker(req, resume, code, dataset, trust_model_code)
    if resume:
        return _resume(req, trust_model_code)
    run = RunFolder.check_new(req.out)
    if dataset is None:
        dataset = load_dataset(req.data, seed=req.data_seed_value, stream=req.stream)
    if code is None and is_reference(req.model):
        code = user_code_from_request(req)
    family, backend, train, test = _prepare(req, dataset, code)
    req.options.update(family.check(backend, req.backend, family.prepare(train), req.settings))
    created = run.create()
    with run.lock("fit"):
        run.require_empty()  # under the lock: another fit may have got here first
        try:
            config = _config(req, dataset)
            if code is not None:
                config["code"] = _copy_code(run, code)
            config["data"].update(_record_data(run, req, dataset))
            config["history"] = [_history_entry("fit", req)]
            run.write_json(CONFIG, config)
        except BaseException:
            run.discard(created)
            raise
        _guarded(
            run,
            lambda: _fit(req, run, family, backend, train, test, False),
            new=True,
            created=created,
        )
        return _with_page(_opened(run, family, dataset))


def _worker(req, resume, code, dataset, trust_model_code) -> None:
    """A torchrun process other than the first: the same family, program, data and minibatches
    (from a resumed run's folder, read only, or as the first process builds them), trained
    in lockstep with it (the backend averages gradients); it writes nothing and returns None
    when the loop ends (:mod:`probdiff.distributed`)."""
    from probdiff import distributed

    checkpoint = None
    if resume:
        _, checkpoint, dataset, code = _recorded(RunFolder.existing(req.out), trust_model_code)
    else:
        if dataset is None:
            dataset = load_dataset(req.data, seed=req.data_seed_value, stream=req.stream)
        if code is None and is_reference(req.model):
            code = user_code_from_request(req)
    family, backend, train, _ = _prepare(req, dataset, code)
    x_train = family.prepare(train)
    req.options.update(family.check(backend, req.backend, x_train, req.settings))
    family.clock = Phases(show=False)
    run_svi(
        backend,
        lambda seed: family.program(req.backend, x_train, seed, req.dtype, req.device),
        x_train,
        replace(req.settings, progress=False),
        resume=checkpoint,
    )
    distributed.finish()


def _with_page(opened):
    """Write the finished run's ``index.html`` (``probdiff report`` adds the text report)."""
    from probdiff.report import write_run_page

    write_run_page(opened, "")
    return opened


def _prepare(req: FitRequest, dataset: Dataset, code: UserCode | None):
    """The family, backend and split of a request, every option checked."""
    _check_scale(dataset)
    family = make_family(
        req.model,
        req.options,
        dataset,
        code=code,
        base_seed=req.settings.seed,
        runtime=runtime(req),
    )
    if req.backend not in family.backends:
        raise ProbdiffError(f"model {req.model} has no {req.backend} backend")
    if req.inference not in family.inferences:
        raise ProbdiffError(
            f"model {req.model} supports --inference {', '.join(family.inferences)}, "
            f"not {req.inference!r}"
        )
    backend = get_backend(**runtime(req))
    train, test = train_test_split(dataset, req.test_fraction, req.data_seed_value)
    if dataset.streamed and req.inference != "svi":
        raise ProbdiffError(
            f"--inference {req.inference} needs every row in memory; {dataset.name!r} is "
            "streamed from disk: use --inference svi, or --no-stream"
        )
    if dataset.streamed and req.settings.batch_size is None:
        raise ProbdiffError(
            f"{dataset.name!r} is streamed from disk: give --batch-size (rows read per step)"
        )
    family.validate_request(req.inference, req.backend, req.settings, train.n, req.dtype)
    return family, backend, train, test


MAX_MAGNITUDE = 1e15  # beyond it, squares overflow float32 and sums of squares float64 soon


def _check_scale(dataset: Dataset) -> None:
    """Finite data whose squares the models' arithmetic cannot hold is refused in one line."""
    arrays = dataset.fields or {"x": dataset.x}
    for name, a in arrays.items():
        if a is not None and a.size and a.dtype.kind == "f":
            top = max(abs(float(a.min())), abs(float(a.max())))
            if top > MAX_MAGNITUDE:
                raise ProbdiffError(
                    f"data array {name!r} holds values up to {top:.3g}: beyond "
                    f"{MAX_MAGNITUDE:.0e} the models' arithmetic overflows; "
                    "rescale the data"
                )


def _recorded(run: RunFolder, trust_model_code: bool):
    """(config, checkpoint, data, code) of a run to resume, read from its folder; the
    checkpoint is validated before anything is written (None: a fit stopped before its first
    checkpoint starts from step 0 with the recorded settings)."""
    from probdiff.run import code_from_config, dataset_from_config

    config = run.config
    checkpoint = run.load_checkpoint()
    _check_checkpoint(run, checkpoint)
    code = (
        code_from_config(run, config, trust_model_code) if config.get("code") is not None else None
    )
    return config, checkpoint, dataset_from_config(run, config), code


def _resume(req: FitRequest, trust_model_code: bool):
    run = RunFolder.existing(req.out)
    with run.lock("fit --resume"):
        config, checkpoint, dataset, code = _recorded(run, trust_model_code)
        family, backend, train, test = _prepare(req, dataset, code)
        settings = asdict(req.settings)
        run.write_json(
            CONFIG,
            {
                **{k: v for k, v in config.items() if k != "error"},
                "status": "running",
                "request": {**config["request"], "settings": settings},
                "history": [*(config.get("history") or []), _history_entry("fit --resume", req)],
            },
        )
        _guarded(
            run,
            lambda: _fit(req, run, family, backend, train, test, True, checkpoint=checkpoint),
            new=False,
        )
        return _with_page(_opened(run, family, dataset))


def _guarded(run: RunFolder, work, new: bool, created: bool = False) -> None:
    """Run ``work``; on failure keep what has value (status and reason beside the last
    checkpoint); only a new fit with no checkpoint yet removes what it made (the folder too
    where it ``created`` it). A resumed run is never removed."""
    try:
        work()
    except BaseException as e:
        if new and not (run.path / CHECKPOINT).exists():
            run.discard(created)
        elif isinstance(e, KeyboardInterrupt):
            run.set_status("interrupted")
        elif isinstance(e, Exception):
            reason = str(e) if isinstance(e, ProbdiffError) else f"{type(e).__name__}: {e}"
            run.set_status("failed", error=" ".join(reason.split()))
        raise


def _opened(run: RunFolder, family: Family, dataset: Dataset):
    from probdiff.run import Run

    return Run(run, family=family, dataset=dataset)


def _history_entry(command: str, req: FitRequest) -> dict:
    import datetime

    return {
        "command": command,
        "time": datetime.datetime.now().isoformat(timespec="seconds"),
        "steps": req.settings.steps,
        "lr": req.settings.lr,
        "clip_norm": req.settings.clip_norm,
    }


def _check_checkpoint(run: RunFolder, state: dict | None) -> None:
    """The checkpoint's layout, before a resume trusts it (a one-line error naming it)."""
    if state is None:
        return
    where = run.path / CHECKPOINT
    entries = state.get("restarts") if isinstance(state, dict) else None
    if not isinstance(entries, list) or not all(
        isinstance(e, dict) and {"params", "backend", "batches", "trace", "finished"} <= set(e)
        for e in entries
    ):
        raise ProbdiffError(f"{where} is not a probdiff checkpoint (its layout is unknown)")


def resume_request(out: str, model: str | None, changes: dict, progress: bool = True) -> FitRequest:
    """The request to continue the run in ``out``: its recorded settings with ``changes``
    (``steps``, ``lr``, ``clip_norm``); ``model``, when given, must be the run's."""
    run = RunFolder.existing(out)
    req = request_from_config(run.config, out=out)
    if model and not _same_model(model, req.model):
        raise ProbdiffError(f"{run.path} holds a fit of {req.model}, not {model}")
    if changes.get("steps") is not None and changes["steps"] < req.settings.steps:
        raise ProbdiffError(f"--steps {changes['steps']} is below the run's {req.settings.steps}")
    req.settings = replace(
        req.settings, progress=progress, **{k: v for k, v in changes.items() if v is not None}
    )
    req.validate()
    return req


def _same_model(given: str, recorded: str) -> bool:
    if is_reference(given) and is_reference(recorded):
        return (
            given.rsplit(":", 1)[1] == recorded.rsplit(":", 1)[1]
            and Path(given.rsplit(":", 1)[0]).name == Path(recorded.rsplit(":", 1)[0]).name
        )
    return given == recorded


def _fit(
    req: FitRequest,
    run: RunFolder,
    family: Family,
    backend,
    train: Dataset,
    test: Dataset,
    resume: bool,
    checkpoint: dict | None = None,
) -> None:
    x_train, x_test = family.prepare(train), family.prepare(test)
    start = time.perf_counter()
    clock = family.clock = Phases(show=req.settings.progress)
    if req.inference == "svi":

        def make_program(seed: int):
            return family.program(req.backend, x_train, seed, req.dtype, req.device)

        n_test = num_rows(x_test)
        result = run_svi(
            backend,
            make_program,
            x_train,
            req.settings,
            save=run.save_checkpoint,
            resume=checkpoint,
            x_test=_head(x_test, family.trace_rows(n_test)),
            display_offset=family.data_log_jacobian,
            eval_program=family.evaluation_program,
        )
        from probdiff import distributed

        distributed.finish()  # torchrun: training is over for every process
        params, seconds = result.params, result.seconds
        traces = [t + family.data_log_jacobian for t in result.traces]
        test_traces = [t + [0.0, family.data_log_jacobian] for t in result.test_traces]
        program = make_program(derive(req.settings.seed, 1000 * result.best))
        extra = {}
        if req.settings.restarts > 1:
            extra = {
                "restart_elbos": [e + family.data_log_jacobian for e in result.final_elbos],
                "best_restart": result.best,
            }
    else:
        params, idata, extra = family.run_other(req.inference, x_train, req.settings, req.backend)
        seconds = time.perf_counter() - start
        traces = [np.asarray(extra.pop("trace"))] if "trace" in extra else []
        test_traces = []
        program = (
            family.program(req.backend, x_train, req.settings.seed, req.dtype, req.device)
            if idata is None
            else None
        )
    eval_rows = {}
    if train.streamed:  # metrics read a random subset of each split into memory
        seed = req.data_seed_value
        rows = [evaluation_subset(d, derive(seed, i)) for i, d in ((1, train), (2, test))]
        x_train, x_test = (family.prepare(d) for d in rows)
        eval_rows = {"eval_rows_train": rows[0].n, "eval_rows_test": rows[1].n}
    with clock("metrics", "held-out metrics"):
        metrics = family.metrics(backend, program, params, x_train, x_test, req.settings.seed)
    metrics.update(eval_rows)
    # draws, per-datum values and figures on at most DRAW_ROWS training rows (stated in idata)
    from probdiff.run import shown_subset

    shown = shown_subset(train, req.settings.seed)
    if req.inference == "svi" or idata is None:
        with clock("inference_data", "posterior draws and ArviZ data"):
            idata = _svi_inference_data(
                req, family, backend, program, params, shown, train.n, traces, test_traces
            )
    metrics.update(
        {
            "steps": req.settings.steps,
            "seconds": seconds,
            "backend": req.backend,
            "device": req.device,
            "inference": req.inference,
            **extra,
            **mcmc_metrics(idata),
        }
    )
    save_params(run, params)
    run.save_inference_data(idata)
    from probdiff.figures import write_figures

    save_artefacts(run, family.artefacts)
    with clock("figures"):
        write_figures(run, family, idata, params, shown, metrics, load_artefacts(run))
    metrics["phase_seconds"] = {"training": seconds, **clock.seconds}
    run.write_json(METRICS, metrics)  # whole: a resumed run keeps no stale keys
    run.set_status("complete")


def _svi_inference_data(
    req: FitRequest,
    family: Family,
    backend,
    program,
    params,
    shown: Dataset,
    n_train: int,
    traces,
    test_traces,
):
    """ArviZ data of an SVI fit: guide draws, per-datum log densities and predictive draws on
    the ``shown`` rows, and the ELBO traces."""
    from probdiff.inference_data import svi_inference_data

    x_shown = family.prepare(shown)
    groups = (
        family.inference_groups(
            backend, program, params, x_shown, req.posterior_samples, req.settings.seed
        )
        if program is not None
        else {}
    )
    attrs = {"model": req.model, "backend": req.backend, "inference": req.inference}
    if shown.n < n_train:
        attrs["rows"] = f"{shown.n} random rows of {n_train} training rows"
    return svi_inference_data(groups, traces, x_shown, test_traces=test_traces, attrs=attrs)


def _head(x, rows: int):
    """The first ``rows`` rows; of rows on disk, at most EVAL_ROWS spread over the split (a
    file may be sorted), read now."""
    from probdiff.data.rows import is_rows, spread_rows
    from probdiff.program import EVAL_ROWS, num_rows, take_rows

    if is_rows(x):
        return take_rows(x, spread_rows(num_rows(x), min(rows, EVAL_ROWS)))
    return take_rows(x, slice(0, rows))


def mcmc_metrics(idata) -> dict:
    """max R-hat, min bulk ESS and the divergence count of a posterior with several chains."""
    import arviz as az

    if "posterior" not in idata.groups() or idata.posterior.sizes["chain"] < 2:
        return {}
    post = idata.posterior
    small = [k for k, v in post.data_vars.items() if np.prod(v.shape[2:], dtype=int) <= 64]
    out = {
        "max_rhat": float(max(np.nanmax(az.rhat(post[small])[k].values) for k in small)),
        "min_ess_bulk": float(min(np.nanmin(az.ess(post[small])[k].values) for k in small)),
    }
    if "sample_stats" in idata.groups() and "diverging" in idata.sample_stats:
        out["divergences"] = int(idata.sample_stats["diverging"].sum())
    return out


def _copy_code(run: RunFolder, code: UserCode) -> dict:
    """Copy the model's and guide's source files into ``DIR/code/`` with their SHA-256; the
    config's record of what later commands may (on request) run."""
    from probdiff.usermodel import callable_source

    record = {}
    for role, ref in (("model", code.model), ("guide", code.guide)):
        if ref is None or isinstance(ref, str):
            record[role] = None if ref is None else {"autoguide": ref}
            continue
        if not isinstance(ref, CodeRef):
            ref, reopen = callable_source(ref)
        else:
            reopen = True
        if ref is None:
            record[role] = {"file": None, "reopen": False}
            continue
        target = run.path / CODE_DIR / ref.path.name
        target.parent.mkdir(exist_ok=True)
        source = ref.path.read_bytes()
        if target.exists() and target.read_bytes() != source:
            raise ProbdiffError(f"model and guide come from two files named {ref.path.name}")
        atomic_write(target, source)
        record[role] = {
            "file": f"{CODE_DIR}/{ref.path.name}",
            "function": ref.function,
            "sha256": ref.sha256(),
            "source": str(ref.path),
            "reopen": reopen,
        }
    return record


def _record_data(run: RunFolder, req: FitRequest, dataset: Dataset) -> dict:
    """Where the data comes from: a built-in spec, a file (absolute path and SHA-256), or
    arrays given in Python (saved into the run folder)."""
    from probdiff.data import BUILTIN_DATASETS, data_sha256

    name = req.data.partition(":")[0]
    if req.data and name in BUILTIN_DATASETS:
        return {"spec": req.data}
    path = Path(req.data).expanduser() if req.data else None
    if path is not None and path.exists():
        return {"spec": req.data, "path": str(path.resolve()), "sha256": data_sha256(path)}
    arrays = dataset.fields or {"x": dataset.x}
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    atomic_write(run.file(DATA_COPY), buf.getvalue())
    return {"spec": DATA_COPY, "in_run": True, "single": dataset.fields is None}


def _config(req: FitRequest, dataset: Dataset) -> dict:
    from probdiff import distributed

    request = asdict(req)
    request.pop("out")  # a run folder acts where it lies, not where it was made
    return {
        "request": request,
        "status": "running",
        "world_size": distributed.world()[1],
        "data": {
            "name": dataset.name,
            "n": dataset.n,
            "event_shape": list(dataset.event_shape) if dataset.x is not None else None,
            "arrays": list(dataset.fields) if dataset.fields else None,
            "kind": dataset.kind,
        },
        "versions": {
            "probdiff": __version__,
            "python": platform.python_version(),
            **{pkg: _version(pkg) for pkg in ("torch", "pyro-ppl", "jax", "numpyro", "arviz")},
        },
    }


def _version(package: str) -> str | None:
    """A package's installed version, read from its metadata (without importing it)."""
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None
