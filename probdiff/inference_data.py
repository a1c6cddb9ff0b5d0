"""ArviZ InferenceData for SVI fits: guide draws, the ELBO trace and the observed data."""

from __future__ import annotations

import arviz as az
import numpy as np
import xarray as xr


def _dims(name: str, shape: tuple[int, ...], dims: dict[str, list[str]]) -> list[str]:
    named = list(dims.get(name, []))
    return named + [f"{name}_dim_{i}" for i in range(len(named), len(shape))]


def svi_inference_data(draws: dict[str, np.ndarray], traces: list[np.ndarray], observed: np.ndarray,
                       *, dims: dict[str, list[str]] | None = None, attrs: dict | None = None
                       ) -> az.InferenceData:
    """InferenceData of one SVI fit.

    posterior: ``draws`` (each (S, ...)) as one chain of S draws from the guide.
    sample_stats: ``elbo`` (chain = restart, step), the per-datum ELBO at each step, NaN-padded.
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
    obs = xr.Dataset({"obs": (["obs_dim_0"] + [f"obs_dim_{i + 1}" for i in range(observed.ndim - 1)],
                              np.asarray(observed))})
    groups = {"sample_stats": stats, "observed_data": obs}
    if draws:
        groups["posterior"] = posterior
    idata = az.InferenceData(**groups)
    for group in groups:
        getattr(idata, group).attrs.update({"inference_library": "probdiff", **(attrs or {})})
    return idata
