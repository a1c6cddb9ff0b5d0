"""Guides of the score-matching programs: the forward (noising) process.

For NCSN, x_noisy ~ N(x, sigma_i^2 I) for the levels i in the ``levels`` plate (``subsample``
of them per batch); for a score SDE, t ~ U(eps, 1) per datum and x_t ~ N(a(t) x, std(t)^2 I)
(:mod:`probdiff.diffusion.sde`). The models (:mod:`probdiff.models.score.ncsn`, :mod:`probdiff.models.score.sde`)
draw the same sites from the same distributions, so each site's KL is zero and the ELBO is
the model's score-matching factor: minus the loss (docs/equations.md (3.9), (4.3), (4.8)).
"""

from __future__ import annotations

import pyro
import torch

from probdiff.diffusion.sde import SDE
from probdiff.models.score.noising import (
    LEVELS_PLATE,
    noisy_levels,
    sde_marginal,
    time_prior,
)
from probdiff.plates import data_plate


class NoiseLevelGuide:
    def __init__(self, sigmas: torch.Tensor, subsample: int | None = None):
        self.sigmas, self.subsample = sigmas, subsample

    def __call__(self, x0: torch.Tensor, n_total: int | None = None) -> None:
        n = len(x0)
        with data_plate(n, n_total, dim=-1):
            with pyro.plate(
                LEVELS_PLATE, len(self.sigmas), subsample_size=self.subsample, dim=-2
            ) as idx:
                pyro.sample("x_noisy", noisy_levels(x0, self.sigmas, idx))


class SDEGuide:
    def __init__(self, sde: SDE, eps: float):
        self.sde, self.eps = sde, eps

    def __call__(self, x0: torch.Tensor, n_total: int | None = None) -> None:
        n = len(x0)
        with data_plate(n, n_total, dim=-1):
            t = pyro.sample("t", time_prior(x0, self.eps))
            pyro.sample("x_t", sde_marginal(self.sde, x0, t))
