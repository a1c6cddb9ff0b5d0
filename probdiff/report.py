"""``probdiff report DIR``: an ArviZ summary, diagnostics and figures of a finished run."""

from __future__ import annotations

import numpy as np

from probdiff.data import Dataset, load_dataset
from probdiff.diagnostics import summary
from probdiff.family import Family
from probdiff.plots import elbo_trace_figure, mcmc_figures
from probdiff.runfolder import RunFolder


def write_figures(run: RunFolder, family: Family, idata, params: dict, data: Dataset) -> list[str]:
    """Every figure of a run: the ELBO trace (SVI), trace/rank plots (MCMC), the family's own."""
    names = []
    if "sample_stats" in idata.groups() and "elbo" in idata.sample_stats:
        ref = {k: v for k, v in run.metrics().items()
               if k in ("log_likelihood", "true_log_likelihood") and isinstance(v, float)}
        stats = idata.sample_stats
        test = ((stats["test_step"].values, stats["test_elbo"].values)
                if "test_elbo" in stats else None)
        names.append(elbo_trace_figure(run.file("elbo_trace.png"), stats["elbo"].values, ref, test,
                                       family.objective, family.held_out_objective))
    post = idata.posterior if "posterior" in idata.groups() else None
    if post is not None and post.sizes["chain"] > 1:
        small = [k for k, v in post.data_vars.items() if np.prod(v.shape[2:], dtype=int) <= 16
                 and k not in family.auxiliary_sites]
        if small:
            names += mcmc_figures(run.path, idata, small)
    names += family.figures(run, idata, params, data)
    return names


def report(path: str) -> str:
    """Return the report text of the run in ``path`` (and refresh its figures)."""
    from probdiff.fitting import load_params, make_family, request_from_config
    run = RunFolder.existing(path)
    config = run.config
    lines = [f"run {run.path}: {config['request']['model']} on {config['data']['name']} "
             f"({config['data']['n']} points), backend {config['request']['backend']}, "
             f"inference {config['request']['inference']}"]
    if config.get("status") != "complete":
        lines.append(f"INCOMPLETE: status is {config.get('status')!r}; the run stopped before it "
                     "finished (resume with probdiff fit ... --resume)")
        return "\n".join(lines)
    metrics = run.metrics()
    lines.append("metrics (per datum, nats):")
    lines += [f"  {k:24s} {v:.6g}" if isinstance(v, float) else f"  {k:24s} {v}"
              for k, v in sorted(metrics.items()) if not isinstance(v, (list, dict))]
    idata = run.load_inference_data()
    req = request_from_config(config)
    data = load_dataset(req.data, seed=req.settings.seed)
    family = make_family(req.model, dict(req.options), data)
    if "posterior" in idata.groups():
        names = [k for k in idata.posterior.data_vars if k not in family.auxiliary_sites]
        table = summary(idata, names)
        if table is not None:
            lines += ["posterior summary (ArviZ):", table.to_string()]
    lines += family.report_lines(idata, metrics)
    names = write_figures(run, family, idata, load_params(run), data)
    lines.append("figures: " + ", ".join(names))
    return "\n".join(lines)
