"""The forward (noising) process as the DDPM's guide (docs/equations.md (2.3), (2.4), (2.5)), in
two writings of the same joint q(x_{1:T} | x_0):

* forwards: x_t ~ q(x_t | x_{t-1}) = N(sqrt(alpha_t) x_{t-1}, beta_t I), t = 1..T;
* backwards: x_T ~ q(x_T | x_0) = N(sqrt(abar_T) x_0, (1 - abar_T) I), then
  x_{t-1} ~ q(x_{t-1} | x_t, x_0) = N(mu_q(x_t, x_0), sigma_q(t)^2 I), t = T..2.

The guide has no parameters. Written backwards, each site meets the model's site of the same
name as a pair of Gaussians given the same x_t, so ``TraceMeanField_ELBO`` takes every KL in
closed form: the rewritten ELBO (prior matching + sum of KL(q(x_{t-1}|x_t,x_0) ||
p_theta(x_{t-1}|x_t)) + the decoder's reconstruction term; docs/equations.md (2.8)). Written
forwards, with the full chain under ``Trace_ELBO``, it gives docs/equations.md (2.7).
"""

from __future__ import annotations

import math

import numpy as np
import pyro
import pyro.distributions as dist
import torch
from pyro import poutine

from probdiff.diffusion.schedules import Schedule
from probdiff.models.ddpm.chain import (
    SITE_PREV,
    SITE_PREV_VLB,
    SITE_U,
    SITE_XT,
    STEPS_PLATE,
    StepProposal,
    forward_posterior_rows,
    marginal,
    marginal_rows,
    per_datum_tables,
    site,
    step_weight,
)
from probdiff.plates import data_plate


class ForwardGuide:
    """q(x_{1:T} | x_0) sampled forwards; call as ``guide(x0, n_total=None)``."""

    def __init__(self, schedule: Schedule):
        self.schedule = schedule

    def __call__(self, x0: torch.Tensor, n_total: int | None = None) -> None:
        s, n = self.schedule, x0.shape[0]
        with data_plate(n, n_total):
            x = x0
            for t in range(1, s.T + 1):
                x = pyro.sample(
                    site(t),
                    dist.Normal(math.sqrt(s.alphas[t]) * x, math.sqrt(s.betas[t])).to_event(1),
                )


class BackwardGuide:
    """q(x_T | x_0) prod_t q(x_{t-1} | x_t, x_0); call as ``guide(x0, n_total=None)``."""

    def __init__(self, schedule: Schedule):
        self.schedule = schedule

    def __call__(self, x0: torch.Tensor, n_total: int | None = None) -> None:
        s, n = self.schedule, x0.shape[0]
        with data_plate(n, n_total):
            x = pyro.sample(
                site(s.T),
                dist.Normal(math.sqrt(s.abar[s.T]) * x0, math.sqrt(1 - s.abar[s.T])).to_event(1),
            )
            for t in range(s.T, 1, -1):
                x = pyro.sample(
                    site(t - 1),
                    dist.Normal(
                        s.posterior_mean(x0, x, t), math.sqrt(s.posterior_variance[t])
                    ).to_event(1),
                )


class MarginalGuide:
    """The guide of :class:`probdiff.models.ddpm.DDPMTermsModel`: per term only what it needs
    of the forward process: x_T ~ q(x_T|x_0), x_1 ~ q(x_1|x_0), and in the ``steps`` plate
    (t = 2..T, ``subsample`` of them) x_t ~ q(x_t|x_0), x_prev ~ q(x_{t-1}|x_t,x_0).
    ``step_weights`` (the model's, for L_simple) scale the ``x_prev`` sites.
    docs/equations.md (2.13), (2.14)."""

    def __init__(
        self,
        schedule: Schedule,
        subsample: int | None = None,
        step_weights: np.ndarray | None = None,
    ):
        self.schedule, self.subsample, self.step_weights = schedule, subsample, step_weights

    def __call__(self, x0: torch.Tensor, n_total: int | None = None) -> None:
        s, n = self.schedule, x0.shape[0]
        with data_plate(n, n_total, dim=-1):
            pyro.sample(site(s.T), marginal(s, x0, s.T))
            pyro.sample(site(1), marginal(s, x0, 1))
            with pyro.plate(STEPS_PLATE, s.T - 1, subsample_size=self.subsample, dim=-2) as idx:
                t = idx + 2
                xt = pyro.sample(SITE_XT, marginal(s, x0, t))
                idx_np = t.cpu().numpy()

                def col(v: np.ndarray) -> torch.Tensor:
                    return torch.as_tensor(v[idx_np], dtype=x0.dtype, device=x0.device)[
                        :, None, None
                    ]

                mean = col(s.posterior_x0_coef) * x0 + col(s.posterior_xt_coef) * xt
                scale = col(np.sqrt(s.posterior_variance)).expand(mean.shape)
                with poutine.scale(scale=step_weight(self.step_weights, t, x0)):
                    pyro.sample(SITE_PREV, dist.Normal(mean, scale).to_event(1))


class PerDatumGuide:
    """The guide of :class:`probdiff.models.ddpm.chain.DDPMPerDatumModel`: x_T ~ q(x_T | x_0),
    u ~ Uniform(0, 1) with t = proposal.steps(u), x_t ~ q(x_t | x_0), and on the rows with
    t >= 2 x_prev ~ q(x_{t-1} | x_t, x_0), scaled as the model scales it (the model's
    ``proposal``). docs/equations.md (2.5), (2.22)."""

    def __init__(self, schedule: Schedule, proposal: StepProposal, hybrid: float | None = None):
        self.schedule, self.proposal, self.hybrid = schedule, proposal, hybrid
        self.tables = per_datum_tables(schedule)

    def __call__(self, x0: torch.Tensor, n_total: int | None = None) -> None:
        s, n = self.schedule, x0.shape[0]
        with data_plate(n, n_total, dim=-1):
            pyro.sample(site(s.T), marginal(s, x0, s.T))
            u = pyro.sample(SITE_U, dist.Uniform(x0.new_zeros(()), x0.new_ones(())))
            t = self.proposal.steps(u)
            tab = self.tables(x0)
            xt = pyro.sample(SITE_XT, marginal_rows(tab, x0, t))
            posterior = forward_posterior_rows(tab, x0, xt, t)
            with (
                poutine.scale(scale=self.proposal.weights(t, x0)),
                poutine.mask(mask=t >= 2),
            ):
                pyro.sample(SITE_PREV, posterior)
            if self.hybrid is not None:  # the model's hybrid sites: lambda / pi_t
                with (
                    poutine.scale(scale=self.hybrid * self.proposal.inverse(t, x0)),
                    poutine.mask(mask=t >= 2),
                ):
                    pyro.sample(SITE_PREV_VLB, posterior)
