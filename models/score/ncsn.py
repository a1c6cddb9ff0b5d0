"""The noise-conditional score network (NCSN, Song and Ermon 2019) as a Pyro program.

``NoiseConditionalScore`` is s_theta(x, sigma_i) = net(x, i) / sigma_i (Song and Ermon 2020's
output scaling), with ``net`` a time-conditioned MLP or U-Net whose "time" is the level index.
``NCSNModel`` pairs with :class:`probdiff.guides.score_matching.NoiseLevelGuide`: in a plate
over the L levels (``subsample`` of them per batch, Pyro scaling by L / k) it draws x_noisy
from the guide's own N(x, sigma_i^2 I) (KL 0) and adds the factor

    -(1/L) 0.5 ||sigma_i s_theta(x_noisy, i) + z||^2,   z = (x_noisy - x) / sigma_i,

so the ELBO of the program is minus the NCSN loss with lambda(sigma) = sigma^2
(docs/equations.md (3.8), (3.9)). It is a loss written as a program, not a bound on log p(x).
"""

from __future__ import annotations

import pyro
import torch
from pyro import poutine
from torch import nn

from probdiff.diffusion.score_matching import noise_conditional_term
from probdiff.models.score.noising import LEVELS_PLATE, noisy_levels
from probdiff.plates import data_plate


class NoiseConditionalScore(nn.Module):
    def __init__(self, net: nn.Module, sigmas: torch.Tensor):
        super().__init__()
        self.net = net
        self.register_buffer("sigmas", torch.as_tensor(sigmas, dtype=torch.float32))

    def forward(self, x: torch.Tensor, levels: torch.Tensor | int) -> torch.Tensor:
        """x (N, D), levels (N,) or one int -> s_theta(x, sigma_level) (N, D)."""
        levels = torch.as_tensor(levels, device=x.device)
        if levels.dim() == 0:
            levels = levels.expand(len(x))
        sig = self.sigmas.to(x.dtype)[levels]
        return self.net(x, levels) / sig.reshape((-1,) + (1,) * (x.dim() - 1))


class NCSNModel:
    def __init__(self, score: NoiseConditionalScore, subsample: int | None = None):
        self.score, self.subsample = score, subsample

    def __call__(self, x0: torch.Tensor, n_total: int | None = None) -> None:
        pyro.module("ncsn", self.score, update_module_params=True)
        n, sigmas = len(x0), self.score.sigmas
        with data_plate(n, n_total, dim=-1):
            with pyro.plate(
                LEVELS_PLATE, len(sigmas), subsample_size=self.subsample, dim=-2
            ) as idx:
                xn = pyro.sample("x_noisy", noisy_levels(x0, sigmas, idx))  # (..., k, N, D)
                batch, d = xn.shape[:-1], xn.shape[-1]
                level = idx[:, None].expand(batch)
                sig = sigmas.to(x0)[level][..., None]
                s = self.score(xn.reshape(-1, d), level.reshape(-1))
                term = noise_conditional_term(
                    s, ((xn - x0) / sig).reshape(-1, d), sig.reshape(-1, 1)
                )
                with poutine.scale(scale=1.0 / len(sigmas)):
                    pyro.factor("score_matching", -term.reshape(batch))
