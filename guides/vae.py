"""The VAE's encoder as a Pyro guide (docs/equations.md (1.13), (1.14)): q(z | x) =
N(mu_phi(x), diag sigma_phi(x)^2), sampled by reparameterisation z = mu + sigma * eps."""

from __future__ import annotations

import pyro
import pyro.distributions as dist
import torch
from torch import nn

from probdiff.models.vae.model import SITE_Z
from probdiff.plates import data_plate


class GaussianEncoder(nn.Module):
    """x -> (mu, sigma) through ``net`` (output 2L: mu, then sigma = softplus(raw) + 1e-5)."""

    def __init__(self, net: nn.Module, latent_dim: int):
        super().__init__()
        self.net, self.latent_dim = net, latent_dim

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        out = self.net(x)
        loc, raw = out[..., : self.latent_dim], out[..., self.latent_dim :]
        return loc, nn.functional.softplus(raw) + 1e-5


class VAEGuide:
    """Pyro guide q(z | x); call as ``guide(x, n_total=None)``."""

    def __init__(self, encoder: GaussianEncoder):
        self.encoder = encoder

    def __call__(self, x: torch.Tensor, n_total: int | None = None) -> None:
        pyro.module("encoder", self.encoder, update_module_params=True)
        n = x.shape[0]
        with data_plate(n, n_total):
            loc, scale = self.encoder(x)
            pyro.sample(SITE_Z, dist.Normal(loc, scale).to_event(1))

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """mu_phi(x), sigma_phi(x) without a sample site."""
        return self.encoder(x)
