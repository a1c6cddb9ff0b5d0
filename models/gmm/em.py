"""Closed forms of the isotropic Gaussian mixture in NumPy (docs/equations.md (1.6), (1.7), (1.9)),
independent of any PPL.

The tutorial's encoder and decoder: the responsibilities p(z = k | x), the hard assignment
argmax_k p(z = k | x), and drawing x from N(mu_k, sigma_k^2 I); the exact log-likelihood
log p(x) = logsumexp_k [log pi_k + log N(x | mu_k, sigma_k^2 I)]; k-means++ seeding; and EM.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

LOG_2PI = np.log(2.0 * np.pi)


@dataclass(frozen=True)
class MixtureParams:
    """pi (K,), mu (K, D), sigma (K,) of an isotropic mixture."""

    weights: np.ndarray
    locs: np.ndarray
    scales: np.ndarray

    def as_dict(self) -> dict[str, np.ndarray]:
        return {"weights": self.weights, "locs": self.locs, "scales": self.scales}


def logsumexp(a: np.ndarray, axis: int = -1, keepdims: bool = False) -> np.ndarray:
    """log sum exp along ``axis``, shifted by the maximum (rows that are all -inf give -inf)."""
    m = np.max(a, axis=axis, keepdims=True)
    m = np.where(np.isfinite(m), m, 0.0)
    out = np.log(np.sum(np.exp(a - m), axis=axis, keepdims=True)) + m
    return out if keepdims else np.squeeze(out, axis=axis)


def squared_distances(x: np.ndarray, locs: np.ndarray) -> np.ndarray:
    """||x_n - mu_k||^2, shape (N, K): directly for few coordinates, else by the expansion
    ||x||^2 - 2 x.mu + ||mu||^2 (no (N, K, D) array; clipped at 0 against rounding)."""
    if x.shape[-1] <= 4:
        return ((x[:, None, :] - locs[None]) ** 2).sum(-1)
    sq = (x * x).sum(1)[:, None] - 2.0 * x @ locs.T + (locs * locs).sum(1)[None]
    return np.maximum(sq, 0.0)


def component_log_joint(x: np.ndarray, p: MixtureParams) -> np.ndarray:
    """log pi_k + log N(x_n | mu_k, sigma_k^2 I), shape (N, K).

    log N(x | mu, s^2 I) = -D/2 log(2 pi) - D log s - ||x - mu||^2 / (2 s^2)
    (docs/equations.md (1.6)).
    """
    d = x.shape[-1]
    sq = squared_distances(x, p.locs)
    return np.log(p.weights) - 0.5 * d * LOG_2PI - d * np.log(p.scales) - 0.5 * sq / p.scales**2


def log_likelihood(x: np.ndarray, p: MixtureParams, chunk: int = 65_536) -> np.ndarray:
    """log p(x_n) = logsumexp_k [log pi_k + log N(x_n | mu_k, sigma_k^2 I)], shape (N,);
    computed ``chunk`` rows at a time (bounded memory on large data)."""
    return np.concatenate(
        [
            logsumexp(component_log_joint(x[i : i + chunk], p), axis=1)
            for i in range(0, len(x), chunk)
        ]
        or [np.zeros(0)]
    )


def responsibilities(x: np.ndarray, p: MixtureParams) -> np.ndarray:
    """The exact encoder p(z = k | x_n) = pi_k N(x_n | mu_k, .) / sum_j pi_j N(x_n | mu_j, .)
    (docs/equations.md (1.7))."""
    lj = component_log_joint(x, p)
    return np.exp(lj - logsumexp(lj, axis=1, keepdims=True))


def hard_encode(x: np.ndarray, p: MixtureParams) -> np.ndarray:
    """The tutorial's hard-assignment encoder: argmax_k p(z = k | x_n), shape (N,)."""
    return component_log_joint(x, p).argmax(axis=1)


def decode(z: np.ndarray, p: MixtureParams, rng: np.random.Generator) -> np.ndarray:
    """The decoder: x ~ N(mu_z, sigma_z^2 I) for each assignment in ``z``."""
    z = np.asarray(z)
    return p.locs[z] + p.scales[z, None] * rng.standard_normal((len(z), p.locs.shape[1]))


def sample(n: int, p: MixtureParams, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Ancestral sampling: z ~ Categorical(pi), then the decoder. Returns (x, z)."""
    w = np.asarray(p.weights, float)
    z = rng.choice(len(w), size=n, p=w / w.sum())
    return decode(z, p, rng), z


def kmeans_pp_init(x: np.ndarray, k: int, rng: np.random.Generator) -> MixtureParams:
    """k-means++ seeding of the means; equal weights; every scale the root mean square, per
    coordinate, of each point's distance to its nearest seed."""
    n, d = x.shape
    centres = [x[rng.integers(n)]]
    for _ in range(1, k):
        dist2 = np.min(((x[:, None, :] - np.array(centres)[None]) ** 2).sum(-1), axis=1)
        prob = dist2 / dist2.sum() if dist2.sum() > 0 else np.full(n, 1.0 / n)
        centres.append(x[rng.choice(n, p=prob)])
    locs = np.array(centres, dtype=float)
    nearest = ((x[:, None, :] - locs[None]) ** 2).sum(-1).min(axis=1)
    scale = np.sqrt(max(nearest.mean() / d, 1e-6))
    return MixtureParams(np.full(k, 1.0 / k), locs, np.full(k, scale))


def ordered_by_first_coordinate(p: MixtureParams, min_gap: float) -> MixtureParams:
    """Relabel the components so that mu_{k,0} increases, strictly: ties (e.g. a pixel that is
    0 in every image) are pulled apart to ``min_gap``. Weights and scales follow their means."""
    order = np.argsort(p.locs[:, 0], kind="stable")
    locs = np.array(p.locs[order], dtype=float)
    gaps = np.maximum(np.diff(locs[:, 0]), min_gap)
    locs[:, 0] = locs[0, 0] + np.concatenate([[0.0], np.cumsum(gaps)])
    return MixtureParams(np.asarray(p.weights)[order], locs, np.asarray(p.scales)[order])


def _e_step(x: np.ndarray, p: MixtureParams) -> tuple[np.ndarray, float]:
    """(r_nk = p(z = k | x_n), mean log p(x_n)) at ``p``, from one log-joint."""
    lj = component_log_joint(x, p)
    lse = logsumexp(lj, axis=1, keepdims=True)
    return np.exp(lj - lse), float(lse.mean())


def _m_step(x: np.ndarray, r: np.ndarray, reg: float) -> MixtureParams:
    nk = r.sum(0) + 10 * np.finfo(float).eps
    locs = (r.T @ x) / nk[:, None]
    var = (r * squared_distances(x, locs)).sum(0) / (x.shape[1] * nk) + reg
    return MixtureParams(nk / nk.sum(), locs, np.sqrt(var))


def em_step(x: np.ndarray, p: MixtureParams, reg: float = 1e-6) -> MixtureParams:
    """One EM update for the isotropic mixture.

    E: r_nk = p(z = k | x_n).  M: N_k = sum_n r_nk, pi_k = N_k / N, mu_k = sum_n r_nk x_n / N_k,
    sigma_k^2 = sum_n r_nk ||x_n - mu_k||^2 / (D N_k) + reg (docs/equations.md (1.9)).
    """
    return _m_step(x, _e_step(x, p)[0], reg)


def em_fit(
    x: np.ndarray, init: MixtureParams, max_iter: int = 500, tol: float = 1e-8
) -> tuple[MixtureParams, np.ndarray]:
    """Run EM until the mean log-likelihood improves by less than ``tol``; return (params,
    trace). Each iteration's E-step gives the log-likelihood of the parameters it starts
    from, so the trace costs no extra pass over the data."""
    p, trace = init, []
    for _ in range(max_iter + 1):
        r, ll = _e_step(x, p)
        trace.append(ll)
        if len(trace) > max_iter or (len(trace) > 1 and abs(trace[-1] - trace[-2]) < tol):
            break
        p = _m_step(x, r, 1e-6)
    return p, np.asarray(trace)
