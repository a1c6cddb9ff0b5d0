"""``probdiff report DIR``: metrics, point estimates, an ArviZ summary, diagnostics and figures
of a finished run. It reads the folder only: no code from it runs."""

from __future__ import annotations

import numpy as np

from probdiff.diagnostics import posterior_table
from probdiff.figures import write_figures
from probdiff.runfolder import load_artefacts


def report(run) -> str:
    """The report text of ``run`` (a :class:`probdiff.run.Run`; ``probdiff.open_run(DIR)``
    opens a folder); refreshes its figures."""
    config, req = run.config, run.request
    data = config.get("data", {})
    lines = [
        f"run {run.path}: {req.model} on {data.get('name')} ({data.get('n')} points), "
        f"backend {req.backend}, inference {req.inference}"
    ]
    if run.status != "complete":
        lines.append(
            f"INCOMPLETE: status is {run.status!r}; the run stopped before it "
            "finished (resume with probdiff fit ... --resume)"
        )
        return "\n".join(lines)
    metrics = run.metrics
    lines.append("metrics (per datum, nats):")
    lines += [
        f"  {k:24s} {v:.6g}" if isinstance(v, float) else f"  {k:24s} {v}"
        for k, v in sorted(metrics.items())
        if not isinstance(v, (list, dict))
    ]
    for key, why in (metrics.get("skipped") or {}).items():
        lines.append(f"  {key:24s} not computed: {why}")
    idata = run.idata
    family = run.family_for_report()
    lines += point_lines(idata)
    if "posterior" in idata.groups():
        row_dim = idata.posterior.attrs.get("row_dim", "row")
        table = posterior_table(idata, family.auxiliary_sites)
        if table is not None:
            lines += ["posterior summary (ArviZ):", table.to_string()]
        local = [k for k, v in idata.posterior.data_vars.items() if _per_datum(v, row_dim)]
        if local:
            lines.append(
                "local latent sites (one value per datum, in inference_data.nc): "
                + ", ".join(local)
            )
    lines += loo_lines(idata)
    notes = idata.sample_stats.attrs.get("notes") if "sample_stats" in idata.groups() else None
    if notes:
        lines.append(f"note: {notes}")
    lines += family.report_lines(idata, metrics)
    dataset = run.shown() if config.get("code") is None else None
    params = run.params
    with run.folder.lock("report"):
        names = write_figures(
            run.folder, family, idata, params, dataset, metrics, load_artefacts(run.folder)
        )
        lines.append("figures: " + ", ".join(names))
        page = write_run_page(run, "\n".join(lines))
    lines.append(f"page: {page}")
    return "\n".join(lines)


def write_run_page(run, text: str):
    """``DIR/index.html``: the run's page (:mod:`probdiff.page`)."""
    from probdiff.page import PAGE, run_section, write_page

    title = f"probdiff run {run.folder.path.name}"
    data = run.config.get("data", {}).get("name")
    section = run_section(
        run, text, anchor=run.folder.path.name, title=f"{run.request.model} on {data}"
    )
    return write_page(run.folder.file(PAGE), title, [section])


def _per_datum(da, row_dim: str) -> bool:
    return row_dim in da.dims


def point_lines(idata) -> list[str]:
    """Point estimates (maximum likelihood, MAP, AutoDelta), small ones in full."""
    if "point_estimate" not in idata.groups():
        return []
    lines = ["point estimates:"]
    for name, da in idata.point_estimate.data_vars.items():
        value = da.values
        if value.size <= 12:
            text = np.array2string(value, precision=4, separator=", ", suppress_small=True)
        else:
            text = f"shape {value.shape}, mean {value.mean():.4g}, sd {value.std():.4g}"
        lines.append(f"  {name:24s} {' '.join(text.split())}")
    return lines


def loo_lines(idata) -> list[str]:
    """PSIS-LOO of the fit where its log-likelihood has several posterior draws."""
    import warnings

    import arviz as az

    if "log_likelihood" not in idata.groups() or "posterior" not in idata.groups():
        return []
    ll = idata.log_likelihood
    local = ll.attrs.get("conditional_on", "")
    if local:
        return [
            f"PSIS-LOO not shown: the log-likelihood is conditional on the local latent "
            f"sites {local}, which leave-one-out would have to integrate out"
        ]
    if ll.sizes.get("draw", 0) * ll.sizes.get("chain", 0) < 2 or len(ll.data_vars) != 1:
        return []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        loo = az.loo(idata, pointwise=True)
    k = np.asarray(loo.pareto_k)
    n = k.size
    return [
        f"PSIS-LOO (ArviZ): elpd_loo {loo.elpd_loo:.2f} +- {loo.se:.2f} "
        f"({loo.elpd_loo / n:.4f} per datum), p_loo {loo.p_loo:.2f}, "
        f"Pareto k > 0.7 for {int((k > 0.7).sum())} of {n} data"
    ]
