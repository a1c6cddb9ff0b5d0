"""Likelihoods for integer images (torch/Pyro): the discretised Gaussian of Ho et al. (2020).

Integer pixels v in {0, ..., K-1} are scaled to x = v / (K-1) in [0, 1]; level k owns the bin
[x - h, x + h] with h = 1 / (2 (K-1)), and the two end bins extend to -inf and +inf, so

    P(x | mu, s) = Phi((x + h - mu) / s) - Phi((x - h - mu) / s)      (interior levels)
    P(0 | mu, s) = Phi((h - mu) / s),   P(1 | mu, s) = 1 - Phi((1 - h - mu) / s),

a probability mass function over the K levels (it sums to one): its log is a log-likelihood of
the integer data itself, in nats, with no Jacobian (docs/equations.md (2.17)). See
:mod:`probdiff.diffusion.likelihoods_numpyro` for the NumPyro twin.
"""

from __future__ import annotations

import torch
from pyro.distributions import TorchDistribution, constraints
from torch.special import log_ndtr


def log_normal_interval(lo: torch.Tensor, hi: torch.Tensor) -> torch.Tensor:
    """log(Phi(hi) - Phi(lo)) for lo < hi, computed on the side of zero where it is accurate.

    With both ends in the upper tail Phi(hi) - Phi(lo) = Phi(-lo) - Phi(-hi), so the ends are
    reflected when lo + hi > 0; then log Phi(hi) + log(-expm1(log Phi(lo) - log Phi(hi))).
    """
    flip = (lo + hi) > 0
    a, b = torch.where(flip, -hi, lo), torch.where(flip, -lo, hi)
    la, lb = log_ndtr(a), log_ndtr(b)
    # a == b only for a zero-width bin: keep the log finite (its value is then meaningless)
    diff = torch.clamp(la - lb, max=-1e-30)
    return lb + torch.log(-torch.expm1(diff))


def discretized_gaussian_log_prob(
    x: torch.Tensor, loc: torch.Tensor, scale: torch.Tensor, levels: int
) -> torch.Tensor:
    """Elementwise log P(x | loc, scale) of the discretised Gaussian on ``levels`` levels in [0, 1]."""
    h = 0.5 / (levels - 1)
    lo, hi = (x - h - loc) / scale, (x + h - loc) / scale
    bottom, top = x < h, x > 1 - h
    interior = log_normal_interval(lo, hi)
    return torch.where(bottom, log_ndtr(hi), torch.where(top, log_ndtr(-lo), interior))


class DiscretizedGaussian(TorchDistribution):
    """Gaussian N(loc, scale^2) discretised to ``levels`` equally spaced values in [low, high]
    (default [0, 1]; the DDPM uses [-1, 1]): the [0, 1] case after the affine map."""

    arg_constraints = {"loc": constraints.real, "scale": constraints.positive}
    has_rsample = False

    def __init__(
        self, loc, scale, levels: int, low: float = 0.0, high: float = 1.0, validate_args=None
    ):
        if levels < 2:
            raise ValueError(f"a discretised Gaussian needs at least 2 levels, got {levels}")
        self.loc, self.scale = torch.broadcast_tensors(torch.as_tensor(loc), torch.as_tensor(scale))
        self.levels, self.low, self.high = int(levels), float(low), float(high)
        super().__init__(self.loc.shape, validate_args=validate_args)

    @constraints.dependent_property(is_discrete=False, event_dim=0)
    def support(self):
        return constraints.interval(self.low, self.high)

    def expand(self, batch_shape, _instance=None):
        shape = torch.Size(batch_shape)
        return DiscretizedGaussian(
            self.loc.expand(shape),
            self.scale.expand(shape),
            self.levels,
            self.low,
            self.high,
            validate_args=False,
        )

    def _unit(self, value):
        return (value - self.low) / (self.high - self.low)

    @property
    def mean(self) -> torch.Tensor:
        """The exact mean over the levels x_k = low + k h (k = 0..L-1), summed by parts:
        E[X] = x_0 + h sum_{k>=1} P(X >= x_k), where P(X >= x_k) = Phi((loc - x_k + h/2) / scale)
        is the mass above the bin edge below x_k (one normal tail per level, no pmf)."""
        h = (self.high - self.low) / (self.levels - 1)
        edges = self.low + h * (
            torch.arange(1, self.levels, dtype=self.loc.dtype, device=self.loc.device) - 0.5
        )
        edges = edges.reshape((-1,) + (1,) * self.loc.dim())
        above = torch.special.ndtr((self.loc - edges) / self.scale)
        return self.low + h * above.sum(0)

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        if self._validate_args:
            self._validate_sample(value)
        width = self.high - self.low
        return discretized_gaussian_log_prob(
            self._unit(value), self._unit(self.loc), self.scale / width, self.levels
        )

    def sample(self, sample_shape=torch.Size()) -> torch.Tensor:  # noqa: B008 (torch signature)
        shape = self._extended_shape(sample_shape)
        with torch.no_grad():
            y = self.loc.expand(shape) + self.scale.expand(shape) * torch.randn(
                shape, dtype=self.loc.dtype, device=self.loc.device
            )
            k = torch.clamp(torch.round(self._unit(y) * (self.levels - 1)), 0, self.levels - 1)
            return self.low + (self.high - self.low) * k / (self.levels - 1)
