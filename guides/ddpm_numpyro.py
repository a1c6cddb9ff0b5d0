"""NumPyro twin of the DDPM's per-term forward-process guide (:mod:`probdiff.guides.ddpm`)."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist

from probdiff.diffusion.schedules import Schedule
from probdiff.models.ddpm.chain import SITE_PREV, SITE_U, SITE_XT, STEPS_PLATE, StepProposal, site
from probdiff.models.ddpm.chain_numpyro import marginal, marginal_rows, step_weight, steps
from probdiff.plates import numpyro_data_plate


class MarginalGuide:
    """NumPyro twin of :class:`probdiff.guides.ddpm.MarginalGuide` (docs/equations.md (2.5),
    (2.13), (2.14))."""

    def __init__(
        self,
        schedule: Schedule,
        subsample: int | None = None,
        step_weights: np.ndarray | None = None,
    ):
        self.s, self.subsample, self.step_weights = schedule, subsample, step_weights

    def __call__(self, x0, n_total: int | None = None) -> None:
        s, n = self.s, x0.shape[0]
        with numpyro_data_plate(n, n_total, dim=-1):
            numpyro.sample(site(s.T), marginal(s, x0, s.T))
            numpyro.sample(site(1), marginal(s, x0, 1))
            with numpyro.plate(STEPS_PLATE, s.T - 1, subsample_size=self.subsample, dim=-2) as idx:
                t = idx + 2
                xt = numpyro.sample(SITE_XT, marginal(s, x0, t))
                col = lambda v: jnp.asarray(v, x0.dtype)[t][:, None, None]  # noqa: E731
                mean = col(s.posterior_x0_coef) * x0 + col(s.posterior_xt_coef) * xt
                scale = jnp.broadcast_to(col(np.sqrt(s.posterior_variance)), mean.shape)
                with numpyro.handlers.scale(scale=step_weight(self.step_weights, t, x0)):
                    numpyro.sample(SITE_PREV, dist.Normal(mean, scale).to_event(1))


class PerDatumGuide:
    """NumPyro twin of :class:`probdiff.guides.ddpm.PerDatumGuide` (docs/equations.md (2.5),
    (2.22))."""

    def __init__(self, schedule: Schedule, proposal: StepProposal):
        self.s, self.proposal = schedule, proposal
        var = schedule.posterior_variance.copy()
        var[1] = 1.0  # masked rows (t = 1): any finite scale
        self.safe_scales = np.sqrt(var)

    def __call__(self, x0, n_total: int | None = None) -> None:
        s, n = self.s, x0.shape[0]
        with numpyro_data_plate(n, n_total, dim=-1):
            numpyro.sample(site(s.T), marginal(s, x0, s.T))
            u = numpyro.sample(SITE_U, dist.Uniform(jnp.zeros((), x0.dtype), 1.0))
            t = steps(self.proposal, u)
            xt = numpyro.sample(SITE_XT, marginal_rows(s, x0, t))
            col = lambda v: jnp.asarray(v, x0.dtype)[t][:, None]  # noqa: E731
            mean = col(s.posterior_x0_coef) * x0 + col(s.posterior_xt_coef) * xt
            weight = jnp.asarray(self.proposal.row_weights, x0.dtype)[t]
            with numpyro.handlers.scale(scale=weight), numpyro.handlers.mask(mask=t >= 2):
                numpyro.sample(SITE_PREV, dist.Normal(mean, col(self.safe_scales)).to_event(1))
