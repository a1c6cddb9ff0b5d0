"""ArviZ InferenceData for SVI fits: guide draws, the ELBO trace and the observed data."""

from __future__ import annotations

import arviz as az
import numpy as np
import xarray as xr


def _dims(name: str, shape: tuple[int, ...], dims: dict[str, list[str]]) -> list[str]:
    named = list(dims.get(name, []))
    return named + [f"{name}_dim_{i}" for i in range(len(named), len(shape))]


def svi_inference_data(draws: dict[str, np.ndarray], traces: list[np.ndarray], observed: np.ndarray,
                       *, test_traces: list[np.ndarray] | None = None,
                       dims: dict[str, list[str]] | None = None, attrs: dict | None = None
                       ) -> az.InferenceData:
    """InferenceData of one SVI fit.

    posterior: ``draws`` (each (S, ...)) as one chain of S draws from the guide.
    sample_stats: ``elbo`` (chain = restart, step), the per-datum ELBO at each step, NaN-padded;
    with ``test_traces`` (per restart, rows (step, ELBO)), ``test_elbo`` (chain, test_step),
    the held-out per-datum ELBO after ``test_step`` steps.
    observed_data: ``obs``, the fitted data.
    """
    dims = dims or {}
    posterior = xr.Dataset({k: (["chain", "draw"] + _dims(k, v.shape[1:], dims), np.asarray(v)[None])
                            for k, v in draws.items()})
    length = max((len(t) for t in traces), default=0)
    elbo = np.full((len(traces), length), np.nan)
    for i, t in enumerate(traces):
        elbo[i, :len(t)] = t
    stats = xr.Dataset({"elbo": (["chain", "step"], elbo)},
                       coords={"chain": np.arange(len(traces)), "step": np.arange(length)})
    if test_traces and any(len(t) for t in test_traces) and len(test_traces) == len(traces):
        steps = np.unique(np.concatenate([np.asarray(t)[:, 0] for t in test_traces])).astype(int)
        held = np.full((len(test_traces), len(steps)), np.nan)
        for i, t in enumerate(test_traces):
            t = np.asarray(t)
            if len(t):
                held[i, np.searchsorted(steps, t[:, 0].astype(int))] = t[:, 1]
        stats["test_elbo"] = xr.DataArray(held, dims=["chain", "test_step"],
                                          coords={"test_step": steps})
    obs = xr.Dataset({"obs": (["obs_dim_0"] + [f"obs_dim_{i + 1}" for i in range(observed.ndim - 1)],
                              np.asarray(observed))})
    groups = {"sample_stats": stats, "observed_data": obs}
    if draws:
        groups["posterior"] = posterior
    idata = az.InferenceData(**groups)
    for group in groups:
        getattr(idata, group).attrs.update({"inference_library": "probdiff", **(attrs or {})})
    return idata
