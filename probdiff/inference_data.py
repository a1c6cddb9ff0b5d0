"""ArviZ InferenceData of a fit: posterior draws, point estimates, per-datum log-likelihoods,
predictive draws, the observed data and the ELBO traces."""

from __future__ import annotations

from dataclasses import dataclass, field

import arviz as az
import numpy as np
import xarray as xr

ELBO_UNITS = "nats per datum"


@dataclass
class InferenceGroups:
    """What a family hands over for ArviZ; every draw array has draws first.

    ``posterior``: latent sites that vary (guide draws, MCMC draws); ``point``: point
    estimates (maximum likelihood, MAP, AutoDelta), one value each, never repeated as draws;
    ``log_likelihood``: observed site -> (S, N); ``posterior_predictive``: observed site ->
    (S, N, ...); ``observed_data``: observed site -> (N, ...). ``row_axes`` maps
    ``"post:site"`` / ``"pred:site"`` to the axis of the value (after the draw axis is removed,
    negative) that runs over the data rows, named ``row_dim`` in every group.
    """

    posterior: dict[str, np.ndarray] = field(default_factory=dict)
    point: dict[str, np.ndarray] = field(default_factory=dict)
    log_likelihood: dict[str, np.ndarray] = field(default_factory=dict)
    posterior_predictive: dict[str, np.ndarray] = field(default_factory=dict)
    observed_data: dict[str, np.ndarray] = field(default_factory=dict)
    row_dim: str = "row"
    row_axes: dict[str, int | None] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    # local latent sites the log-likelihood is conditional on (drawn, not summed out)
    conditional_on: list[str] = field(default_factory=list)

    @classmethod
    def from_draws(
        cls,
        draws: dict[str, np.ndarray],
        observed: np.ndarray | None = None,
        auxiliary: tuple[str, ...] = (),
    ) -> InferenceGroups:
        """Split guide draws into varying sites and point estimates (identical draws); leave
        out ``auxiliary`` sites (plate indices, reparameterisation helpers)."""
        post, point = {}, {}
        rows = None if observed is None else len(observed)
        for k, v in draws.items():
            if k in auxiliary:
                continue
            v = np.asarray(v)
            per_datum = v.ndim > 1 and v.shape[1] == rows
            if len(v) > 1 and not per_datum and np.all(v == v[:1]):
                point[k] = v[0]
            else:
                post[k] = v
        obs = {} if observed is None else {"obs": np.asarray(observed)}
        axes = {
            f"post:{k}": -(np.ndim(v) - 1)
            for k, v in post.items()
            if np.ndim(v) > 1 and np.shape(v)[1] == rows
        }  # per-datum sites
        return cls(posterior=post, point=point, observed_data=obs, row_axes=axes)


def _dims(
    name: str, shape: tuple[int, ...], row_dim: str | None, row_axis: int | None
) -> list[str]:
    dims = [f"{name}_dim_{i}" for i in range(len(shape))]
    if row_dim is not None and row_axis is not None and len(shape) >= -row_axis:
        dims[row_axis] = row_dim
    return dims


def _draw_group(
    values: dict[str, np.ndarray], prefix: str, groups: InferenceGroups, chain: bool = True
) -> xr.Dataset:
    out = {}
    for k, v in values.items():
        v = np.asarray(v)
        axis = groups.row_axes.get(f"{prefix}:{k}", -1 if prefix in ("ll", "pred") else None)
        dims = _dims(k, v.shape[1:], groups.row_dim, axis)
        out[k] = (["chain", "draw"] + dims, v[None])
    return xr.Dataset(out)


def svi_inference_data(
    groups: InferenceGroups | dict,
    traces: list[np.ndarray],
    observed: np.ndarray | None = None,
    *,
    test_traces: list[np.ndarray] | None = None,
    attrs: dict | None = None,
    units: str = ELBO_UNITS,
) -> az.InferenceData:
    """InferenceData of one SVI fit.

    posterior: the varying draws as one chain; point_estimate: the point estimates;
    log_likelihood, posterior_predictive, observed_data where the family provides them.
    sample_stats: ``elbo`` (chain = restart, step), the per-datum ELBO at each step, NaN-padded
    (attribute ``units``); with ``test_traces`` (per restart, rows (step, ELBO)), ``test_elbo``
    (chain, test_step), the held-out per-datum ELBO after ``test_step`` steps.
    """
    if not isinstance(groups, InferenceGroups):  # guide draws only
        groups = InferenceGroups.from_draws(groups, observed)
    length = max((len(t) for t in traces), default=0)
    elbo = np.full((len(traces), length), np.nan)
    for i, t in enumerate(traces):
        elbo[i, : len(t)] = t
    stats = xr.Dataset(
        {"elbo": (["chain", "step"], elbo, {"units": units})},
        coords={"chain": np.arange(len(traces)), "step": np.arange(length)},
    )
    if test_traces and any(len(t) for t in test_traces) and len(test_traces) == len(traces):
        steps = np.unique(np.concatenate([np.asarray(t)[:, 0] for t in test_traces])).astype(int)
        held = np.full((len(test_traces), len(steps)), np.nan)
        for i, t in enumerate(test_traces):
            t = np.asarray(t)
            if len(t):
                held[i, np.searchsorted(steps, t[:, 0].astype(int))] = t[:, 1]
        stats["test_elbo"] = xr.DataArray(
            held, dims=["chain", "test_step"], coords={"test_step": steps}, attrs={"units": units}
        )
    out = {"sample_stats": stats}
    if groups.posterior:
        out["posterior"] = _draw_group(groups.posterior, "post", groups)
    if groups.point:
        out["point_estimate"] = xr.Dataset(
            {k: (_dims(k, np.shape(v), None, None), np.asarray(v)) for k, v in groups.point.items()}
        )
    if groups.log_likelihood:
        out["log_likelihood"] = _draw_group(groups.log_likelihood, "ll", groups)
        out["log_likelihood"].attrs["conditional_on"] = ", ".join(groups.conditional_on)
    if groups.posterior_predictive:
        out["posterior_predictive"] = _draw_group(groups.posterior_predictive, "pred", groups)
    if groups.observed_data:
        out["observed_data"] = xr.Dataset(
            {
                k: (
                    _dims(
                        k,
                        np.shape(v),
                        groups.row_dim,
                        -np.ndim(v)
                        if groups.row_axes.get(f"pred:{k}") is None
                        else groups.row_axes[f"pred:{k}"],
                    ),
                    np.asarray(v),
                )
                for k, v in groups.observed_data.items()
            }
        )
    idata = az.InferenceData(**out)
    for group in out:
        getattr(idata, group).attrs.update(
            {"inference_library": "probdiff", **(attrs or {}), "row_dim": groups.row_dim}
        )
    if groups.notes:
        idata.sample_stats.attrs["notes"] = "; ".join(groups.notes)
    return idata
