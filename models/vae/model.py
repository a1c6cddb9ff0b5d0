"""The variational autoencoder as a Pyro program (docs/equations.md (1.13), (1.14)): the decoder
is the model.

    z ~ N(0, I_L),    x | z ~ p_theta(x | z)

with the likelihood p_theta(x | z), per pixel and independent given z, one of

* ``gaussian``: N(decode(z), sigma_dec^2), sigma_dec fixed or learned (one for all pixels);
* ``bernoulli``: Bernoulli(sigmoid(decode(z))) for binary images;
* ``discretized``: the discretised Gaussian of Ho et al. on the integer levels of an image
  scaled to [0, 1] (:mod:`probdiff.diffusion.likelihoods`), a probability mass on the integers
  (docs/equations.md (2.17)).

The encoder q(z | x) = N(mu_phi(x), diag sigma_phi(x)^2) is the guide
(:mod:`probdiff.guides.vae`). Under ``Trace_ELBO`` both terms of the ELBO are Monte Carlo;
under ``TraceMeanField_ELBO`` the prior-matching term is the closed-form Gaussian KL
0.5 * sum(sigma^2 + mu^2 - 1 - log sigma^2), the tutorial's loss (docs/equations.md (1.15)).
"""

from __future__ import annotations

import math

import pyro
import pyro.distributions as dist
import torch
from torch import nn

from probdiff.diffusion.likelihoods import DiscretizedGaussian
from probdiff.plates import data_plate

SITE_Z, SITE_OBS = "z", "obs"
from probdiff.models.vae import LIKELIHOODS  # noqa: E402  (the options, in a light module)


class Decoder(nn.Module):
    """decode_theta(z) through ``net`` and the likelihood's distribution of x given z.

    ``sigma_dec=None`` learns one log-scale for all pixels (starting at 0); a number fixes it
    (a buffer, so Pyro's param store never sees it). Bernoulli has no scale.
    """

    def __init__(
        self,
        net: nn.Module,
        likelihood: str = "gaussian",
        sigma_dec: float | None = None,
        levels: int | None = None,
    ):
        super().__init__()
        if likelihood not in LIKELIHOODS:
            raise ValueError(f"unknown likelihood {likelihood!r}")
        if likelihood == "discretized" and not (levels and levels >= 2):
            raise ValueError("the discretized likelihood needs the number of levels (>= 2)")
        self.net, self.likelihood, self.levels = net, likelihood, levels
        self.learn_scale = sigma_dec is None and likelihood != "bernoulli"
        if self.learn_scale:
            self.log_scale = nn.Parameter(torch.zeros(()))
        elif likelihood != "bernoulli":
            self.register_buffer("log_scale", torch.tensor(math.log(sigma_dec)))

    def forward(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(decode(z), sigma_dec); for Bernoulli (logits, None)."""
        out = self.net(z)
        return out, (None if self.likelihood == "bernoulli" else self.log_scale.exp())

    def distribution(self, z: torch.Tensor) -> dist.TorchDistribution:
        """p_theta(x | z) with the pixels as one event."""
        out, scale = self(z)
        if self.likelihood == "bernoulli":
            d = dist.Bernoulli(logits=out)
        elif self.likelihood == "discretized":
            d = DiscretizedGaussian(out, scale.expand(out.shape), self.levels)
        else:
            d = dist.Normal(out, scale)
        return d.to_event(1)

    def mean(self, z: torch.Tensor) -> torch.Tensor:
        """E[x | z]: decode(z), sigmoid(logits), or the mean over the discretised levels."""
        out, scale = self(z)
        if self.likelihood == "bernoulli":
            return torch.sigmoid(out)
        if self.likelihood == "discretized":
            return DiscretizedGaussian(out, scale.expand(out.shape), self.levels).mean
        return out


class VAEModel:
    """Pyro model p(z) p(x | z); call as ``model(x, n_total=None)`` with x of shape (N, D)."""

    def __init__(self, decoder: Decoder, latent_dim: int):
        self.decoder, self.latent_dim = decoder, latent_dim

    def __call__(self, x: torch.Tensor, n_total: int | None = None) -> None:
        # update_module_params: a fresh module picks up values already in the param store
        pyro.module("decoder", self.decoder, update_module_params=True)
        n = x.shape[0]
        with data_plate(n, n_total):
            prior = dist.Normal(x.new_zeros(self.latent_dim), x.new_ones(self.latent_dim))
            z = pyro.sample(SITE_Z, prior.to_event(1))
            pyro.sample(SITE_OBS, self.decoder.distribution(z), obs=x)
