"""Samplers of the reverse chain (docs/equations.md (2.15), (2.16)), on any noise predictor
eps(x_t, t).

* ``ancestral``: x_T ~ N(0, I), x_{t-1} = mu(x_t, t) + sigma_t z (z = 0 at t = 1), with
  sigma_t^2 = sigma_q(t)^2 (``fixed_small``) or beta_t (``fixed_large``): the DDPM sampler,
  T network evaluations.
* ``ddim``: Song et al. (2021) on an evenly spaced subsequence tau_S > ... > tau_1 of 1..T:
  x0_hat = (x - sqrt(1 - abar_t) eps) / sqrt(abar_t),
  x_prev = sqrt(abar_prev) x0_hat + sqrt(1 - abar_prev - s^2) eps + s z,
  s = eta sqrt((1 - abar_prev) / (1 - abar_t)) sqrt(1 - abar_t / abar_prev);
  eta = 0 is deterministic; the last step goes to abar_0 = 1 (x0_hat).

``eps`` takes (x, t) with x of shape (N, D) and t an int; samplers run under
``torch.inference_mode`` and draw from ``generator``. ``record`` (a list of steps) keeps the states x_t at those t.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import torch

from probdiff.diffusion.schedules import Schedule

EpsFn = Callable[[torch.Tensor, int], torch.Tensor]


def ancestral(
    eps: EpsFn,
    schedule: Schedule,
    n: int,
    dim: int,
    generator: torch.Generator,
    variance: str = "fixed_small",
    record: list[int] | None = None,
    dtype=torch.float32,
    progress=None,
    mean_and_scale: Callable | None = None,
) -> tuple[torch.Tensor, dict[int, torch.Tensor]]:
    """DDPM ancestral sampling: (x_0 draws (n, dim), {t: x_t} for t in ``record``). A chain
    with learned variances passes ``mean_and_scale(x, t)`` -> (mu_theta, sigma_theta), used
    in place of ``eps`` and the fixed ``variance`` (docs/equations.md (2.24))."""
    if mean_and_scale is None:
        sigma = np.sqrt(schedule.reverse_variance(variance))

        def mean_and_scale(x, t):
            return schedule.mean_from_eps(x, t, eps(x, t)), float(sigma[t])

    kept: dict[int, torch.Tensor] = {}
    with torch.inference_mode():
        x = torch.randn(n, dim, generator=generator, dtype=dtype, device=generator.device)
        for t in range(schedule.T, 0, -1):
            if record is not None and t in record:
                kept[t] = x.clone()
            mean, scale = mean_and_scale(x, t)
            if t > 1:
                mean = mean + scale * torch.randn(
                    n, dim, generator=generator, dtype=dtype, device=generator.device
                )
            x = mean
            if progress is not None:
                progress.update(1)
    if record is not None and 0 in record:
        kept[0] = x.clone()
    return x, kept


def ddim_steps(T: int, steps: int) -> list[int]:
    """tau: ``steps`` chain steps evenly spaced in 1..T, largest first (T always included)."""
    steps = max(1, min(steps, T))
    return sorted({int(round(v)) for v in np.linspace(1, T, steps)}, reverse=True)


def ddim(
    eps: EpsFn,
    schedule: Schedule,
    n: int,
    dim: int,
    generator: torch.Generator,
    steps: int = 50,
    eta: float = 0.0,
    record: list[int] | None = None,
    dtype=torch.float32,
    progress=None,
) -> tuple[torch.Tensor, dict[int, torch.Tensor]]:
    """DDIM sampling on ``steps`` of the T steps; ``eta`` = 1 matches DDPM's fixed-small noise."""
    abar = schedule.abar
    taus = ddim_steps(schedule.T, steps)
    kept: dict[int, torch.Tensor] = {}
    with torch.inference_mode():
        x = torch.randn(n, dim, generator=generator, dtype=dtype, device=generator.device)
        for i, t in enumerate(taus):
            if record is not None and t in record:
                kept[t] = x.clone()
            prev = taus[i + 1] if i + 1 < len(taus) else 0
            x = ddim_step(x, t, prev, eps(x, t), abar, eta, generator)
            if progress is not None:
                progress.update(1)
    if record is not None and 0 in record:
        kept[0] = x.clone()
    return x, kept


def ddim_step(
    x: torch.Tensor,
    t: int,
    prev: int,
    e: torch.Tensor,
    abar: np.ndarray,
    eta: float,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """One DDIM update from step t to step prev < t (abar_0 = 1)."""
    a_t, a_p = float(abar[t]), float(abar[prev])
    x0 = (x - math.sqrt(1 - a_t) * e) / math.sqrt(a_t)
    s = eta * math.sqrt((1 - a_p) / (1 - a_t)) * math.sqrt(1 - a_t / a_p) if prev > 0 else 0.0
    out = math.sqrt(a_p) * x0 + math.sqrt(max(1 - a_p - s * s, 0.0)) * e
    if s > 0:
        out = out + s * torch.randn(x.shape, generator=generator, dtype=x.dtype, device=x.device)
    return out
