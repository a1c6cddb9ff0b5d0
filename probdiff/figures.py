"""Every figure of a run, drawn from what the run holds: its InferenceData, parameters,
metrics and (a subset of) its training data. ``probdiff fit`` and ``probdiff report`` draw
them through this one function."""

from __future__ import annotations

import numpy as np

from probdiff.data import Dataset
from probdiff.family import Family
from probdiff.plots import elbo_trace_figure, mcmc_figures, posterior_figures
from probdiff.runfolder import RunFolder


def write_figures(
    run: RunFolder,
    family: Family,
    idata,
    params: dict,
    data: Dataset | None,
    metrics: dict,
    artefacts: dict,
) -> list[str]:
    """Every figure of a run: the ELBO trace (SVI, with the ``metrics`` it is compared to),
    trace/rank plots (MCMC), posterior and predictive plots (a user's model), the family's
    own."""
    names = []
    if "sample_stats" in idata.groups() and "elbo" in idata.sample_stats:
        ref = {
            k: v
            for k, v in metrics.items()
            if k in ("log_likelihood", "true_log_likelihood") and isinstance(v, float)
        }
        stats = idata.sample_stats
        test = (
            (stats["test_step"].values, stats["test_elbo"].values) if "test_elbo" in stats else None
        )
        names.append(
            elbo_trace_figure(
                run.file("elbo_trace.png"),
                stats["elbo"].values,
                ref,
                test,
                family.objective,
                family.held_out_objective,
            )
        )
    post = idata.posterior if "posterior" in idata.groups() else None
    if post is not None and post.sizes["chain"] > 1:
        small = [
            k
            for k, v in post.data_vars.items()
            if np.prod(v.shape[2:], dtype=int) <= 16 and k not in family.auxiliary_sites
        ]
        if small:
            names += mcmc_figures(run.path, idata, small)
    if family.generic_figures:
        names += posterior_figures(run.path, idata)
    if data is not None:
        names += family.figures(run, idata, params, data, artefacts)
    return names
