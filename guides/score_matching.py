"""Guides of the score-matching programs: the forward (noising) process.

For NCSN, x_noisy ~ N(x, sigma_i^2 I) for the levels i in the ``levels`` plate (``subsample``
of them per batch); for a score SDE, t ~ U(eps, 1) per datum and x_t ~ N(a(t) x, std(t)^2 I)
(:mod:`probdiff.diffusion.sde`). The models (:mod:`probdiff.models.score.ncsn`, :mod:`probdiff.models.score.sde`)
draw the same sites from the same distributions, so each site's KL is zero and the ELBO is
the model's score-matching factor: minus the loss.
"""

from __future__ import annotations

import pyro
import pyro.distributions as dist
import torch
from pyro import poutine

from probdiff.diffusion.sde import SDE

LEVELS_PLATE = "levels"


def noisy_levels(x0: torch.Tensor, sigmas: torch.Tensor, idx: torch.Tensor) -> dist.TorchDistribution:
    """N(x0, sigma_i^2 I) for the plate's levels ``idx``: batch (k, N), event (D,)."""
    sig = sigmas.to(x0)[idx][:, None, None]
    return dist.Normal(x0.expand((len(idx),) + x0.shape), sig.expand((len(idx),) + x0.shape)).to_event(1)


def sde_marginal(sde: SDE, x0: torch.Tensor, t: torch.Tensor) -> dist.TorchDistribution:
    """q(x_t | x_0) = N(a(t) x_0, std(t)^2 I) per row of x_0 (N, D); t (..., N)."""
    a, s = sde.marginal(t)
    mean = a[..., None] * x0
    return dist.Normal(mean, s[..., None].expand(mean.shape)).to_event(1)


def time_prior(x0: torch.Tensor, eps: float) -> dist.TorchDistribution:
    return dist.Uniform(x0.new_full((len(x0),), eps), x0.new_ones(len(x0)))


class NoiseLevelGuide:
    def __init__(self, sigmas: torch.Tensor, subsample: int | None = None):
        self.sigmas, self.subsample = sigmas, subsample

    def __call__(self, x0: torch.Tensor, n_total: int | None = None) -> None:
        n = len(x0)
        with pyro.plate("data", n, dim=-1), poutine.scale(scale=(n_total or n) / n):
            with pyro.plate(LEVELS_PLATE, len(self.sigmas), subsample_size=self.subsample,
                            dim=-2) as idx:
                pyro.sample("x_noisy", noisy_levels(x0, self.sigmas, idx))


class SDEGuide:
    def __init__(self, sde: SDE, eps: float):
        self.sde, self.eps = sde, eps

    def __call__(self, x0: torch.Tensor, n_total: int | None = None) -> None:
        n = len(x0)
        with pyro.plate("data", n, dim=-1), poutine.scale(scale=(n_total or n) / n):
            t = pyro.sample("t", time_prior(x0, self.eps))
            pyro.sample("x_t", sde_marginal(self.sde, x0, t))
