"""DDPM as a Pyro program (MATH.md section 2): the reverse chain is the model.

    x_T ~ N(0, I),   x_{t-1} | x_t ~ N(mu_theta(x_t, t), sigma_t^2 I)  (t = T..2),
    x_0 | x_1 ~ N(mu_theta(x_1, 1), beta_1 I)                           (the decoder)

Sites are named ``x_1`` .. ``x_T`` (latent) and ``x_0`` (observed), all in the ``data``
plate. The guide is the forward process (:mod:`probdiff.guides.ddpm`), written forwards or
backwards. sigma_t^2 is ``fixed_small`` (sigma_q(t)^2) or ``fixed_large`` (beta_t); the
decoder's variance is beta_1 in both cases (sigma_q(1) = 0 would make it a point mass).

mu_theta comes from the network's output through one of three parameterisations:
``eps`` (the noise: mu = (x_t - beta_t / sqrt(1 - abar_t) eps) / sqrt(alpha_t)), ``x0``
(mu = mu_q(x_t, x0_hat)) or ``score`` (eps = -sqrt(1 - abar_t) s).
"""

from __future__ import annotations

import math

import numpy as np
import pyro
import pyro.distributions as dist
import torch
from pyro import poutine
from torch import nn

from probdiff.schedules import Schedule

PARAMETERISATIONS = ("eps", "x0", "score")


def site(t: int) -> str:
    """The sample-site name of x_t."""
    return f"x_{t}"


class ReverseChain(nn.Module):
    """p_theta(x_{t-1} | x_t): the network, the schedule and the parameterisation."""

    def __init__(self, net: nn.Module, schedule: Schedule, parameterisation: str = "eps",
                 variance: str = "fixed_small"):
        super().__init__()
        if parameterisation not in PARAMETERISATIONS:
            raise ValueError(f"unknown parameterisation {parameterisation!r}")
        self.net, self.schedule = net, schedule
        self.parameterisation, self.variance = parameterisation, variance
        self.scales = np.sqrt(schedule.reverse_variance(variance))

    def eps(self, xt: torch.Tensor, t) -> torch.Tensor:
        """The predicted noise eps_theta(x_t, t) under any parameterisation."""
        s = self.schedule
        out = self.net(xt, t)
        if self.parameterisation == "eps":
            return out
        if self.parameterisation == "score":
            return -_coef(np.sqrt(1 - s.abar), t, xt) * out
        # x0: invert x_t = sqrt(abar) x0 + sqrt(1 - abar) eps
        return (xt - _coef(np.sqrt(s.abar), t, xt) * out) / _coef(np.sqrt(1 - s.abar), t, xt)

    def mean(self, xt: torch.Tensor, t) -> torch.Tensor:
        """mu_theta(x_t, t)."""
        s = self.schedule
        if self.parameterisation == "x0":
            return s.posterior_mean(self.net(xt, t), xt, _index(t))
        return s.mean_from_eps(xt, _index(t), self.eps(xt, t))

    def step_scale(self, t: int) -> float:
        """sigma_t of p_theta(x_{t-1} | x_t) for t >= 2; the decoder's sqrt(beta_1) at t = 1."""
        return float(self.scales[t]) if t >= 2 else math.sqrt(self.schedule.betas[1])


class DDPMModel:
    """Pyro model of the whole reverse chain; call as ``model(x0, n_total=None)``."""

    def __init__(self, chain: ReverseChain):
        self.chain = chain
        self.T = chain.schedule.T

    def __call__(self, x0: torch.Tensor, n_total: int | None = None) -> None:
        pyro.module("ddpm", self.chain, update_module_params=True)
        n, d = x0.shape
        with pyro.plate("data", n), poutine.scale(scale=(n_total or n) / n):
            x = pyro.sample(site(self.T), dist.Normal(x0.new_zeros(d), x0.new_ones(d)).to_event(1))
            for t in range(self.T, 1, -1):
                x = pyro.sample(site(t - 1), dist.Normal(self.chain.mean(x, t),
                                                         self.chain.step_scale(t)).to_event(1))
            pyro.sample("x_0", dist.Normal(self.chain.mean(x, 1), self.chain.step_scale(1))
                        .to_event(1), obs=x0)


def _index(t):
    return t if isinstance(t, int) else t.detach().cpu().numpy()


def _coef(values: np.ndarray, t, x: torch.Tensor) -> torch.Tensor | float:
    """values[t] broadcast against x: a float for one int t, a column for one t per row."""
    if isinstance(t, int):
        return float(values[t])
    return torch.as_tensor(values[_index(t)], dtype=x.dtype, device=x.device)[:, None]
