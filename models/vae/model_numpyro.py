"""NumPyro twin of :mod:`probdiff.models.vae.model`: the VAE's decoder as the model
(docs/equations.md (1.13)).

    z ~ N(0, I_L),    x | z ~ p_theta(x | z)   (gaussian, bernoulli or discretized)

Same site names (``z``, ``obs``), the same ``data`` plate scaled by n_total / n, the same
networks (:mod:`probdiff.models.vae.networks_numpyro`) and one log-scale for all pixels: a
NumPyro parameter ``decoder_log_scale`` when learned, a constant when ``sigma_dec`` is given,
none for Bernoulli. The network is a Flax linen module registered with
:func:`numpyro.contrib.module.flax_module` under the name ``decoder``.
"""

from __future__ import annotations

import math
from typing import Any

import flax.linen as fnn
import jax.numpy as jnp
import numpyro
import numpyro.distributions as dist
from numpyro.contrib.module import flax_module

from probdiff.diffusion.likelihoods_numpyro import DiscretizedGaussian
from probdiff.models.vae.model import LIKELIHOODS, SITE_OBS, SITE_Z
from probdiff.plates import numpyro_data_plate

__all__ = ["VAEModel", "SITE_Z", "SITE_OBS", "LOG_SCALE"]

LOG_SCALE = "decoder_log_scale"


class VAEModel:
    """NumPyro model p(z) p(x | z); call as ``model(x, n_total=None)`` with x of shape (N, D).

    ``net`` maps z to decode(z) (a Flax module); ``sigma_dec=None`` learns the decoder's
    log-scale (starting at 0, as the Pyro twin).
    """

    def __init__(
        self,
        net: fnn.Module,
        latent_dim: int,
        likelihood: str = "gaussian",
        sigma_dec: float | None = None,
        levels: int | None = None,
        dtype: Any = jnp.float32,
    ):
        if likelihood not in LIKELIHOODS:
            raise ValueError(f"unknown likelihood {likelihood!r}")
        self.net, self.latent_dim, self.likelihood = net, latent_dim, likelihood
        self.sigma_dec, self.levels, self.dtype = sigma_dec, levels, dtype

    def decoder(self):
        """z -> p_theta(x | z), with the registered parameters."""
        net = flax_module("decoder", self.net, input_shape=(1, self.latent_dim))
        if self.likelihood == "bernoulli":
            return lambda z: dist.BernoulliLogits(net(z)).to_event(1)
        if self.sigma_dec is None:
            log_scale = numpyro.param(LOG_SCALE, jnp.zeros((), dtype=self.dtype))
        else:
            log_scale = jnp.asarray(math.log(self.sigma_dec), dtype=self.dtype)
        if self.likelihood == "discretized":
            return lambda z: DiscretizedGaussian(net(z), jnp.exp(log_scale), self.levels).to_event(
                1
            )
        return lambda z: dist.Normal(net(z), jnp.exp(log_scale)).to_event(1)

    def __call__(self, x: jnp.ndarray, n_total: int | None = None) -> None:
        decode = self.decoder()
        n = x.shape[0]
        with numpyro_data_plate(n, n_total):
            prior = dist.Normal(
                jnp.zeros(self.latent_dim, dtype=x.dtype), jnp.ones(self.latent_dim, dtype=x.dtype)
            )
            z = numpyro.sample(SITE_Z, prior.to_event(1))
            numpyro.sample(SITE_OBS, decode(z), obs=x)
