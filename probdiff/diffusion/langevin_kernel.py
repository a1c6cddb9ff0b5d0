r"""Langevin dynamics as a Pyro MCMC kernel: MALA (Metropolis-adjusted) and ULA (unadjusted).

Langevin is an MCMC kernel for any model whose log density is differentiable; its chains can be
diagnosed with R-hat and ESS like any MCMC output (``arviz.from_pyro`` or :func:`to_inference_data`).

The chain runs on the unconstrained space, where the potential energy
:math:`U(x) = -\log p(x)` (log joint of the model plus the log-Jacobians of the transforms to the
unconstrained space, as for Pyro's HMC) comes from :func:`pyro.infer.mcmc.util.initialize_model`.
One step with step size :math:`\tau` is the discretised Langevin diffusion (the tutorial's
:math:`x_{k+1} = x_k + \tau s(x_k) + \sqrt{2\tau} z` with score :math:`s = \nabla \log p`)::

    x' = x + tau * grad log p(x) + sqrt(2 tau) * z,        z ~ N(0, I),

i.e. a Gaussian proposal :math:`q(x' \mid x) = N(x';\ x + \tau \nabla\log p(x),\ 2\tau I)` with

    log q(x' | x) = -|| x' - x - tau grad log p(x) ||^2 / (4 tau) + const.

MALA (``adjust=True``) accepts the proposal with the Metropolis-Hastings probability

    alpha(x, x') = min(1, [p(x') q(x | x')] / [p(x) q(x' | x)])
                 = min(1, exp(U(x) - U(x') + log q(x | x') - log q(x' | x))),

which makes :math:`p` exactly invariant (docs/equations.md (3.1), (3.2)). ULA (``adjust=False``)
always moves, so its stationary law is biased by O(tau): for :math:`p = N(0, 1)` the step is
:math:`x' = (1-\tau)x + \sqrt{2\tau}z`, whose stationary variance is
:math:`2\tau / (1 - (1-\tau)^2) = 1 / (1 - \tau/2)`. (A proposal with a non-finite potential or
gradient is rejected by both.)

During warmup, with ``adapt_step_size``, :math:`\log\tau` is tuned by dual averaging
(Nesterov 2009; Hoffman & Gelman 2014, Alg. 5) so that the MH acceptance probability (computed for
ULA too, as the adaptation signal) approaches ``target_accept_prob`` (0.574 is optimal for MALA,
Roberts & Rosenthal 1998); at the end of warmup :math:`\tau` is frozen at the averaged iterate
(docs/equations.md (3.3)).
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

import arviz as az
import numpy as np
import torch
from pyro.infer.autoguide.initialization import init_to_uniform
from pyro.infer.mcmc.mcmc_kernel import MCMCKernel
from pyro.infer.mcmc.util import initialize_model
from pyro.ops.integrator import potential_grad

Params = dict[str, torch.Tensor]

_LOG_STEP_MIN, _LOG_STEP_MAX = math.log(1e-10), math.log(1e10)


class _DualAveraging:
    """Dual averaging of log step size towards a target acceptance probability (Hoffman & Gelman
    2014, Alg. 5, with their constants gamma=0.05, t0=10, kappa=0.75 and mu = log(10 tau_0));
    docs/equations.md (3.3)."""

    def __init__(
        self,
        step_size: float,
        target: float,
        gamma: float = 0.05,
        t0: float = 10.0,
        kappa: float = 0.75,
    ):
        self.mu = math.log(10 * step_size)
        self.target, self.gamma, self.t0, self.kappa = target, gamma, t0, kappa
        self.t = 0
        self.h_bar = 0.0
        self.log_avg = math.log(step_size)

    def update(self, accept_prob: float) -> float:
        """Record one acceptance probability; return the next step size to use."""
        self.t += 1
        w = 1.0 / (self.t + self.t0)
        self.h_bar = (1 - w) * self.h_bar + w * (self.target - accept_prob)
        log_step = self.mu - math.sqrt(self.t) / self.gamma * self.h_bar
        log_step = min(max(log_step, _LOG_STEP_MIN), _LOG_STEP_MAX)
        eta = self.t**-self.kappa
        self.log_avg = eta * log_step + (1 - eta) * self.log_avg
        return math.exp(log_step)

    @property
    def averaged(self) -> float:
        return math.exp(self.log_avg)


def langevin_proposal(x: Params, grad_u: Params, step_size: float) -> Params:
    """x' = x - tau grad U(x) + sqrt(2 tau) z, z ~ N(0, I), per site (grad U = -grad log p)."""
    noise_scale = math.sqrt(2 * step_size)
    return {k: v - step_size * grad_u[k] + noise_scale * torch.randn_like(v) for k, v in x.items()}


def log_proposal_density(
    x_to: Params, x_from: Params, grad_u_from: Params, step_size: float
) -> torch.Tensor:
    """log q(x_to | x_from) = -||x_to - x_from + tau grad U(x_from)||^2 / (4 tau), up to a constant
    that cancels in the MH ratio."""
    sq = sum(((x_to[k] - x_from[k] + step_size * grad_u_from[k]) ** 2).sum() for k in x_to)
    return -sq / (4 * step_size)


def mala_accept_prob(
    x: Params,
    u: torch.Tensor,
    grad_u: Params,
    x_new: Params,
    u_new: torch.Tensor,
    grad_u_new: Params,
    step_size: float,
) -> float:
    """min(1, exp(U(x) - U(x') + log q(x | x') - log q(x' | x))); 0 when anything is non-finite
    (docs/equations.md (3.2))."""
    log_ratio = (
        u
        - u_new
        + log_proposal_density(x, x_new, grad_u_new, step_size)
        - log_proposal_density(x_new, x, grad_u, step_size)
    )
    log_ratio = float(log_ratio)
    if math.isnan(log_ratio):
        return 0.0
    return math.exp(min(log_ratio, 0.0))


def _all_finite(u: torch.Tensor, grad_u: Params) -> bool:
    return bool(torch.isfinite(u)) and all(bool(torch.isfinite(g).all()) for g in grad_u.values())


class Langevin(MCMCKernel):
    """Langevin-dynamics MCMC kernel (MALA with ``adjust=True``, ULA with ``adjust=False``).

    Give exactly one of ``model`` (a Pyro model; transforms, potential energy and initial values
    come from it as for :class:`pyro.infer.NUTS`) or ``potential_fn`` (a callable mapping a dict of
    unconstrained tensors to a scalar U = -log density; then ``initial_params`` must be set on the
    kernel or passed to :class:`pyro.infer.MCMC`).

    Example::

        mcmc = MCMC(Langevin(model), num_samples=1000, warmup_steps=500, num_chains=4)
        mcmc.run(data)
        idata = to_inference_data(mcmc)   # arviz.from_pyro plus accept_prob, step_size
    """

    def __init__(
        self,
        model: Callable[..., Any] | None = None,
        potential_fn: Callable[[Params], torch.Tensor] | None = None,
        step_size: float = 0.1,
        adjust: bool = True,
        adapt_step_size: bool = True,
        target_accept_prob: float = 0.574,
        transforms: dict | None = None,
        max_plate_nesting: int | None = None,
        init_strategy: Callable[..., Any] = init_to_uniform,
    ):
        if (model is None) == (potential_fn is None):
            raise ValueError(
                "Langevin needs exactly one of `model` (a Pyro model) or "
                "`potential_fn` (dict of unconstrained tensors -> -log density); got "
                + ("neither" if model is None else "both")
            )
        if (
            isinstance(step_size, bool)
            or not isinstance(step_size, (int, float))
            or not math.isfinite(step_size)
            or step_size <= 0
        ):
            raise ValueError(f"step_size must be a positive finite number, got {step_size!r}")
        if not 0.0 < target_accept_prob < 1.0:
            raise ValueError(f"target_accept_prob must be in (0, 1), got {target_accept_prob!r}")
        self.model = model
        self.potential_fn = potential_fn
        self.transforms = transforms
        self.adjust = adjust
        self.adapt_step_size = adapt_step_size
        self.target_accept_prob = target_accept_prob
        self.init_step_size = float(step_size)
        self._max_plate_nesting = max_plate_nesting
        self._init_strategy = init_strategy
        self._user_params: Params | None = None
        self._reset()
        super().__init__()

    # ----------------------------------------------------------------- state

    def _reset(self) -> None:
        self._step_size = self.init_step_size
        self._adapter = _DualAveraging(self.init_step_size, self.target_accept_prob)
        self._warmup_steps = 0
        self._warmup_done = False
        self._t = 0
        self._accept_cnt = 0
        self._mean_accept_prob = 0.0
        self._accept_probs: list[float] = []
        self._divergences: list[int] = []
        self._init_params: Params | None = None
        self._prototype_trace = None
        self._cache: tuple[Params, torch.Tensor, Params] | None = None

    def __getstate__(self) -> dict:
        """Pickle (for multiprocessing chains) without state derived from the model: ``setup``
        rebuilds the potential energy in the worker."""
        state = self.__dict__.copy()
        if self.model is not None:
            state["potential_fn"] = None
            state["_prototype_trace"] = None
        return state

    @property
    def step_size(self) -> float:
        return self._step_size

    @property
    def initial_params(self) -> Params | None:
        return self._init_params if self._init_params is not None else self._user_params

    @initial_params.setter
    def initial_params(self, params: Params | None) -> None:
        self._user_params = params

    # ----------------------------------------------------------- MCMC hooks

    def setup(self, warmup_steps: int, *args: Any, **kwargs: Any) -> None:
        self._reset()
        self._warmup_steps = warmup_steps
        if self.model is not None:
            self._init_params, self.potential_fn, self.transforms, self._prototype_trace = (
                initialize_model(
                    self.model,
                    args,
                    kwargs,
                    transforms=self.transforms,
                    max_plate_nesting=self._max_plate_nesting,
                    init_strategy=self._init_strategy,
                    initial_params=self._user_params,
                )
            )
        elif self._user_params is None:
            raise ValueError(
                "Langevin(potential_fn=...) needs starting values: pass "
                "initial_params to MCMC or set kernel.initial_params"
            )
        else:
            self._init_params = dict(self._user_params)
            if self.transforms is None:
                self.transforms = {}
        self._init_params = {k: v.detach() for k, v in self._init_params.items()}
        if self._init_params:
            self._cache = self._evaluate(self._init_params)

    def _evaluate(self, z: Params) -> tuple[Params, torch.Tensor, Params]:
        grad_u, u = potential_grad(self.potential_fn, z)
        return z, u.detach(), {k: g.detach() for k, g in grad_u.items()}

    def _current(self, params: Params) -> tuple[Params, torch.Tensor, Params]:
        cached = self._cache
        if (
            cached is None
            or cached[0].keys() != params.keys()
            or any(cached[0][k] is not v for k, v in params.items())
        ):
            cached = self._evaluate({k: v.detach() for k, v in params.items()})
        return cached

    def sample(self, params: Params) -> Params:
        if not params:
            self._record(1.0, accepted=True, finite=True)
            return params
        z, u, grad_u = self._current(params)
        tau = self._step_size
        z_new, u_new, grad_u_new = self._evaluate(langevin_proposal(z, grad_u, tau))
        accept_prob = mala_accept_prob(z, u, grad_u, z_new, u_new, grad_u_new, tau)
        finite = _all_finite(u_new, grad_u_new)
        accepted = finite and (not self.adjust or float(torch.rand(())) < accept_prob)
        self._cache = (z_new, u_new, grad_u_new) if accepted else (z, u, grad_u)
        self._record(accept_prob, accepted, finite)
        return dict(self._cache[0])

    def _record(self, accept_prob: float, accepted: bool, finite: bool) -> None:
        self._t += 1
        if self._t <= self._warmup_steps:
            n = self._t
            if self.adapt_step_size:
                self._step_size = self._adapter.update(accept_prob)
            if self._t == self._warmup_steps:
                self.end_warmup()
        else:
            n = self._t - self._warmup_steps
            self._accept_cnt += int(accepted)
            self._accept_probs.append(accept_prob)
            if not finite:
                self._divergences.append(n - 1)
        self._mean_accept_prob += (accept_prob - self._mean_accept_prob) / n

    def end_warmup(self) -> None:
        """Freeze the step size at the dual-averaging average (idempotent)."""
        if not self._warmup_done and self.adapt_step_size and self._adapter.t > 0:
            self._step_size = self._adapter.averaged
        self._warmup_done = True

    def logging(self) -> OrderedDict:
        return OrderedDict(
            [
                ("step size", f"{self._step_size:.2e}"),
                ("acc. prob", f"{self._mean_accept_prob:.3f}"),
            ]
        )

    def diagnostics(self) -> dict:
        """Per chain: acceptance rate and step size after warmup, the per-draw MH acceptance
        probabilities, and ``divergences`` (draws whose proposal had a non-finite potential; the
        key ``arviz.from_pyro`` reads)."""
        draws = max(self._t - self._warmup_steps, 0)
        return {
            "divergences": list(self._divergences),
            "acceptance rate": self._accept_cnt / draws if draws else float("nan"),
            "step size": self._step_size,
            "accept_prob": list(self._accept_probs),
        }

    def cleanup(self) -> None:
        self._init_params = None
        self._cache = None
        self._prototype_trace = None


def to_inference_data(mcmc: Any, **from_pyro_kwargs: Any) -> az.InferenceData:
    """``arviz.from_pyro(mcmc)`` plus sample_stats ``accept_prob`` (per draw) and ``step_size``
    (per chain, repeated over draws) from a :class:`Langevin` run."""
    idata = az.from_pyro(mcmc, **from_pyro_kwargs)
    diag = mcmc.diagnostics()
    chains = [f"chain {i}" for i in range(mcmc.num_chains)]
    if "accept_prob" in diag:
        accept = np.array([diag["accept_prob"][c] for c in chains], dtype=float)
        steps = np.array([diag["step size"][c] for c in chains], dtype=float)
        idata.sample_stats["accept_prob"] = (("chain", "draw"), accept)
        idata.sample_stats["step_size"] = (
            ("chain", "draw"),
            np.repeat(steps[:, None], accept.shape[1], axis=1),
        )
    return idata
