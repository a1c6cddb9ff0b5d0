"""The variational autoencoder as a Pyro program (MATH.md 1b): the decoder is the model.

    z ~ N(0, I_L),    x | z ~ N(decode_theta(z), sigma_dec^2 I)

The encoder q(z | x) = N(mu_phi(x), diag sigma_phi(x)^2) is the guide
(:mod:`probdiff.guides.vae`). Under ``Trace_ELBO`` both terms of the ELBO are Monte Carlo;
under ``TraceMeanField_ELBO`` the prior-matching term is the closed-form Gaussian KL
0.5 * sum(sigma^2 + mu^2 - 1 - log sigma^2), the tutorial's loss.
"""

from __future__ import annotations

import math

import pyro
import pyro.distributions as dist
import torch
from pyro import poutine
from torch import nn

SITE_Z, SITE_OBS = "z", "obs"


def mlp(sizes: list[int], activation=nn.Tanh) -> nn.Sequential:
    """Affine layers of the given sizes with ``activation`` between them (none after the last)."""
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers.append(nn.Linear(a, b))
        if i < len(sizes) - 2:
            layers.append(activation())
    return nn.Sequential(*layers)


class GaussianDecoder(nn.Module):
    """decode_theta(z) and sigma_dec: fixed, or learned as one log-scale for all pixels."""

    def __init__(self, latent_dim: int, data_dim: int, hidden: list[int],
                 sigma_dec: float | None = None):
        super().__init__()
        self.net = mlp([latent_dim, *hidden, data_dim])
        self.learn_scale = sigma_dec is None
        if self.learn_scale:
            self.log_scale = nn.Parameter(torch.zeros(()))
        else:  # a constant: a buffer, so Pyro's param store never sees it
            self.register_buffer("log_scale", torch.tensor(math.log(sigma_dec)))

    def forward(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.net(z), self.log_scale.exp()


class VAEModel:
    """Pyro model p(z) p(x | z); call as ``model(x, n_total=None)`` with x of shape (N, D)."""

    def __init__(self, decoder: GaussianDecoder, latent_dim: int):
        self.decoder, self.latent_dim = decoder, latent_dim

    def __call__(self, x: torch.Tensor, n_total: int | None = None) -> None:
        # update_module_params: a fresh module picks up values already in the param store
        pyro.module("decoder", self.decoder, update_module_params=True)
        n = x.shape[0]
        with pyro.plate("data", n), poutine.scale(scale=(n_total or n) / n):
            prior = dist.Normal(x.new_zeros(self.latent_dim), x.new_ones(self.latent_dim))
            z = pyro.sample(SITE_Z, prior.to_event(1))
            loc, scale = self.decoder(z)
            pyro.sample(SITE_OBS, dist.Normal(loc, scale).to_event(1), obs=x)
