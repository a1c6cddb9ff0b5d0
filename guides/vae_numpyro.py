"""NumPyro twin of :mod:`probdiff.guides.vae`: the encoder q(z | x) = N(mu_phi(x),
diag sigma_phi(x)^2) as a guide (docs/equations.md (1.13), (1.14)), sampled by
reparameterisation.

The network (a Flax module of :mod:`probdiff.models.vae.networks_numpyro` with output 2L:
loc, then the raw scale, sigma = softplus(raw) + 1e-5) is registered with ``flax_module``
as ``encoder``.
"""

from __future__ import annotations

import flax.linen as fnn
import jax
import jax.numpy as jnp
import numpyro
import numpyro.distributions as dist
from numpyro.contrib.module import flax_module

from probdiff.models.vae.model import SITE_Z
from probdiff.plates import numpyro_data_plate

__all__ = ["VAEGuide"]


class VAEGuide:
    """NumPyro guide q(z | x); call as ``guide(x, n_total=None)``."""

    def __init__(self, net: fnn.Module, data_dim: int, latent_dim: int):
        self.net, self.data_dim, self.latent_dim = net, data_dim, latent_dim

    def encoder(self):
        """x -> (mu, sigma), with the registered parameters."""
        net = flax_module("encoder", self.net, input_shape=(1, self.data_dim))
        L = self.latent_dim

        def encode(x):
            out = net(x)
            return out[..., :L], jax.nn.softplus(out[..., L:]) + 1e-5

        return encode

    def __call__(self, x: jnp.ndarray, n_total: int | None = None) -> None:
        encode = self.encoder()
        n = x.shape[0]
        with numpyro_data_plate(n, n_total):
            loc, scale = encode(x)
            numpyro.sample(SITE_Z, dist.Normal(loc, scale).to_event(1))
