"""``probdiff sample`` and ``probdiff evaluate`` on a finished run folder."""

from __future__ import annotations

import io

import numpy as np

from probdiff.data import load_dataset, train_test_split
from probdiff.errors import ProbdiffError
from probdiff.runfolder import RunFolder, atomic_write


def _open(path: str):
    from probdiff.fitting import load_params, make_family, request_from_config
    run = RunFolder.existing(path)
    if not run.complete:
        raise ProbdiffError(f"{run.path} is not a finished run (status {run.config.get('status')!r})")
    req = request_from_config(run.config)
    data = load_dataset(req.data, seed=req.settings.seed)
    family = make_family(req.model, dict(req.options), data)
    if req.inference != "svi":
        family.restore(run.load_inference_data())
    return run, req, data, family, load_params(run)


def sample(path: str, n: int, seed: int = 0, sampler: str | None = None) -> str:
    """Write ``samples.npz`` and ``samples.png`` into the run folder; return a one-line summary."""
    if n < 1:
        raise ProbdiffError(f"-n must be >= 1, got {n}")
    run, req, data, family, params = _open(path)
    x = family.sample(params, n, seed) if sampler is None else family.sample(params, n, seed, sampler)
    buf = io.BytesIO()
    np.savez(buf, x=x)
    atomic_write(run.file("samples.npz"), buf.getvalue())
    from probdiff.plots import samples_figure
    samples_figure(run.file("samples.png"), x, data)
    return f"wrote {n} samples to {run.file('samples.npz')} and {run.file('samples.png')}"


def evaluate(path: str, data_spec: str | None = None) -> dict:
    """The family's metrics on ``data_spec`` (default: the run's held-out split), merged into
    ``metrics.json`` (as ``test_*`` for the held-out split, ``eval_*`` for other data)."""
    from probdiff.backends import get_backend
    run, req, data, family, params = _open(path)
    if data_spec is None:
        _, test = train_test_split(data, req.test_fraction, req.settings.seed)
        x, prefix = family.prepare(test), "test_"
        if len(x) == 0:
            raise ProbdiffError("the run has no held-out split (--test-fraction 0): pass --data")
    else:
        other = load_dataset(data_spec, seed=req.settings.seed)
        if other.event_shape != data.event_shape:
            raise ProbdiffError(f"--data {data_spec} has data of shape {other.event_shape}, the run "
                                f"was fitted on {data.event_shape}")
        x, prefix = family.prepare(other), "eval_"
    backend = get_backend(req.backend, req.device, req.dtype, req.threads)
    program = (family.program(req.backend, x, req.settings.seed, req.dtype, req.device)
               if req.inference == "svi" or req.inference == "em" else None)
    values = family.metrics(backend, program, params, None, x, req.settings.seed)
    # the data's own density describes the run's data set, not a file given with --data
    named = {prefix + k[len("test_"):]: v for k, v in values.items()
             if k.startswith("test_") and not (prefix == "eval_" and "true_" in k)}
    if prefix == "test_":
        named.update({k: values[k] for k in family.held_out_keys if k in values})
    run.update_metrics(named)
    return named
