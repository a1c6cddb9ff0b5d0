"""Noise schedules of the diffusion chain (docs/equations.md (2.1), (2.2)), independent of any
network.

Index convention: arrays have length T + 1 and are indexed by the chain step t = 0..T of the
tutorial (t = 0 is the data: beta_0 = 0, alpha_0 = abar_0 = 1). diffusers' timestep k is our
t = k + 1. Everything is float64 NumPy; backends take ``torch.as_tensor`` / ``jnp.asarray`` of
the arrays they need. The chain (docs/equations.md (2.3), (2.4), (2.5)):

    q(x_t | x_{t-1}) = N(sqrt(alpha_t) x_{t-1}, (1 - alpha_t) I),     alpha_t = 1 - beta_t
    q(x_t | x_0)     = N(sqrt(abar_t) x_0, (1 - abar_t) I),           abar_t = prod_{s<=t} alpha_s
    q(x_{t-1} | x_t, x_0) = N(c0_t x_0 + ct_t x_t, sigma_q(t)^2 I) with
        c0_t = (1 - alpha_t) sqrt(abar_{t-1}) / (1 - abar_t),
        ct_t = (1 - abar_{t-1}) sqrt(alpha_t) / (1 - abar_t),
        sigma_q(t)^2 = (1 - alpha_t)(1 - abar_{t-1}) / (1 - abar_t).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from probdiff.errors import ProbdiffError

SCHEDULES = ("linear", "scaled_linear", "cosine")


def linear_betas(T: int, beta_start: float = 1e-4, beta_end: float = 0.02) -> np.ndarray:
    """Ho et al. (2020): beta_t evenly spaced from beta_start to beta_end (for T = 1000);
    docs/equations.md (2.2)."""
    return np.linspace(beta_start, beta_end, T, dtype=np.float64)


def scaled_linear_betas(T: int, beta_start: float = 0.00085, beta_end: float = 0.012) -> np.ndarray:
    """Latent diffusion: sqrt(beta_t) evenly spaced, squared; docs/equations.md (2.2)."""
    return np.linspace(math.sqrt(beta_start), math.sqrt(beta_end), T, dtype=np.float64) ** 2


def cosine_betas(T: int, s: float = 0.008, max_beta: float = 0.999) -> np.ndarray:
    """Nichol and Dhariwal (2021): abar(u) = cos^2(((u / T) + s) / (1 + s) * pi / 2) and
    beta_t = min(1 - abar(t) / abar(t - 1), max_beta) (diffusers' squaredcos_cap_v2);
    docs/equations.md (2.2)."""

    def abar(u):
        return math.cos((u / T + s) / (1 + s) * math.pi / 2) ** 2

    return np.array([min(1 - abar(t) / abar(t - 1), max_beta) for t in range(1, T + 1)])


@dataclass(frozen=True)
class Schedule:
    """The chain's coefficients for t = 0..T (see the module docstring)."""

    betas: np.ndarray  # (T + 1,), betas[0] = 0

    @classmethod
    def make(
        cls, name: str, T: int, beta_start: float | None = None, beta_end: float | None = None
    ) -> Schedule:
        """A named schedule (``linear``, ``scaled_linear``, ``cosine``) of T steps."""
        if T < 1:
            raise ProbdiffError(f"the chain needs T >= 1 steps, got {T}")
        kw = {
            k: v for k, v in (("beta_start", beta_start), ("beta_end", beta_end)) if v is not None
        }
        if name == "linear":
            b = linear_betas(T, **kw)
        elif name == "scaled_linear":
            b = scaled_linear_betas(T, **kw)
        elif name == "cosine":
            if kw:
                raise ProbdiffError("the cosine schedule takes no beta_start/beta_end")
            b = cosine_betas(T)
        else:
            raise ProbdiffError(f"unknown schedule {name!r}: choose {', '.join(SCHEDULES)}")
        if not (np.all(b > 0) and np.all(b < 1)):
            raise ProbdiffError(f"schedule {name!r} with T={T} has betas outside (0, 1)")
        return cls(np.concatenate([[0.0], b]))

    @property
    def T(self) -> int:
        return len(self.betas) - 1

    @property
    def alphas(self) -> np.ndarray:
        return 1.0 - self.betas

    @property
    def abar(self) -> np.ndarray:
        """abar_t = prod_{s=1}^t alpha_s; abar_0 = 1 (docs/equations.md (2.1))."""
        return np.cumprod(self.alphas)

    @property
    def abar_prev(self) -> np.ndarray:
        """abar_{t-1} for t = 1..T at index t (index 0: 1)."""
        return np.concatenate([[1.0], self.abar[:-1]])

    @property
    def posterior_x0_coef(self) -> np.ndarray:
        """c0_t = (1 - alpha_t) sqrt(abar_{t-1}) / (1 - abar_t) (index 0: 0); docs/equations.md
        (2.5)."""
        return _safe_div(self.betas * np.sqrt(self.abar_prev), 1 - self.abar)

    @property
    def posterior_xt_coef(self) -> np.ndarray:
        """ct_t = (1 - abar_{t-1}) sqrt(alpha_t) / (1 - abar_t) (index 0: 0); docs/equations.md
        (2.5)."""
        return _safe_div((1 - self.abar_prev) * np.sqrt(self.alphas), 1 - self.abar)

    @property
    def posterior_variance(self) -> np.ndarray:
        """sigma_q(t)^2 = (1 - alpha_t)(1 - abar_{t-1}) / (1 - abar_t); 0 at t = 1 (and t = 0);
        docs/equations.md (2.5)."""
        return _safe_div(self.betas * (1 - self.abar_prev), 1 - self.abar)

    def reverse_variance(self, kind: str) -> np.ndarray:
        """The reverse step's variance: ``fixed_small`` sigma_q(t)^2 or ``fixed_large`` beta_t
        (docs/equations.md (2.6))."""
        if kind == "fixed_small":
            return self.posterior_variance
        if kind == "fixed_large":
            return self.betas.copy()
        raise ProbdiffError(f"unknown reverse variance {kind!r}: fixed_small or fixed_large")

    # -- the chain's maps, on NumPy or torch/JAX arrays (t an int or integer array) -----------
    def q_sample(self, x0, t, eps):
        """x_t = sqrt(abar_t) x_0 + sqrt(1 - abar_t) eps: a draw of q(x_t | x_0)
        (docs/equations.md (2.4))."""
        a = _col(np.sqrt(self.abar)[t], x0)
        s = _col(np.sqrt(1 - self.abar)[t], x0)
        return a * x0 + s * eps

    def posterior_mean(self, x0, xt, t):
        """mu_q(x_t, x_0) = c0_t x_0 + ct_t x_t, the mean of q(x_{t-1} | x_t, x_0)
        (docs/equations.md (2.5))."""
        return _col(self.posterior_x0_coef[t], x0) * x0 + _col(self.posterior_xt_coef[t], xt) * xt

    def x0_from_eps(self, xt, t, eps):
        """x_0 = (x_t - sqrt(1 - abar_t) eps) / sqrt(abar_t), inverting :meth:`q_sample`
        (docs/equations.md (2.4))."""
        return (xt - _col(np.sqrt(1 - self.abar)[t], xt) * eps) / _col(np.sqrt(self.abar)[t], xt)

    def mean_from_eps(self, xt, t, eps):
        """mu_theta = (x_t - (1 - alpha_t) / sqrt(1 - abar_t) eps) / sqrt(alpha_t)
        (docs/equations.md (2.10))."""
        c = _col((self.betas / np.sqrt(np.where(self.abar < 1, 1 - self.abar, 1.0)))[t], xt)
        return (xt - c * eps) / _col(np.sqrt(self.alphas)[t], xt)

    def reverse_step(self, xt, t: int, eps, noise, variance: str = "fixed_small"):
        """One ancestral step x_{t-1} = mu_theta(x_t, t) + sigma_t z (z = ``noise``; none at
        t = 1), with mu_theta from the predicted noise ``eps`` (docs/equations.md (2.15))."""
        mean = self.mean_from_eps(xt, t, eps)
        if t <= 1:
            return mean
        return mean + math.sqrt(self.reverse_variance(variance)[t]) * noise


def _safe_div(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    out = np.zeros_like(a)
    np.divide(a, b, out=out, where=b > 0)
    return out


def _col(c, x):
    """A per-datum coefficient (scalar, or one per row) broadcast against x of shape (N, ...)."""
    c = np.asarray(c)
    if c.ndim == 0:
        return float(c)
    shape = (-1,) + (1,) * (x.ndim - 1)
    if isinstance(x, np.ndarray):
        return c.reshape(shape)
    try:
        import torch

        if isinstance(x, torch.Tensor):
            return torch.as_tensor(c, dtype=x.dtype, device=x.device).reshape(shape)
    except ImportError:  # pragma: no cover
        pass
    import jax.numpy as jnp

    return jnp.asarray(c, dtype=x.dtype).reshape(shape)
