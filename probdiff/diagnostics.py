"""Diagnostics on ArviZ posteriors: summaries, label switching, PSIS k-hat."""

from __future__ import annotations

import arviz as az
import numpy as np
import xarray as xr

RHAT_OK = 1.01


def summary(idata, var_names: list[str] | None = None, max_size: int = 64):
    """``az.summary`` of the posterior's small variables (skipping per-datum ones like assignments).

    R-hat and ESS are reported only where there are several chains of real (non-constant) draws.
    """
    post = idata.posterior
    names = [
        k
        for k in (var_names or post.data_vars)
        if np.prod(post[k].shape[2:], dtype=int) <= max_size
    ]
    if not names:
        return None
    chains = post.sizes["chain"]
    kind = "all" if chains > 1 else "stats"
    return az.summary(idata, var_names=names, kind=kind, round_to=4)


def posterior_table(idata, exclude: tuple[str, ...] = ()):
    """:func:`summary` of the posterior's global latent sites (per-datum sites, those with the
    ``row_dim`` of the posterior's attrs, and ``exclude`` left out), or None where there is none."""
    if "posterior" not in idata.groups():
        return None
    row_dim = idata.posterior.attrs.get("row_dim", "row")
    names = [
        k
        for k, v in idata.posterior.data_vars.items()
        if k not in exclude and row_dim not in v.dims
    ]
    return summary(idata, names) if names else None


def _sorted_by_first_coordinate(da: xr.DataArray, component_dim: int) -> xr.DataArray:
    values = np.moveaxis(da.values, 2 + component_dim, 2)  # (chain, draw, K, ...)
    keys = values.reshape(values.shape[:3] + (-1,))[..., 0]
    order = np.argsort(keys, axis=2)
    idx = order.reshape(order.shape + (1,) * (values.ndim - 3))
    relabelled = np.take_along_axis(values, idx, axis=2)
    return xr.DataArray(np.moveaxis(relabelled, 2, 2 + component_dim), dims=da.dims)


def max_rhat(da: xr.DataArray) -> float:
    return float(np.nanmax(az.rhat(xr.Dataset({"v": da}))["v"].values))


def label_switching(posterior: xr.Dataset, var: str, component_dim: int = 0) -> list[str]:
    """Report lines about label switching of mixture components across chains.

    Compares the largest R-hat of ``var`` with that after relabelling every draw by sorting its
    components on their first coordinate. Large R-hat that sorting removes is label switching:
    the chains explore permuted copies of the same mode, so per-component summaries are
    meaningless and the fit should be redone with ordered components.
    """
    if var not in posterior or posterior.sizes["chain"] < 2:
        return []
    raw = max_rhat(posterior[var])
    relabelled = max_rhat(_sorted_by_first_coordinate(posterior[var], component_dim))
    if raw <= RHAT_OK:
        return [f"label switching: none seen (max R-hat of {var} {raw:.3f})"]
    if relabelled <= RHAT_OK or relabelled < 1 + (raw - 1) / 4:
        return [
            f"WARNING label switching: max R-hat of {var} is {raw:.3f} across chains but "
            f"{relabelled:.3f} after sorting components by their first coordinate; the chains "
            "visit permuted labels, so per-component summaries mix components. Refit with --ordered."
        ]
    return [
        f"WARNING poor mixing: max R-hat of {var} is {raw:.3f} ({relabelled:.3f} after "
        "relabelling): not explained by label switching alone"
    ]


def psis_khat(log_weights: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Pareto-smoothed importance sampling k-hat per datum.

    ``log_weights`` (S, N): log p(x_n, z_s) - log q(z_s | x_n) for S guide draws per datum.
    Returns (smoothed log weights, k-hat of each datum); k-hat > 0.7 means the guide is too
    narrow for importance sampling to be reliable (Vehtari et al. 2015); docs/equations.md (1.4).
    """
    lw, k = az.psislw(np.asarray(log_weights).T)
    return lw.T, np.asarray(k)


def iwae_bound(log_weights: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """IWAE_K per datum (Burda et al. 2016): log (1/K) sum_k w_k over disjoint groups of K draws.

    ``log_weights`` (S, N) with S a multiple of K. Returns (mean over groups, standard error
    over groups) per datum; K = 1 is the ordinary ELBO estimator. docs/equations.md (1.2).
    """
    from scipy.special import logsumexp

    s, n = log_weights.shape
    groups = s // k
    if groups < 1:
        raise ValueError(f"need at least K = {k} draws per datum, got {s}")
    lw = log_weights[: groups * k].reshape(groups, k, n)
    per_group = logsumexp(lw, axis=1) - np.log(k)
    err = per_group.std(0, ddof=1) / np.sqrt(groups) if groups > 1 else np.full(n, np.nan)
    return per_group.mean(0), err


def sliced_wasserstein(
    x: np.ndarray, y: np.ndarray, num_projections: int = 256, seed: int = 0
) -> float:
    """Sliced 2-Wasserstein distance between two point clouds (N, D) and (M, D):
    sqrt(E_theta W_2^2(theta.x, theta.y)) over uniform unit directions theta, each 1-D W_2 from
    the two empirical quantile functions on a common grid of max(N, M) levels."""
    x, y = np.asarray(x, float).reshape(len(x), -1), np.asarray(y, float).reshape(len(y), -1)
    if x.shape[1] != y.shape[1]:
        raise ValueError(f"point clouds of dimension {x.shape[1]} and {y.shape[1]}")
    rng = np.random.default_rng(seed)
    theta = rng.standard_normal((x.shape[1], num_projections))
    theta /= np.linalg.norm(theta, axis=0, keepdims=True)
    levels = (np.arange(max(len(x), len(y))) + 0.5) / max(len(x), len(y))
    px = np.quantile(x @ theta, levels, axis=0, method="inverted_cdf")
    py = np.quantile(y @ theta, levels, axis=0, method="inverted_cdf")
    return float(np.sqrt(np.mean((px - py) ** 2)))
