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
from torch.distributions import kl_divergence

from probdiff.diffusion.likelihoods import DiscretizedGaussian
from probdiff.diffusion.schedules import Schedule
from probdiff.plates import data_plate

PARAMETERISATIONS = ("eps", "x0", "score")
VARIANCES = ("fixed_small", "fixed_large", "learned")
DECODER_VARIANCES = ("beta1", "clipped")
DECODERS = ("gaussian", "discretized")
WEIGHTINGS = ("elbo", "simple")
STEPS_PLATE, SITE_XT, SITE_PREV = "steps", "x_t", "x_prev"
SITE_U = "u_t"  # the uniform that picks each datum's step in the per-datum estimator
SITE_PREV_VLB = "x_prev_vlb"  # the hybrid objective's second view of x_{t-1}


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


class Tables:
    """Per-step arrays (index t) as tensors, made once per dtype and device, so steps given
    one per row are looked up on the device without a host round trip (and a traced step
    holds them as constants). ``Tables.of(schedule, **extra)`` holds the schedule's."""

    def __init__(self, arrays: dict[str, np.ndarray]):
        self.arrays, self._made = arrays, {}

    @classmethod
    def of(cls, schedule: Schedule, **extra: np.ndarray) -> Tables:
        s = schedule
        one_minus = np.where(s.abar < 1, 1 - s.abar, 1.0)
        return cls(
            {
                "sqrt_abar": np.sqrt(s.abar),
                "sqrt_one_minus_abar": np.sqrt(1 - s.abar),
                "eps_coef": s.betas / np.sqrt(one_minus),  # (2.10)
                "inv_sqrt_alpha": 1 / np.sqrt(s.alphas),
                "post_x0": s.posterior_x0_coef,
                "post_xt": s.posterior_xt_coef,
                **extra,
            }
        )

    def __call__(self, like: torch.Tensor) -> dict[str, torch.Tensor]:
        key = (like.dtype, like.device)
        if key not in self._made:
            self._made[key] = {
                k: torch.as_tensor(v, dtype=like.dtype, device=like.device)
                for k, v in self.arrays.items()
            }
        return self._made[key]


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
        decoder_variance: str = "beta1",
    ):
        super().__init__()
        if decoder_variance not in DECODER_VARIANCES:
            raise ValueError(f"unknown decoder variance {decoder_variance!r}")
        if parameterisation not in PARAMETERISATIONS:
            raise ValueError(f"unknown parameterisation {parameterisation!r}")
        if decoder not in DECODERS or (decoder == "discretized" and not levels):
            raise ValueError(f"decoder {decoder!r} (levels {levels}) is not one of {DECODERS}")
        if variance not in VARIANCES:
            raise ValueError(f"unknown variance {variance!r}")
        self.net, self.schedule = net, schedule
        self.parameterisation, self.variance = parameterisation, variance
        self.decoder, self.levels = decoder, levels
        # the fixed decoder's variance: beta_1, or sigma_q(2)^2 (Ho et al.'s and Nichol and
        # Dhariwal's code: the log of sigma_q(t)^2 "clipped" at t = 1; docs/equations.md (2.25))
        self.decoder_variance = decoder_variance
        first = schedule.betas[1]
        if decoder_variance == "clipped" and schedule.T >= 2:
            first = schedule.posterior_variance[2]
        self.decoder_scale = math.sqrt(first)
        self.learned = variance == "learned"
        # fixed variances; for a learned one, sigma_q(t) is the reference of L_simple's weights
        self.scales = np.sqrt(
            schedule.reverse_variance("fixed_small" if self.learned else variance)
        )
        # the ends of the learned interpolation (docs/equations.md (2.24)); sigma_q(1) = 0, so
        # its log is taken at t = 2, as Nichol and Dhariwal do
        post = schedule.posterior_variance.copy()
        post[1] = post[2] if schedule.T >= 2 else schedule.betas[1]
        post[0] = 1.0
        betas = schedule.betas.copy()
        betas[0] = 1.0
        fixed = self.scales.copy()
        fixed[1] = self.decoder_scale  # sigma_t by step, the decoder's at t = 1
        self.tables = Tables.of(
            schedule, log_beta=np.log(betas), log_post=np.log(post), fixed_scale=fixed
        )

    def split(self, out: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The network's rows as (the parameterisation's output, the variance output v or
        None): a learning chain's network returns both, side by side."""
        if not self.learned:
            return out, None
        d = out.shape[-1] // 2
        return out[..., :d], out[..., d:]

    def _forward(self, xt: torch.Tensor, t):
        """(mu_theta, eps_theta, v) on rows: one network call."""
        out, v = self.split(self.net(xt, t))
        tab = self.tables(xt)
        if self.parameterisation == "x0":  # mu_q(x_t, x0_hat), docs/equations.md (2.5)
            a, b = _coef(tab["sqrt_abar"], t), _coef(tab["sqrt_one_minus_abar"], t)
            mu = _coef(tab["post_x0"], t) * out + _coef(tab["post_xt"], t) * xt
            return mu, (xt - a * out) / b, v
        if self.parameterisation == "score":  # eps = -sqrt(1 - abar) s
            out = -_coef(tab["sqrt_one_minus_abar"], t) * out
        mu = (xt - _coef(tab["eps_coef"], t) * out) * _coef(tab["inv_sqrt_alpha"], t)
        return mu, out, v

    def mean_and_scale(self, xt: torch.Tensor, t):
        """(mu_theta(x_t, t), sigma_theta(x_t, t)): with learned variances the scale is per
        coordinate, exp(log Sigma / 2) with log Sigma = f log beta_t + (1 - f) log
        sigma_q(t)^2 and f = (v + 1) / 2 clamped to [0, 1] (Nichol and Dhariwal, who do not
        clamp; docs/equations.md (2.24));
        otherwise the fixed sigma_t (the decoder's sqrt(beta_1) at t = 1), as a float for
        one int t or a column for one step per row."""
        xt, t, shape = _rows(xt, t)
        mu, _, v = self._forward(xt, t)
        if v is None:
            if isinstance(t, int):
                return mu.reshape(shape), self.step_scale(t)
            col = self.tables(xt)["fixed_scale"][t][:, None]
            return mu.reshape(shape), col.expand_as(mu).reshape(shape)
        tab = self.tables(xt)
        frac = ((v + 1) / 2).clamp(0.0, 1.0)  # Sigma stays between sigma_q(t)^2 and beta_t
        log_var = frac * _coef(tab["log_beta"], t) + (1 - frac) * _coef(tab["log_post"], t)
        return mu.reshape(shape), torch.exp(0.5 * log_var).reshape(shape)

    def decoder_dist(self, x1: torch.Tensor) -> dist.TorchDistribution:
        """p_theta(x_0 | x_1): N(mu_theta(x_1, 1), beta_1 I), or that Gaussian discretised to
        the data's levels on [-1, 1] (Ho et al.), one event over the data's coordinates;
        docs/equations.md (2.6), (2.17)."""
        if self.learned:
            return self.decoder_from_mean(*self.mean_and_scale(x1, 1))
        return self.decoder_from_mean(self.mean(x1, 1))

    def decoder_from_mean(self, mean: torch.Tensor, scale=None) -> dist.TorchDistribution:
        """:meth:`decoder_dist` given mu_theta(x_1, 1) (and a learned scale)."""
        if scale is None:
            scale = self.step_scale(1)
        if self.decoder == "discretized":
            scale = scale if torch.is_tensor(scale) else torch.full_like(mean, scale)
            return DiscretizedGaussian(mean, scale, self.levels, -1.0, 1.0).to_event(1)
        return dist.Normal(mean, scale).to_event(1)

    def eps(self, xt: torch.Tensor, t) -> torch.Tensor:
        """The predicted noise eps_theta(x_t, t) under any parameterisation; x_t is (..., D)
        and t one int or an integer tensor of shape x_t.shape[:-1]."""
        xt, t, shape = _rows(xt, t)
        return self._forward(xt, t)[1].reshape(shape)

    def mean(self, xt: torch.Tensor, t) -> torch.Tensor:
        """mu_theta(x_t, t) (shapes as :meth:`eps`)."""
        xt, t, shape = _rows(xt, t)
        return self._forward(xt, t)[0].reshape(shape)

    def kl_weight(self) -> np.ndarray:
        """lambda_t of :func:`kl_weights` for this chain's variances."""
        return kl_weights(self.schedule, self.scales)

    def step_scale(self, t: int) -> float:
        """sigma_t of p_theta(x_{t-1} | x_t) for t >= 2; the decoder's scale at t = 1
        (sqrt(beta_1), or sigma_q(2) with ``decoder_variance="clipped"``)."""
        return float(self.scales[t]) if t >= 2 else self.decoder_scale


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


def _coef(values: torch.Tensor, t) -> torch.Tensor:
    """values[t] as a column against rows (R, D): one int t, or one step per row."""
    return values[t] if isinstance(t, int) else values[t][:, None]


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
                if self.chain.learned:  # sigma_theta(x_t, t) per coordinate
                    mean, scales = self.chain.mean_and_scale(xt, tt)
                else:
                    mean = self.chain.mean(xt, tt)
                    scales = torch.as_tensor(
                        self.chain.scales[t.cpu().numpy()], dtype=x0.dtype, device=x0.device
                    )[:, None, None]  # t >= 2
                with poutine.scale(scale=step_weight(self.step_weights, t, x0)):
                    pyro.sample(SITE_PREV, dist.Normal(mean, scales).to_event(1))


class StepProposal:
    """How the per-datum estimator picks and weights each datum's step t in 1..T: t is the
    inverse CDF of ``probs`` (over t = 1..T; uniform by default, Ho et al.'s Algorithm 1) at
    a Uniform(0, 1) draw u, and its term is weighted by 1 / probs[t] (so the sum over t is
    estimated without bias) times ``step_weights[t]`` (L_simple's w_t, docs/equations.md
    (2.13); 1 for the bound). Shared by the model and its guide, which must scale alike.
    docs/equations.md (2.22)."""

    def __init__(self, T: int, probs: np.ndarray | None = None, step_weights=None):
        probs = np.full(T, 1.0 / T) if probs is None else np.asarray(probs, dtype=float)
        if probs.shape != (T,) or not np.all(probs > 0) or abs(probs.sum() - 1) > 1e-9:
            raise ValueError(f"step probabilities must be {T} positive numbers summing to 1")
        self.T, self.probs = T, probs
        self.cdf = np.cumsum(probs)
        w = np.ones(T + 1) if step_weights is None else np.asarray(step_weights, float).copy()
        w[0] = 0.0
        self.step_weights = w  # w_t alone (index t)
        self.row_weights = np.concatenate([[0.0], 1.0 / probs]) * w  # w_t / pi_t
        inverse = np.concatenate([[0.0], 1.0 / probs])
        self._tables = Tables({"cdf": self.cdf[:-1], "w": self.row_weights, "inv": inverse})

    def steps(self, u: torch.Tensor) -> torch.Tensor:
        """t = 1 + #{cdf entries <= u}, one per datum, in 1..T."""
        cdf = self._tables(u)["cdf"]
        return torch.searchsorted(cdf, u.detach().contiguous(), right=True) + 1

    def weights(self, t: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        """Each datum's scale, (N,)."""
        return self._tables(like)["w"][t]

    def inverse(self, t: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        """1 / pi_t per datum, without the step weights, (N,)."""
        return self._tables(like)["inv"][t]


HISTORY_SITE = "ddpm_step_history"


class ImportanceStepProposal(StepProposal):
    """Importance-sampled steps (Nichol and Dhariwal 2021, section 3.3): pi_t proportional
    to sqrt(E[L_t^2]) over the last ``history`` values of each term L_t (as weighted in the
    objective), uniform until every step has that many, mixed with ``floor`` of the uniform
    so no pi_t is 0; docs/equations.md (2.22), (2.23).

    The history is a parameter-store entry (``ddpm_step_history``: (T + 1) x (history + 1),
    the last column counting the values seen), so checkpoints carry it and a resumed fit
    continues exactly; it receives no gradient. Model and guide read pi from it at the start
    of a step; the model appends the step's terms after it has drawn its sites, and only
    when gradients are on (a training step, not an evaluation)."""

    def __init__(self, T: int, step_weights=None, history: int = 10, floor: float = 1e-3):
        super().__init__(T, None, step_weights)
        self.history, self.floor = history, floor

    def state(self, like: torch.Tensor) -> torch.Tensor:
        init = lambda: torch.zeros(  # noqa: E731
            (self.T + 1, self.history + 1), dtype=like.dtype, device=like.device
        )
        return pyro.param(HISTORY_SITE, init).detach()

    def current_probs(self, like: torch.Tensor) -> torch.Tensor:
        """pi_1..pi_T now, (T,); chosen on the device (no host round trip in a step)."""
        h = self.state(like)
        uniform = torch.full((self.T,), 1.0 / self.T, dtype=like.dtype, device=like.device)
        rms = h[1:, :-1].pow(2).mean(1).sqrt()
        total = rms.sum().clamp_min(torch.finfo(like.dtype).tiny)  # 0 only while not warm
        mixed = (1 - self.floor) * rms / total + self.floor * uniform
        return torch.where((h[1:, -1] >= self.history).all(), mixed, uniform)

    def steps(self, u: torch.Tensor) -> torch.Tensor:
        cdf = torch.cumsum(self.current_probs(u), 0)[:-1]
        return torch.searchsorted(cdf, u.detach().contiguous(), right=True) + 1

    def weights(self, t: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        w = torch.as_tensor(self.step_weights, dtype=like.dtype, device=like.device)[1:]
        return (w / self.current_probs(like))[t - 1]

    def inverse(self, t: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        return (1 / self.current_probs(like))[t - 1]

    def record(self, t: torch.Tensor, terms: torch.Tensor) -> None:
        """Append each row's term (its step's ring of ``history`` slots; rows sharing a step
        take consecutive slots)."""
        with torch.no_grad():
            h = pyro.param(HISTORY_SITE).unconstrained()
            order = torch.argsort(t, stable=True)
            ts = t[order]
            rank = torch.arange(len(ts), device=t.device) - torch.searchsorted(ts, ts)
            slot = (h[ts, -1].long() + rank) % self.history
            h[ts, slot] = terms[order].to(h.dtype)
            h[:, -1] += torch.bincount(t, minlength=self.T + 1).to(h.dtype)


def per_datum_proposal(
    schedule: Schedule, scales: np.ndarray, weighting: str, probs=None, timesteps="uniform"
):
    """The :class:`StepProposal` of the per-datum estimator: L_simple's weights are 1/lambda_t
    for t >= 2 and 2 alpha_1 for the decoder (docs/equations.md (2.13)); ``timesteps``
    ``importance`` learns pi from the terms (:class:`ImportanceStepProposal`)."""
    weights = None
    if weighting == "simple":
        weights = simple_weights(schedule, scales)
        weights[1] = 2 * schedule.alphas[1]
    if timesteps == "importance":
        return ImportanceStepProposal(schedule.T, weights)
    if timesteps != "uniform":
        raise ValueError(f"unknown timesteps {timesteps!r}")
    return StepProposal(schedule.T, probs, weights)


def forward_posterior_rows(tables: dict, x0, xt, t) -> dist.TorchDistribution:
    """q(x_{t-1} | x_t, x_0) with one step per row (docs/equations.md (2.5)); rows with
    t = 1 (a point mass) get scale 1 from ``safe_post_scales``."""
    col = lambda name: tables[name][t][:, None]  # noqa: E731
    mean = col("post_x0") * x0 + col("post_xt") * xt
    return dist.Normal(mean, col("safe_post_scales").expand_as(mean)).to_event(1)


def marginal_rows(tables: dict, x0: torch.Tensor, t: torch.Tensor) -> dist.TorchDistribution:
    """q(x_t | x_0) with one step per row (t of shape (N,); ``tables`` from :class:`Tables`);
    docs/equations.md (2.4)."""
    a, b = tables["sqrt_abar"][t][:, None], tables["sqrt_one_minus_abar"][t][:, None]
    return dist.Normal(a * x0, b.expand_as(x0)).to_event(1)


class DDPMPerDatumModel:
    """The ELBO with one step per datum (Ho et al.'s Algorithm 1 as a Pyro program; pair with
    :class:`probdiff.guides.ddpm.PerDatumGuide` under ``TraceMeanField_ELBO``).

    In the data plate: x_T ~ N(0, I) (prior matching, closed form); u ~ Uniform(0, 1) and
    t = proposal.steps(u) (model and guide draw u alike, so its KL is 0); an auxiliary
    x_t ~ q(x_t | x_0) (KL 0, as in :class:`DDPMTermsModel`); then one network call gives
    mu_theta(x_t, t) for every row, which enters as ``x_prev`` ~ N(mu_theta, sigma_t^2)
    on the rows with t >= 2 (against the guide's q(x_{t-1} | x_t, x_0): the KL of (2.8))
    and as the decoder p_theta(x_0 | x_1) on the rows with t = 1. Each row is scaled by
    1 / probs[t] (times L_simple's w_t), so the ELBO estimate is unbiased for docs/equations.md
    (2.8) at the cost of one network evaluation per datum (docs/equations.md (2.22)).

    A chain with learned variances (docs/equations.md (2.24)) uses sigma_theta(x_t, t) in
    both sites under the bound; under L_simple it keeps sigma_q(t) there (the squared error
    of eps) and adds the hybrid's lambda L_vlb: ``x_prev_vlb`` and ``x_0_vlb``, the same
    terms with sigma_theta and the mean held fixed (no gradient), scaled by lambda / pi_t,
    so L_simple trains the mean and L_vlb the variance (Nichol and Dhariwal's L_hybrid).
    """

    def __init__(
        self,
        chain: ReverseChain,
        weighting: str = "elbo",
        probs=None,
        timesteps="uniform",
        hybrid_lambda: float | None = None,
    ):
        if weighting not in WEIGHTINGS:
            raise ValueError(f"unknown weighting {weighting!r}")
        self.chain, self.weighting, self.T = chain, weighting, chain.schedule.T
        # a learning chain under L_simple adds lambda L_vlb on the variances (the hybrid)
        self.hybrid = None
        if chain.learned and weighting == "simple":
            self.hybrid = hybrid_weight(self.T) if hybrid_lambda is None else hybrid_lambda
        self.proposal = per_datum_proposal(
            chain.schedule, chain.scales, weighting, probs, timesteps
        )
        self.tables = per_datum_tables(chain.schedule, chain.scales)

    def __call__(self, x0: torch.Tensor, n_total: int | None = None) -> None:
        pyro.module("ddpm", self.chain, update_module_params=True)
        n, d = x0.shape
        with data_plate(n, n_total, dim=-1):
            pyro.sample(site(self.T), dist.Normal(x0.new_zeros(d), x0.new_ones(d)).to_event(1))
            u = pyro.sample(SITE_U, dist.Uniform(x0.new_zeros(()), x0.new_ones(())))
            t = self.proposal.steps(u)
            tab = self.tables(x0)
            xt = pyro.sample(SITE_XT, marginal_rows(tab, x0, t))
            first = t == 1
            if self.chain.learned:
                mean, learned = self.chain.mean_and_scale(xt, t)
            else:
                mean, learned = self.chain.mean(xt, t), None
            scale = tab["safe_scales"][t][:, None].expand_as(mean)
            if self.chain.learned and self.hybrid is None:  # the bound with sigma_theta
                scale = torch.where(first[:, None], 1.0, learned)
            # other rows see the data as their mean: a finite, gradient-free stand-in
            decoder_mean = torch.where(first[:, None], mean, x0)
            with poutine.scale(scale=self.proposal.weights(t, x0)):
                with poutine.mask(mask=~first):
                    pyro.sample(SITE_PREV, dist.Normal(mean, scale).to_event(1))
                dscale = learned if self.chain.learned and self.hybrid is None else None
                decoder = self.chain.decoder_from_mean(decoder_mean, dscale)
                with poutine.mask(mask=first):
                    pyro.sample("x_0", decoder, obs=x0)
            if self.hybrid is not None:  # lambda L_vlb, the means held fixed: only sigma learns
                with poutine.scale(scale=self.hybrid * self.proposal.inverse(t, x0)):
                    vlb_scale = torch.where(first[:, None], 1.0, learned)
                    with poutine.mask(mask=~first):
                        pyro.sample(
                            SITE_PREV_VLB, dist.Normal(mean.detach(), vlb_scale).to_event(1)
                        )
                    vlb_decoder = self.chain.decoder_from_mean(decoder_mean.detach(), learned)
                    with poutine.mask(mask=first):
                        pyro.sample("x_0_vlb", vlb_decoder, obs=x0)
            # a training step (gradients on) adds its terms; an evaluation does not
            if isinstance(self.proposal, ImportanceStepProposal) and torch.is_grad_enabled():
                with torch.no_grad():  # each row's term L_t, weighted as in the objective
                    kl = kl_divergence(
                        forward_posterior_rows(tab, x0, xt, t),
                        dist.Normal(mean, scale).to_event(1),
                    )
                    term = torch.where(first, -decoder.log_prob(x0), kl)
                    w = torch.as_tensor(
                        self.proposal.step_weights, dtype=x0.dtype, device=x0.device
                    )
                    self.proposal.record(t, w[t] * term)


def hybrid_weight(T: int) -> float:
    """lambda of L_hybrid = L_simple + lambda L_vlb in this program's units (sums over steps
    and coordinates, nats): Nichol and Dhariwal's 0.001 on their per-coordinate means, in
    bits, with their T / 1000 scaling, is T / (1000 ln 2); docs/equations.md (2.24)."""
    return T / (1000 * math.log(2))


def per_datum_tables(schedule: Schedule, scales: np.ndarray | None = None) -> Tables:
    """The schedule's tables with the finite stand-in scales of the per-datum program (the
    model's sigma_t, given ``scales``, and sigma_q(t)): rows with t = 1 are masked out of
    ``x_prev``, where sigma_q(1) = 0."""
    post = schedule.posterior_variance.copy()
    post[1] = 1.0
    extra = {"safe_post_scales": np.sqrt(post)}
    if scales is not None:
        extra["safe_scales"] = scales.copy()
        extra["safe_scales"][1] = 1.0
    return Tables.of(schedule, **extra)


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


def numpyro_to_pyro_params(params: dict) -> dict:
    """``ddpm$params.Dense_i.{kernel,bias}`` -> the torch chain's ``ddpm$$$net.net.{2i}.*``
    (:mod:`probdiff.twins`); a Pyro run's names are left as they are. Here, not beside the
    Flax network, so a Pyro run never imports JAX."""
    from probdiff.twins import flax_to_torch

    return flax_to_torch(params, {"ddpm": "ddpm$$$net.net"})
