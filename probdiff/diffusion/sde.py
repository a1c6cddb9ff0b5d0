"""Forward SDEs of the diffusion (docs/equations.md (4.1), (4.2)), behind one small interface.

    forward   dx = f(x, t) dt + g(t) dw,                         t in [0, 1]
    reverse   dx = [f(x, t) - g(t)^2 s(x, t)] dt + g(t) dw_bar,  s = grad_x log p_t
    flow ODE  dx = [f(x, t) - g(t)^2 s(x, t) / 2] dt            (same marginals p_t)

Every SDE here is linear in x, so x_t | x_0 ~ N(a(t) x_0, v(t) I) with ``marginal`` returning
(a(t), sqrt(v(t))). Song et al. (2021), "Score-based generative modeling through SDEs":

* VP  f = -beta(t) x / 2, g = sqrt(beta(t)), beta(t) = b0 + t (b1 - b0):
      a(t) = exp(-B(t) / 2), v(t) = 1 - a(t)^2, B(t) = int_0^t beta = b0 t + (b1 - b0) t^2 / 2.
      DDPM with T steps and betas beta_i is its discretisation with beta(i/T) ~ T beta_i.
* VE  f = 0, g = sqrt(d sigma(t)^2 / dt), sigma(t) = smin (smax / smin)^t:
      a = 1, v(t) = sigma(t)^2 - smin^2 (exact for the SDE started at the data; Song et al.
      use sigma(t)^2, i.e. data already blurred by smin). SMLD/NCSN is its discretisation.
* sub-VP  f as VP, g^2 = beta(t) (1 - exp(-2 B(t))): a(t) as VP, v(t) = (1 - a(t)^2)^2.

Times and scalars are tensors of shape (N,) broadcast over the rows of x (N, ...) by
``expand``; x may be vectors or flattened images.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Callable

import numpy as np
import torch

from probdiff.errors import ProbdiffError

ScoreFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
from probdiff.diffusion import SDE_NAMES  # noqa: E402


def expand(v: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """A per-row scalar (N,) shaped to broadcast against x (N, ...)."""
    return v.reshape(v.shape + (1,) * (x.dim() - v.dim()))


class SDE(ABC):
    """A linear forward SDE on t in [0, 1] with a Gaussian prior at t = 1."""

    name: str = ""

    @abstractmethod
    def drift(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """f(x, t), shaped like x (N, ...) for t of shape (N,)."""

    @abstractmethod
    def diffusion(self, t: torch.Tensor) -> torch.Tensor:
        """g(t), shaped like t."""

    def drift_diffusion(
        self, x: torch.Tensor, t: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(f(x, t) shaped like x, g(t) shaped (N,))."""
        return self.drift(x, t), self.diffusion(t)

    @abstractmethod
    def marginal(self, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(a(t), std(t)): x_t | x_0 ~ N(a(t) x_0, std(t)^2 I) (docs/equations.md (4.3))."""

    @abstractmethod
    def prior_std(self) -> float:
        """Standard deviation of the prior N(0, std^2 I) that stands in for p_1."""

    def prior_sample(
        self,
        shape: tuple[int, ...],
        generator: torch.Generator | None = None,
        dtype: torch.dtype = torch.float32,
        device: str = "cpu",
    ) -> torch.Tensor:
        return self.prior_std() * torch.randn(
            shape, generator=generator, dtype=dtype, device=device
        )

    def prior_log_prob(self, x: torch.Tensor) -> torch.Tensor:
        """log N(x; 0, std^2 I) summed over each row."""
        s = self.prior_std()
        d = x[0].numel()
        return -0.5 * x.reshape(len(x), -1).pow(2).sum(1) / s**2 - d * (
            math.log(s) + 0.5 * math.log(2 * math.pi)
        )

    def perturb(self, x0: torch.Tensor, t: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """x_t = a(t) x_0 + std(t) noise (docs/equations.md (4.3))."""
        a, s = self.marginal(t)
        return expand(a, x0) * x0 + expand(s, x0) * noise

    def discretize(
        self, x: torch.Tensor, t: torch.Tensor, dt: float
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """One forward step of size dt as x_{t+dt} = x + F + G z: (F, G). Euler-Maruyama by
        default; subclasses give the exact discrete chain they are the limit of."""
        f, g = self.drift_diffusion(x, t)
        return f * dt, g * math.sqrt(dt)

    def reverse_drift(
        self, score: ScoreFn, x: torch.Tensor, t: torch.Tensor, probability_flow: bool = False
    ) -> torch.Tensor:
        """f - g^2 s (reverse SDE) or f - g^2 s / 2 (probability-flow ODE), in forward time
        (a step backwards is x - drift |dt|); docs/equations.md (4.1), (4.2)."""
        f, g = self.drift_diffusion(x, t)
        weight = 0.5 if probability_flow else 1.0
        return f - weight * expand(g**2, x) * score(x, t)

    def reverse_discretize(
        self, score: ScoreFn, x: torch.Tensor, t: torch.Tensor, dt: float
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The reverse of the forward step t - dt -> t (Song et al.'s reverse diffusion):
        x_{t-dt} = x - F + G^2 s(x, t) + G z with (F, G) = discretize(x, t - dt, dt);
        returns (x - F + G^2 s, G); docs/equations.md (4.11)."""
        F, G = self.discretize(x, t - dt, dt)
        return x - F + expand(G**2, x) * score(x, t), G


class VPSDE(SDE):
    """Variance preserving (docs/equations.md (4.4)); ``from_schedule`` gives the SDE a DDPM
    schedule discretises (docs/equations.md (4.5))."""

    name = "vp"

    def __init__(self, beta_min: float = 0.1, beta_max: float = 20.0):
        if not 0 < beta_min <= beta_max:
            raise ProbdiffError(
                f"the VP SDE needs 0 < beta_min <= beta_max, got {beta_min}, {beta_max}"
            )
        self.beta_min, self.beta_max = float(beta_min), float(beta_max)

    @classmethod
    def from_schedule(cls, betas: np.ndarray) -> VPSDE:
        """betas (T,) of a linear DDPM schedule (t = 1..T) -> beta(0) = T beta_1, beta(1) =
        T beta_T, i.e. beta((i - 1) / (T - 1)) = T beta_i (Song et al.'s mapping; it puts step i
        one grid point earlier than t = i / T, an O(1/T) difference); docs/equations.md (4.5)."""
        T = len(betas)
        return cls(T * float(betas[0]), T * float(betas[-1]))

    def beta(self, t: torch.Tensor) -> torch.Tensor:
        return self.beta_min + t * (self.beta_max - self.beta_min)

    def integral(self, t: torch.Tensor) -> torch.Tensor:
        """B(t) = int_0^t beta(s) ds."""
        return self.beta_min * t + 0.5 * (self.beta_max - self.beta_min) * t**2

    def drift(self, x, t):
        return -0.5 * expand(self.beta(t), x) * x

    def diffusion(self, t):
        return torch.sqrt(self.beta(t))

    def marginal(self, t):
        a = torch.exp(-0.5 * self.integral(t))
        return a, torch.sqrt(-torch.expm1(-self.integral(t)))

    def prior_std(self) -> float:
        return 1.0

    def step_alpha(self, t: torch.Tensor, dt: float) -> torch.Tensor:
        """alpha = exp(-int_t^{t+dt} beta): the VP SDE's exact transition over [t, t + dt] is
        N(sqrt(alpha) x, (1 - alpha) I), a DDPM step with beta_i = 1 - alpha = beta(t) dt +
        O(dt^2) that stays in (0, 1) however coarse the grid (docs/equations.md (4.5))."""
        return torch.exp(-(self.integral(t + dt) - self.integral(t)))

    def discretize(self, x, t, dt):
        """The DDPM step x_{i+1} = sqrt(alpha_i) x_i + sqrt(1 - alpha_i) z (``step_alpha``)."""
        alpha = self.step_alpha(t, dt)
        return expand(torch.sqrt(alpha) - 1, x) * x, torch.sqrt(1 - alpha)


class ScheduleSDE(VPSDE):
    """The VP SDE whose marginals equal a DDPM chain's at every step: B(t) interpolates
    -log abar_i linearly between t = i / T, so beta(t) = T (-log(1 - beta_i)) on
    ((i - 1) / T, i / T] and a(i / T) = sqrt(abar_i), std(i / T) = sqrt(1 - abar_i) exactly,
    for any schedule. The probability-flow likelihood of a trained DDPM uses it.
    docs/equations.md (4.5)."""

    def __init__(self, abar: np.ndarray):
        abar = np.asarray(abar, dtype=np.float64)  # (T + 1,), abar[0] = 1
        if (
            abar.ndim != 1
            or len(abar) < 2
            or abar[0] != 1.0
            or not np.all(np.diff(abar) < 0)
            or abar[-1] <= 0
        ):
            raise ProbdiffError(
                "ScheduleSDE needs abar_0 = 1 > abar_1 > ... > abar_T > 0 (Schedule.abar, t = 0..T)"
            )
        self.T_discrete = len(abar) - 1
        self._B = torch.as_tensor(-np.log(abar))
        self._beta = torch.as_tensor(np.diff(-np.log(abar)) * self.T_discrete)
        self.beta_min, self.beta_max = float(self._beta[0]), float(self._beta[-1])

    def _pos(self, t: torch.Tensor):
        u = t.to(torch.float64) * self.T_discrete
        i = torch.clamp(torch.ceil(u).long(), 1, self.T_discrete)
        return u, i

    def beta(self, t):
        _, i = self._pos(t)
        return self._beta.to(t.device)[i - 1].to(t.dtype)

    def integral(self, t):
        u, i = self._pos(t)
        B = self._B.to(t.device)
        return (B[i - 1] + (u - (i - 1)) * (B[i] - B[i - 1])).to(t.dtype)


class SubVPSDE(VPSDE):
    """Sub-variance preserving: the VP drift with g^2 = beta(t)(1 - exp(-2 B(t)))
    (docs/equations.md (4.6))."""

    name = "subvp"

    def diffusion(self, t):
        return torch.sqrt(self.beta(t) * -torch.expm1(-2 * self.integral(t)))

    def marginal(self, t):
        a = torch.exp(-0.5 * self.integral(t))
        return a, -torch.expm1(-self.integral(t))

    def discretize(self, x, t, dt):
        return SDE.discretize(self, x, t, dt)


class VESDE(SDE):
    """Variance exploding: sigma(t) = smin (smax / smin)^t (docs/equations.md (4.7))."""

    name = "ve"

    def __init__(self, sigma_min: float = 0.01, sigma_max: float = 50.0):
        if not 0 < sigma_min < sigma_max:
            raise ProbdiffError(
                f"the VE SDE needs 0 < sigma_min < sigma_max, got {sigma_min}, {sigma_max}"
            )
        self.sigma_min, self.sigma_max = float(sigma_min), float(sigma_max)

    def sigma(self, t: torch.Tensor) -> torch.Tensor:
        return self.sigma_min * (self.sigma_max / self.sigma_min) ** t

    def drift(self, x, t):
        return torch.zeros_like(x)

    def diffusion(self, t):
        return self.sigma(t) * math.sqrt(2 * math.log(self.sigma_max / self.sigma_min))

    def marginal(self, t):
        """std = sqrt(sigma(t)^2 - smin^2) = smin sqrt(expm1(2 t log(smax / smin))), the
        second form accurate in float32 at small t."""
        rate = 2 * math.log(self.sigma_max / self.sigma_min)
        return torch.ones_like(t), self.sigma_min * torch.sqrt(torch.expm1(rate * t))

    def prior_std(self) -> float:
        return math.sqrt(self.sigma_max**2 - self.sigma_min**2)

    def discretize(self, x, t, dt):
        """The SMLD step x_{i+1} = x_i + sqrt(sigma(t + dt)^2 - sigma(t)^2) z."""
        g = torch.sqrt(self.sigma(t + dt) ** 2 - self.sigma(t) ** 2)
        return torch.zeros_like(x), g


def make_sde(
    name: str,
    beta_min: float = 0.1,
    beta_max: float = 20.0,
    sigma_min: float = 0.01,
    sigma_max: float = 50.0,
) -> SDE:
    """``vp`` | ``ve`` | ``subvp`` with their parameters."""
    if name == "vp":
        return VPSDE(beta_min, beta_max)
    if name == "subvp":
        return SubVPSDE(beta_min, beta_max)
    if name == "ve":
        return VESDE(sigma_min, sigma_max)
    raise ProbdiffError(f"unknown SDE {name!r}: choose {', '.join(SDE_NAMES)}")
