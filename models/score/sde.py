"""A score-based SDE model (Song et al. 2021) as a Pyro program.

``TimeScore`` is s_theta(x, t) = net(x, t) / std(t) for t in [eps, 1], std(t) the SDE's
marginal standard deviation (:mod:`probdiff.diffusion.sde`). ``ScoreSDEModel`` pairs with
:class:`probdiff.guides.score_matching.SDEGuide`: per datum it draws t ~ U(eps, 1) and x_t from
the guide's own q(x_t | x_0) (KLs 0) and adds the factor -lambda(t) 0.5 ||s_theta(x_t, t) +
z / std(t)||^2 with z the noise of x_t, so the ELBO of the program is minus the continuous
denoising score-matching loss (docs/equations.md (4.8)) with

* ``weighting="sigma2"``: lambda(t) = std(t)^2 (Song et al.'s default), or
* ``weighting="likelihood"``: lambda(t) = g(t)^2 (Song et al. 2021b: the loss then bounds the
  negative log-likelihood of the reverse-SDE model, not of the flow ODE, up to a constant).
  t stays uniform here, so the weight g^2 / std^2 ~ 1 / t makes the estimate heavy-tailed
  (Song et al. importance-sample t; not done here).
"""

from __future__ import annotations

import pyro
import torch
from torch import nn

from probdiff.diffusion.score_matching import noise_conditional_term
from probdiff.diffusion.sde import SDE, expand
from probdiff.models.score import WEIGHTINGS
from probdiff.models.score.noising import sde_marginal, time_prior
from probdiff.plates import data_plate


class TimeScore(nn.Module):
    def __init__(self, net: nn.Module, sde: SDE):
        super().__init__()
        self.net, self.sde = net, sde

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        t = torch.as_tensor(t, dtype=x.dtype, device=x.device)
        if t.dim() == 0:
            t = t.expand(len(x))
        _, std = self.sde.marginal(t)
        return self.net(x, t) / expand(std, x)


class ScoreSDEModel:
    def __init__(self, score: TimeScore, eps: float = 1e-5, weighting: str = "sigma2"):
        if weighting not in WEIGHTINGS:
            raise ValueError(f"unknown weighting {weighting!r}: choose {', '.join(WEIGHTINGS)}")
        self.score, self.eps, self.weighting = score, eps, weighting

    def __call__(self, x0: torch.Tensor, n_total: int | None = None) -> None:
        pyro.module("sde", self.score, update_module_params=True)
        n, sde = len(x0), self.score.sde
        with data_plate(n, n_total, dim=-1):
            t = pyro.sample("t", time_prior(x0, self.eps))  # (..., N)
            xt = pyro.sample("x_t", sde_marginal(sde, x0, t))  # (..., N, D)
            a, std = sde.marginal(t)
            z = (xt - a[..., None] * x0) / std[..., None]
            d = xt.shape[-1]
            s = self.score(xt.reshape(-1, d), t.reshape(-1))
            term = noise_conditional_term(s, z.reshape(-1, d), std.reshape(-1, 1)).reshape(t.shape)
            if self.weighting == "likelihood":
                term = term * sde.diffusion(t) ** 2 / std**2
            pyro.factor("score_matching", -term)
