"""NumPyro twin of :mod:`probdiff.models.vae`: the VAE's decoder as the model (MATH.md 1b).

    z ~ N(0, I_L),    x | z ~ N(decode_theta(z), sigma_dec^2 I)

Same site names (``z``, ``obs``), the same ``data`` plate scaled by n_total / n, the same
network (affine layers with tanh between them, none after the last) and one log-scale for all
pixels: a NumPyro parameter ``decoder_log_scale`` when learned, a constant when ``sigma_dec``
is given. The network is a Flax linen module registered with
:func:`numpyro.contrib.module.flax_module` under the name ``decoder`` (parameter
``decoder$params``: ``Dense_i`` layers with ``kernel`` (in, out), the transpose of a torch
``Linear`` weight, and ``bias``).
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import flax.linen as fnn
import jax.numpy as jnp
import numpyro
import numpyro.distributions as dist
from numpyro.contrib.module import flax_module

from probdiff.models.vae import SITE_OBS, SITE_Z

__all__ = ["MLP", "VAEModel", "SITE_Z", "SITE_OBS", "LOG_SCALE"]

LOG_SCALE = "decoder_log_scale"


class MLP(fnn.Module):
    """Affine layers of widths ``sizes`` (output widths; the input width comes from the data)
    with tanh between them, none after the last; layers are named ``Dense_0``, ``Dense_1``..."""

    sizes: Sequence[int]
    dtype: Any = jnp.float32

    @fnn.compact
    def __call__(self, h):
        for i, width in enumerate(self.sizes):
            h = fnn.Dense(width, dtype=self.dtype, param_dtype=self.dtype, name=f"Dense_{i}")(h)
            if i < len(self.sizes) - 1:
                h = jnp.tanh(h)
        return h


class VAEModel:
    """NumPyro model p(z) p(x | z); call as ``model(x, n_total=None)`` with x of shape (N, D).

    ``sigma_dec=None`` learns the decoder's log-scale (starting at 0, as the Pyro twin).
    """

    def __init__(self, latent_dim: int, data_dim: int, hidden: list[int],
                 sigma_dec: float | None = None, dtype: Any = jnp.float32):
        self.latent_dim, self.data_dim, self.hidden = latent_dim, data_dim, list(hidden)
        self.sigma_dec, self.dtype = sigma_dec, dtype
        self.net = MLP([*self.hidden, data_dim], dtype=dtype)

    def decoder(self):
        """z -> (decode(z), sigma_dec), with the registered parameters."""
        net = flax_module("decoder", self.net, input_shape=(1, self.latent_dim))
        if self.sigma_dec is None:
            log_scale = numpyro.param(LOG_SCALE, jnp.zeros((), dtype=self.dtype))
        else:
            log_scale = jnp.asarray(math.log(self.sigma_dec), dtype=self.dtype)
        return lambda z: (net(z), jnp.exp(log_scale))

    def __call__(self, x: jnp.ndarray, n_total: int | None = None) -> None:
        decode = self.decoder()
        n = x.shape[0]
        with numpyro.plate("data", n), numpyro.handlers.scale(scale=(n_total or n) / n):
            prior = dist.Normal(jnp.zeros(self.latent_dim, dtype=x.dtype),
                                jnp.ones(self.latent_dim, dtype=x.dtype))
            z = numpyro.sample(SITE_Z, prior.to_event(1))
            loc, scale = decode(z)
            numpyro.sample(SITE_OBS, dist.Normal(loc, scale).to_event(1), obs=x)
