"""DDPM as a Pyro program (docs/equations.md (2.6)): the reverse chain is the model.

    x_T ~ N(0, I),   x_{t-1} | x_t ~ N(mu_theta(x_t, t), sigma_t^2 I)  (t = T..2),
    x_0 | x_1 ~ N(mu_theta(x_1, 1), beta_1 I)                           (the decoder)

Sites are named ``x_1`` .. ``x_T`` (latent) and ``x_0`` (observed), all in the ``data``
plate. The guide is the forward process (:mod:`probdiff.guides.ddpm`), written forwards or
backwards. sigma_t^2 is ``fixed_small`` (sigma_q(t)^2) or ``fixed_large`` (beta_t); the
decoder's variance is beta_1 in both cases (sigma_q(1) = 0 would make it a point mass).

mu_theta comes from the network's output through one of three parameterisations
(docs/equations.md (2.10), (2.11), (2.12)):
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

from probdiff.diffusion.likelihoods import DiscretizedGaussian
from probdiff.diffusion.schedules import Schedule
from probdiff.plates import data_plate

PARAMETERISATIONS = ("eps", "x0", "score")
DECODERS = ("gaussian", "discretized")
WEIGHTINGS = ("elbo", "simple")
STEPS_PLATE, SITE_XT, SITE_PREV = "steps", "x_t", "x_prev"


def kl_weights(schedule: Schedule, scales: np.ndarray) -> np.ndarray:
    """lambda_t with KL(q(x_{t-1}|x_t,x_0) || N(mu_theta, sigma_t^2)) = lambda_t ||eps -
    eps_theta||^2 + const: beta_t^2 / (2 sigma_t^2 (1 - abar_t) alpha_t), t = 2..T (index t);
    docs/equations.md (2.9), (2.10)."""
    s, lam = schedule, np.zeros(schedule.T + 1)
    t = np.arange(2, s.T + 1)
    lam[t] = s.betas[t] ** 2 / (2 * scales[t] ** 2 * (1 - s.abar[t]) * s.alphas[t])
    return lam


def simple_weights(schedule: Schedule, scales: np.ndarray) -> np.ndarray:
    """1 / lambda_t for t = 2..T (0 elsewhere): the KL weights that give L_simple
    (docs/equations.md (2.13))."""
    lam, w = kl_weights(schedule, scales), np.zeros(schedule.T + 1)
    w[2:] = 1.0 / lam[2:]
    return w


def site(t: int) -> str:
    """The sample-site name of x_t."""
    return f"x_{t}"


class ReverseChain(nn.Module):
    """p_theta(x_{t-1} | x_t): the network, the schedule and the parameterisation."""

    def __init__(
        self,
        net: nn.Module,
        schedule: Schedule,
        parameterisation: str = "eps",
        variance: str = "fixed_small",
        decoder: str = "gaussian",
        levels: int | None = None,
    ):
        super().__init__()
        if parameterisation not in PARAMETERISATIONS:
            raise ValueError(f"unknown parameterisation {parameterisation!r}")
        if decoder not in DECODERS or (decoder == "discretized" and not levels):
            raise ValueError(f"decoder {decoder!r} (levels {levels}) is not one of {DECODERS}")
        self.net, self.schedule = net, schedule
        self.parameterisation, self.variance = parameterisation, variance
        self.decoder, self.levels = decoder, levels
        self.scales = np.sqrt(schedule.reverse_variance(variance))

    def decoder_dist(self, x1: torch.Tensor) -> dist.TorchDistribution:
        """p_theta(x_0 | x_1): N(mu_theta(x_1, 1), beta_1 I), or that Gaussian discretised to
        the data's levels on [-1, 1] (Ho et al.), one event over the data's coordinates;
        docs/equations.md (2.6), (2.17)."""
        mean, scale = self.mean(x1, 1), self.step_scale(1)
        if self.decoder == "discretized":
            return DiscretizedGaussian(
                mean, torch.full_like(mean, scale), self.levels, -1.0, 1.0
            ).to_event(1)
        return dist.Normal(mean, scale).to_event(1)

    def eps(self, xt: torch.Tensor, t) -> torch.Tensor:
        """The predicted noise eps_theta(x_t, t) under any parameterisation; x_t is (..., D)
        and t one int or an integer tensor of shape x_t.shape[:-1]."""
        xt, t, shape = _rows(xt, t)
        s = self.schedule
        out = self.net(xt, t)
        if self.parameterisation == "score":
            out = -_coef(np.sqrt(1 - s.abar), t, xt) * out
        elif self.parameterisation == "x0":  # invert x_t = sqrt(abar) x0 + sqrt(1 - abar) eps
            out = (xt - _coef(np.sqrt(s.abar), t, xt) * out) / _coef(np.sqrt(1 - s.abar), t, xt)
        return out.reshape(shape)

    def mean(self, xt: torch.Tensor, t) -> torch.Tensor:
        """mu_theta(x_t, t) (shapes as :meth:`eps`)."""
        xt, t, shape = _rows(xt, t)
        s = self.schedule
        if self.parameterisation == "x0":
            mu = s.posterior_mean(self.net(xt, t), xt, _index(t))
        else:
            mu = s.mean_from_eps(xt, _index(t), self.eps(xt, t))
        return mu.reshape(shape)

    def kl_weight(self) -> np.ndarray:
        """lambda_t of :func:`kl_weights` for this chain's variances."""
        return kl_weights(self.schedule, self.scales)

    def step_scale(self, t: int) -> float:
        """sigma_t of p_theta(x_{t-1} | x_t) for t >= 2; the decoder's sqrt(beta_1) at t = 1."""
        return float(self.scales[t]) if t >= 2 else math.sqrt(self.schedule.betas[1])


class DDPMModel:
    """Pyro model of the whole reverse chain; call as ``model(x0, n_total=None)``. With the
    forward guide under ``Trace_ELBO`` its bound is docs/equations.md (2.7)."""

    def __init__(self, chain: ReverseChain):
        self.chain = chain
        self.T = chain.schedule.T

    def __call__(self, x0: torch.Tensor, n_total: int | None = None) -> None:
        pyro.module("ddpm", self.chain, update_module_params=True)
        n, d = x0.shape
        with data_plate(n, n_total):
            x = pyro.sample(site(self.T), dist.Normal(x0.new_zeros(d), x0.new_ones(d)).to_event(1))
            for t in range(self.T, 1, -1):
                x = pyro.sample(
                    site(t - 1),
                    dist.Normal(self.chain.mean(x, t), self.chain.step_scale(t)).to_event(1),
                )
            pyro.sample("x_0", self.chain.decoder_dist(x), obs=x0)


def _rows(xt: torch.Tensor, t):
    """x_t flattened to rows (R, D) with t an int or one step per row, and x_t's shape."""
    shape = xt.shape
    rows = xt.reshape(-1, shape[-1])
    if not isinstance(t, int):
        t = torch.as_tensor(t, device=xt.device).expand(shape[:-1]).reshape(-1)
    return rows, t, shape


def _index(t):
    return t if isinstance(t, int) else t.detach().cpu().numpy()


def _coef(values: np.ndarray, t, x: torch.Tensor) -> torch.Tensor | float:
    """values[t] broadcast against x: a float for one int t, a column for one t per row."""
    if isinstance(t, int):
        return float(values[t])
    return torch.as_tensor(values[_index(t)], dtype=x.dtype, device=x.device)[:, None]


class DDPMTermsModel:
    """The same ELBO, term by term, for training with timesteps subsampled (docs/equations.md
    (2.8), (2.14)); pair with
    :class:`probdiff.guides.ddpm.MarginalGuide` under ``TraceMeanField_ELBO``.

    Each consistency term depends on x_t only through q(x_t | x_0), so the model draws, in a
    plate over t = 2..T (``subsample`` of them, Pyro scaling by (T-1)/subsample), an auxiliary
    site ``x_t`` from that same marginal, then ``x_prev`` ~ p_theta(x_{t-1} | x_t); the decoder
    term's ``x_1`` is drawn the same way. An auxiliary site has exactly the guide's
    distribution, so its closed-form KL is 0 and the ELBO is

        E log p(x_0 | x_1) - KL(q(x_T|x_0) || N(0, I))
            - (T-1) E_t E_{q(x_t|x_0)} KL(q(x_{t-1}|x_t,x_0) || p_theta(x_{t-1}|x_t)),

    unbiased for the full chain's ELBO. ``weighting="simple"`` (docs/equations.md (2.13))
    scales each KL by 1/lambda_t
    and the decoder by 2 alpha_1, so with the Gaussian decoder the loss is
    sum_t ||eps - eps_theta(x_t, t)||^2 plus a constant: Ho et al.'s L_simple (times T); the
    discretised decoder keeps its own (non-quadratic) term, weighted the same way.
    ``TraceMeanField_ELBO`` scales a KL by the *guide* site's scale, so the guide must carry
    the same ``step_weights``. This model is for the bound; sampling uses :class:`DDPMModel`.
    """

    def __init__(self, chain: ReverseChain, subsample: int | None = None, weighting: str = "elbo"):
        if weighting not in WEIGHTINGS:
            raise ValueError(f"unknown weighting {weighting!r}")
        if chain.schedule.T < 2:
            raise ValueError("the term-by-term ELBO needs T >= 2")
        self.chain, self.weighting = chain, weighting
        self.T = chain.schedule.T
        self.subsample = subsample
        # per-step scale of the KL terms (index t), for this model and its guide
        self.step_weights = (
            simple_weights(chain.schedule, chain.scales) if weighting == "simple" else None
        )

    def __call__(self, x0: torch.Tensor, n_total: int | None = None) -> None:
        pyro.module("ddpm", self.chain, update_module_params=True)
        s, n, d = self.chain.schedule, x0.shape[0], x0.shape[1]
        simple = self.weighting == "simple"
        with data_plate(n, n_total, dim=-1):
            pyro.sample(site(self.T), dist.Normal(x0.new_zeros(d), x0.new_ones(d)).to_event(1))
            x1 = pyro.sample(site(1), marginal(s, x0, 1))
            with poutine.scale(scale=2 * s.alphas[1] if simple else 1.0):
                pyro.sample("x_0", self.chain.decoder_dist(x1), obs=x0)
            with pyro.plate(STEPS_PLATE, self.T - 1, subsample_size=self.subsample, dim=-2) as idx:
                t = idx + 2
                xt = pyro.sample(SITE_XT, marginal(s, x0, t))
                tt = t[:, None].expand(len(t), n)
                scales = torch.as_tensor(
                    self.chain.scales[t.cpu().numpy()], dtype=x0.dtype, device=x0.device
                )[:, None, None]  # t >= 2
                with poutine.scale(scale=step_weight(self.step_weights, t, x0)):
                    pyro.sample(SITE_PREV, dist.Normal(self.chain.mean(xt, tt), scales).to_event(1))


def step_weight(weights: np.ndarray | None, t: torch.Tensor, x0: torch.Tensor):
    """The ``steps`` plate's per-step scale (k, 1) against (k, N) batches; 1.0 for none."""
    if weights is None:
        return 1.0
    return torch.as_tensor(weights[t.cpu().numpy()], dtype=x0.dtype, device=x0.device)[:, None]


def marginal(schedule: Schedule, x0: torch.Tensor, t) -> dist.TorchDistribution:
    """q(x_t | x_0) = N(sqrt(abar_t) x_0, (1 - abar_t) I): for one int t, or a (k,) tensor of
    steps (a leading (k, 1, 1) batch against x_0 of shape (N, D)); docs/equations.md (2.4)."""
    a, b = np.sqrt(schedule.abar), np.sqrt(1 - schedule.abar)
    if isinstance(t, int):
        return dist.Normal(float(a[t]) * x0, float(b[t])).to_event(1)
    idx = t.cpu().numpy()
    col = lambda v: torch.as_tensor(v[idx], dtype=x0.dtype, device=x0.device)[:, None, None]  # noqa: E731
    return dist.Normal(col(a) * x0, col(b).expand(len(idx), *x0.shape)).to_event(1)


def elbo_terms(model, guide, x0: torch.Tensor, closed: bool = True) -> dict[str, torch.Tensor]:
    """One draw of every term of the ELBO per datum, {site: (N,) or (k, N)}: the decoder's
    log p(x_0 | x_1) (``x_0``), and per latent site -KL(q || p) in closed form (``closed``)
    or log p - log q at the drawn value, scaled as the guide scales it; the ``steps`` plate's
    sites keep one row per step. Their sum over sites (and steps) is the ELBO estimate
    (docs/equations.md (2.8), (2.9))."""
    from pyro.poutine.util import site_is_subsample
    from torch.distributions import kl_divergence

    gtr = poutine.trace(guide).get_trace(x0)
    mtr = poutine.trace(poutine.replay(model, trace=gtr)).get_trace(x0)
    out = {}
    for name, site in mtr.nodes.items():
        if site["type"] != "sample" or site_is_subsample(site):
            continue
        if site["is_observed"]:
            out[name] = site["fn"].log_prob(site["value"])
            continue
        g = gtr.nodes[name]
        if closed:
            term = -kl_divergence(g["fn"], site["fn"])
        else:
            term = site["fn"].log_prob(site["value"]) - g["fn"].log_prob(g["value"])
        out[name] = term * g["scale"]
    return out
