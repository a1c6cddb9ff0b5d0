"""The noising distributions of the score-matching programs, shared by each model (whose
auxiliary sites draw exactly these) and its guide (:mod:`probdiff.guides.score_matching`)."""

from __future__ import annotations

import pyro.distributions as dist
import torch

from probdiff.diffusion.sde import SDE

LEVELS_PLATE = "levels"


def noisy_levels(
    x0: torch.Tensor, sigmas: torch.Tensor, idx: torch.Tensor
) -> dist.TorchDistribution:
    """N(x0, sigma_i^2 I) for the plate's levels ``idx``: batch (k, N), event (D,);
    docs/equations.md (3.9)."""
    sig = sigmas.to(x0)[idx][:, None, None]
    return dist.Normal(
        x0.expand((len(idx),) + x0.shape), sig.expand((len(idx),) + x0.shape)
    ).to_event(1)


def sde_marginal(sde: SDE, x0: torch.Tensor, t: torch.Tensor) -> dist.TorchDistribution:
    """q(x_t | x_0) = N(a(t) x_0, std(t)^2 I) per row of x_0 (N, D); t (..., N);
    docs/equations.md (4.3), (4.8)."""
    a, s = sde.marginal(t)
    mean = a[..., None] * x0
    return dist.Normal(mean, s[..., None].expand(mean.shape)).to_event(1)


def time_prior(x0: torch.Tensor, eps: float) -> dist.TorchDistribution:
    return dist.Uniform(x0.new_full((len(x0),), eps), x0.new_ones(len(x0)))
