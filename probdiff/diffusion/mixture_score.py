"""Gaussian mixtures in closed form through a linear SDE: every marginal's density and score.

If x_0 ~ sum_k pi_k N(mu_k, S_k) and x_t | x_0 ~ N(a x_0, v I), then

    p_t(x) = sum_k pi_k N(x; a mu_k, a^2 S_k + v I),
    grad log p_t(x) = -sum_k r_k(x) (a^2 S_k + v I)^{-1} (x - a mu_k),

with responsibilities r_k(x) proportional to pi_k N(x; a mu_k, a^2 S_k + v I). A single
Gaussian is K = 1. This is the reference every score-matching loss, sampler and likelihood is
checked against (docs/equations.md (3.11)). Computations are in float64.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from probdiff.diffusion.sde import SDE


@dataclass(frozen=True)
class GaussianMixture:
    """weights (K,), locs (K, D), covs (K, D, D)."""

    weights: torch.Tensor
    locs: torch.Tensor
    covs: torch.Tensor

    @classmethod
    def make(cls, weights, locs, covs=None, scales=None) -> GaussianMixture:
        """From arrays; ``scales`` (K,) gives isotropic components s_k^2 I."""
        w = torch.as_tensor(np.asarray(weights, dtype=np.float64))
        m = torch.as_tensor(np.asarray(locs, dtype=np.float64)).reshape(len(w), -1)
        if covs is None:
            s = torch.as_tensor(np.asarray(scales, dtype=np.float64)).reshape(len(w))
            covs = s[:, None, None] ** 2 * torch.eye(m.shape[1], dtype=torch.float64)
        c = torch.as_tensor(np.asarray(covs, dtype=np.float64))
        return cls(w / w.sum(), m, c)

    @classmethod
    def of_dataset_density(cls, density) -> GaussianMixture:
        """From :class:`probdiff.data.SphericalGaussianMixture` (e.g. ``mixture2d``)."""
        return cls.make(density.weights, density.locs, scales=density.scales)

    @property
    def dim(self) -> int:
        return self.locs.shape[1]

    def _components(self, x: torch.Tensor, a: torch.Tensor, v: torch.Tensor):
        """Per row n and component k: log pi_k N(x_n; a_n mu_k, a_n^2 S_k + v_n I) and the
        precision times residual P (x - m), for per-row a, v of shape (N,)."""
        x = x.to(torch.float64).reshape(len(x), -1)
        a = a.to(torch.float64).reshape(-1, 1, 1, 1)
        v = v.to(torch.float64).reshape(-1, 1, 1, 1)
        eye = torch.eye(self.dim, dtype=torch.float64)
        cov = a**2 * self.covs[None] + v * eye  # (N, K, D, D)
        chol = torch.linalg.cholesky(cov)
        resid = x[:, None, :] - a[..., 0] * self.locs[None]  # (N, K, D)
        white = torch.linalg.solve_triangular(chol, resid[..., None], upper=False)[..., 0]
        logdet = 2 * torch.log(torch.diagonal(chol, dim1=-2, dim2=-1)).sum(-1)
        logp = (
            torch.log(self.weights)[None]
            - 0.5 * white.pow(2).sum(-1)
            - 0.5 * logdet
            - 0.5 * self.dim * math.log(2 * math.pi)
        )
        prec_resid = torch.cholesky_solve(resid[..., None], chol)[..., 0]
        return logp, prec_resid

    def log_prob(
        self, x: torch.Tensor, a: torch.Tensor | None = None, v: torch.Tensor | None = None
    ) -> torch.Tensor:
        """log p(x) per row; with (a, v), of the marginal of x_t = a x_0 + sqrt(v) z."""
        a, v = self._av(x, a, v)
        logp, _ = self._components(x, a, v)
        return torch.logsumexp(logp, dim=1)

    def score(
        self, x: torch.Tensor, a: torch.Tensor | None = None, v: torch.Tensor | None = None
    ) -> torch.Tensor:
        """grad_x log p(x) per row (float64), shaped like x."""
        a, v = self._av(x, a, v)
        logp, prec_resid = self._components(x, a, v)
        r = torch.softmax(logp, dim=1)
        return -(r[..., None] * prec_resid).sum(1).reshape(x.shape)

    def sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        k = torch.multinomial(self.weights, n, replacement=True, generator=generator)
        chol = torch.linalg.cholesky(self.covs)
        z = torch.randn(n, self.dim, generator=generator, dtype=torch.float64)
        return self.locs[k] + (chol[k] @ z[..., None])[..., 0]

    def _av(self, x, a, v):
        n = len(x)
        f64 = torch.float64  # Python floats too: float32 would cost 1e-8 relative
        a = torch.ones(n, dtype=f64) if a is None else torch.as_tensor(a, dtype=f64).expand(n)
        v = torch.zeros(n, dtype=f64) if v is None else torch.as_tensor(v, dtype=f64).expand(n)
        return a, v

    # -- through an SDE ----------------------------------------------------------------------
    def marginal_score(self, sde: SDE):
        """score(x, t) = grad log p_t(x) under ``sde``, in x's dtype."""

        def score(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
            a, s = sde.marginal(t.detach().cpu().to(torch.float64))
            return self.score(x.cpu(), a, s**2).to(device=x.device, dtype=x.dtype)

        return score

    def marginal_log_prob(self, sde: SDE, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        a, s = sde.marginal(t.to(torch.float64))
        return self.log_prob(x, a, s**2)

    def noisy_score(self, sigma: torch.Tensor):
        """score of the data blurred by N(0, sigma^2 I) (the NCSN / DSM target)."""

        def score(x: torch.Tensor) -> torch.Tensor:
            var = torch.as_tensor(sigma, dtype=torch.float64) ** 2
            return self.score(x.cpu(), None, var).to(device=x.device, dtype=x.dtype)

        return score
