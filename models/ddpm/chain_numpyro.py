"""NumPyro twin of the DDPM's term-by-term ELBO (:class:`probdiff.models.ddpm.DDPMTermsModel`,
estimators (b) and (c)): the same sites, plates, scales and closed-form KLs under NumPyro's
``TraceMeanField_ELBO``, with the time-conditioned MLP in Flax (docs/equations.md (2.8),
(2.13), (2.14)).

The network ``TimeMLP`` has the torch twin's layers (``Dense_i``, SiLU between them) and the
same sinusoidal time features; a Flax kernel (in, out) is the torch ``net.net.{2i}.weight``
transposed. Parameters are registered with ``flax_module`` as ``ddpm``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import flax.linen as fnn
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
from numpyro.contrib.module import flax_module

from probdiff.diffusion.likelihoods_numpyro import DiscretizedGaussian
from probdiff.diffusion.schedules import Schedule
from probdiff.models.ddpm.chain import (
    SITE_PREV,
    SITE_U,
    SITE_XT,
    STEPS_PLATE,
    StepProposal,
    numpyro_to_pyro_params,  # noqa: F401  (re-exported)
    site,
)
from probdiff.plates import numpyro_data_plate


def time_features(t, T: int, size: int, dtype=jnp.float32):
    """(R,) steps -> (R, size): [sin(pi w t / T), cos(pi w t / T)], w from 1 to 1000."""
    half = size // 2
    freqs = np.exp(np.linspace(0.0, math.log(1000.0), half))
    angle = (jnp.asarray(t, dtype)[:, None] / T) * jnp.asarray(freqs, dtype)[None, :] * math.pi
    return jnp.concatenate([jnp.sin(angle), jnp.cos(angle)], axis=1)


class TimeMLP(fnn.Module):
    """[x, time_features(t)] -> Dense layers (SiLU between) -> the data's size."""

    dim: int
    hidden: Sequence[int]
    T: int
    embed: int = 32
    dtype: Any = jnp.float32

    @fnn.compact
    def __call__(self, x, t):
        h = jnp.concatenate([x, time_features(t, self.T, self.embed, self.dtype)], axis=-1)
        sizes = [*self.hidden, self.dim]
        for i, width in enumerate(sizes):
            h = fnn.Dense(width, dtype=self.dtype, param_dtype=self.dtype, name=f"Dense_{i}")(h)
            if i < len(sizes) - 1:
                h = fnn.silu(h)
        return h


class ReverseChain:
    """mu_theta and p_theta(x_0 | x_1) from a network ``net(x, t)`` (rows, one t per row);
    docs/equations.md (2.6)."""

    def __init__(
        self,
        net,
        schedule: Schedule,
        parameterisation: str,
        variance: str,
        decoder: str = "gaussian",
        levels: int | None = None,
    ):
        self.net, self.s = net, schedule
        self.parameterisation, self.decoder, self.levels = parameterisation, decoder, levels
        self.scales = np.sqrt(schedule.reverse_variance(variance))
        self.scales[1] = math.sqrt(schedule.betas[1])  # the decoder's scale

    def eps(self, xt, t):
        """eps_theta for x_t (..., D) and integer steps t of shape x_t.shape[:-1]
        (docs/equations.md (2.11), (2.12))."""
        shape = xt.shape
        rows, tt = xt.reshape(-1, shape[-1]), jnp.broadcast_to(t, shape[:-1]).reshape(-1)
        out = self.net(rows, tt)
        a = jnp.asarray(self.s.abar, rows.dtype)[tt][:, None]
        if self.parameterisation == "score":
            out = -jnp.sqrt(1 - a) * out
        elif self.parameterisation == "x0":
            out = (rows - jnp.sqrt(a) * out) / jnp.sqrt(1 - a)
        return out.reshape(shape)

    def mean(self, xt, t):
        """mu_theta(x_t, t) = (x_t - beta_t / sqrt(1 - abar_t) eps) / sqrt(alpha_t)
        (docs/equations.md (2.10))."""
        s = self.s
        tt = jnp.broadcast_to(t, xt.shape[:-1])[..., None]
        beta = jnp.asarray(s.betas, xt.dtype)[tt]
        abar = jnp.asarray(s.abar, xt.dtype)[tt]
        return (xt - beta / jnp.sqrt(1 - abar) * self.eps(xt, t)) / jnp.sqrt(1 - beta)

    def decoder_dist(self, x1):
        return self.decoder_from_mean(self.mean(x1, jnp.ones(x1.shape[:-1], jnp.int32)))

    def decoder_from_mean(self, mean):
        if self.decoder == "discretized":
            return DiscretizedGaussian(mean, self.scales[1], self.levels, -1.0, 1.0).to_event(1)
        return dist.Normal(mean, self.scales[1]).to_event(1)


def marginal(s: Schedule, x0, t):
    """q(x_t | x_0) for one int t, or a (k,) array of steps (a (k, 1, 1) batch);
    docs/equations.md (2.4)."""
    a, b = np.sqrt(s.abar), np.sqrt(1 - s.abar)
    if isinstance(t, int):
        return dist.Normal(a[t] * x0, b[t]).to_event(1)
    col = lambda v: jnp.asarray(v, x0.dtype)[t][:, None, None]  # noqa: E731
    return dist.Normal(col(a) * x0, jnp.broadcast_to(col(b), (len(t),) + x0.shape)).to_event(1)


def registered_chain(module: TimeMLP, schedule: Schedule, args: tuple, dtype) -> ReverseChain:
    """The reverse chain on the network registered (``flax_module``) as ``ddpm``."""
    net = flax_module(
        "ddpm", module, x=jnp.ones((1, module.dim), dtype), t=jnp.ones((1,), jnp.int32)
    )
    return ReverseChain(net, schedule, *args)


class DDPMTermsModel:
    """The term-by-term ELBO as a NumPyro model (see the Pyro twin for the construction)."""

    def __init__(
        self,
        module: TimeMLP,
        schedule: Schedule,
        parameterisation: str = "eps",
        variance: str = "fixed_small",
        decoder: str = "gaussian",
        levels: int | None = None,
        subsample: int | None = None,
        step_weights: np.ndarray | None = None,
    ):
        self.module, self.s = module, schedule
        self.args = (parameterisation, variance, decoder, levels)
        self.subsample, self.step_weights = subsample, step_weights

    def __call__(self, x0, n_total: int | None = None) -> None:
        chain = registered_chain(self.module, self.s, self.args, x0.dtype)
        s, n, d = self.s, x0.shape[0], x0.shape[1]
        with numpyro_data_plate(n, n_total, dim=-1):
            numpyro.sample(site(s.T), dist.Normal(jnp.zeros(d, x0.dtype), 1.0).to_event(1))
            x1 = numpyro.sample(site(1), marginal(s, x0, 1))
            decoder_weight = 2 * s.alphas[1] if self.step_weights is not None else 1.0
            with numpyro.handlers.scale(scale=decoder_weight):
                numpyro.sample("x_0", chain.decoder_dist(x1), obs=x0)
            with numpyro.plate(STEPS_PLATE, s.T - 1, subsample_size=self.subsample, dim=-2) as idx:
                t = idx + 2
                xt = numpyro.sample(SITE_XT, marginal(s, x0, t))
                scale = jnp.asarray(chain.scales, x0.dtype)[t][:, None, None]
                mean = chain.mean(xt, jnp.broadcast_to(t[:, None], (len(t), n)))
                with numpyro.handlers.scale(scale=step_weight(self.step_weights, t, x0)):
                    numpyro.sample(SITE_PREV, dist.Normal(mean, scale).to_event(1))


def steps(proposal: StepProposal, u):
    """t in 1..T from u ~ Uniform(0, 1), as the Pyro twin's ``StepProposal.steps``."""
    return jnp.searchsorted(jnp.asarray(proposal.cdf[:-1], u.dtype), u, side="right") + 1


def marginal_rows(s: Schedule, x0, t):
    """q(x_t | x_0) with one step per row (docs/equations.md (2.4))."""
    col = lambda v: jnp.asarray(v, x0.dtype)[t][:, None]  # noqa: E731
    return dist.Normal(
        col(np.sqrt(s.abar)) * x0, jnp.broadcast_to(col(np.sqrt(1 - s.abar)), x0.shape)
    ).to_event(1)


class DDPMPerDatumModel:
    """One step per datum as a NumPyro model (see the Pyro twin
    :class:`probdiff.models.ddpm.chain.DDPMPerDatumModel`; docs/equations.md (2.22))."""

    def __init__(
        self,
        module: TimeMLP,
        schedule: Schedule,
        proposal: StepProposal,
        parameterisation: str = "eps",
        variance: str = "fixed_small",
        decoder: str = "gaussian",
        levels: int | None = None,
    ):
        self.module, self.s, self.proposal = module, schedule, proposal
        self.args = (parameterisation, variance, decoder, levels)

    def __call__(self, x0, n_total: int | None = None) -> None:
        chain = registered_chain(self.module, self.s, self.args, x0.dtype)
        s, n, d = self.s, x0.shape[0], x0.shape[1]
        safe = chain.scales.copy()
        safe[1] = 1.0  # rows with t = 1 are masked out of x_prev
        with numpyro_data_plate(n, n_total, dim=-1):
            numpyro.sample(site(s.T), dist.Normal(jnp.zeros(d, x0.dtype), 1.0).to_event(1))
            u = numpyro.sample(SITE_U, dist.Uniform(jnp.zeros((), x0.dtype), 1.0))
            t = steps(self.proposal, u)
            xt = numpyro.sample(SITE_XT, marginal_rows(s, x0, t))
            mean = chain.mean(xt, t)
            first = t == 1
            weight = jnp.asarray(self.proposal.row_weights, x0.dtype)[t]
            with numpyro.handlers.scale(scale=weight):
                scale = jnp.asarray(safe, x0.dtype)[t][:, None]
                with numpyro.handlers.mask(mask=~first):
                    numpyro.sample(SITE_PREV, dist.Normal(mean, scale).to_event(1))
                decoder_mean = jnp.where(first[:, None], mean, x0)
                with numpyro.handlers.mask(mask=first):
                    numpyro.sample("x_0", chain.decoder_from_mean(decoder_mean), obs=x0)


def step_weight(weights, t, x0):
    if weights is None:
        return 1.0
    return jnp.asarray(weights, x0.dtype)[t][:, None]
