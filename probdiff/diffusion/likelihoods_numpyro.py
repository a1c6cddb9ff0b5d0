"""NumPyro twin of :mod:`probdiff.diffusion.likelihoods`: the discretised Gaussian of Ho et al. (2020)
on ``levels`` equally spaced values in [0, 1] (same formulas, same end bins;
docs/equations.md (2.17))."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpyro.distributions as dist
from jax.scipy.special import log_ndtr
from numpyro.distributions import constraints
from numpyro.distributions.util import promote_shapes


def log_normal_interval(lo: jax.Array, hi: jax.Array) -> jax.Array:
    """log(Phi(hi) - Phi(lo)) for lo < hi, reflected into the lower tail when lo + hi > 0."""
    flip = (lo + hi) > 0
    a, b = jnp.where(flip, -hi, lo), jnp.where(flip, -lo, hi)
    la, lb = log_ndtr(a), log_ndtr(b)
    diff = jnp.minimum(la - lb, -1e-30)
    return lb + jnp.log(-jnp.expm1(diff))


def discretized_gaussian_log_prob(x, loc, scale, levels: int):
    """Elementwise log P(x | loc, scale) of the discretised Gaussian on ``levels`` levels in [0, 1]."""
    h = 0.5 / (levels - 1)
    lo, hi = (x - h - loc) / scale, (x + h - loc) / scale
    interior = log_normal_interval(lo, hi)
    return jnp.where(x < h, log_ndtr(hi), jnp.where(x > 1 - h, log_ndtr(-lo), interior))


class DiscretizedGaussian(dist.Distribution):
    """Gaussian N(loc, scale^2) discretised to ``levels`` equally spaced values in [low, high]
    (default [0, 1])."""

    arg_constraints = {"loc": constraints.real, "scale": constraints.positive}
    pytree_data_fields = ("loc", "scale")
    pytree_aux_fields = ("levels", "low", "high")

    def __init__(
        self, loc, scale, levels: int, low: float = 0.0, high: float = 1.0, *, validate_args=None
    ):
        if levels < 2:
            raise ValueError(f"a discretised Gaussian needs at least 2 levels, got {levels}")
        self.loc, self.scale = promote_shapes(loc, scale)
        self.levels, self.low, self.high = int(levels), float(low), float(high)
        batch_shape = jax.lax.broadcast_shapes(jnp.shape(loc), jnp.shape(scale))
        super().__init__(batch_shape=batch_shape, validate_args=validate_args)

    @constraints.dependent_property(is_discrete=False, event_dim=0)
    def support(self):
        return constraints.interval(self.low, self.high)

    def log_prob(self, value):
        w = self.high - self.low
        return discretized_gaussian_log_prob(
            (value - self.low) / w, (self.loc - self.low) / w, self.scale / w, self.levels
        )

    def sample(self, key, sample_shape=()):
        shape = sample_shape + self.batch_shape
        y = self.loc + self.scale * jax.random.normal(key, shape)
        u = (y - self.low) / (self.high - self.low)
        k = jnp.clip(jnp.round(u * (self.levels - 1)), 0, self.levels - 1)
        return self.low + (self.high - self.low) * k / (self.levels - 1)
