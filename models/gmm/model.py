"""The tutorial's first latent-variable model: an isotropic Gaussian mixture (MATH.md 1a).

    z ~ Categorical(pi),            P(z = k) = pi_k
    x | z = k ~ N(mu_k, sigma_k^2 I)
    p(x) = sum_k pi_k N(x | mu_k, sigma_k^2 I)

The assignment ``z`` is a discrete latent marked for parallel enumeration, so under
``TraceEnum_ELBO`` it is summed out exactly. The globals (``weights`` = pi, ``locs`` = mu,
``scales`` = sigma) are either point parameters (maximum likelihood, the tutorial's model) or,
in the Bayesian variant, sample sites with the priors

    pi ~ Dirichlet(concentration * 1),  mu_k ~ N(prior_loc, prior_scale^2 I),
    sigma_k ~ LogNormal(log(prior_sigma), 1).

With ``ordered=True`` the first coordinate of the means is constrained increasing,
mu_{1,0} < mu_{2,0} < ..., which removes the K! label-switching modes of the posterior
(the sites are then ``locs_first`` (K,) ordered, ``locs_rest`` (K, D-1), and ``locs`` deterministic).

The NumPyro twin is :mod:`probdiff.models.gmm.model_numpyro`; both use the same site and parameter
names, so a parameter dictionary fitted by one backend evaluates in the other.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pyro
import pyro.distributions as dist
import torch
from pyro.distributions import constraints
from pyro.ops.indexing import Vindex

from probdiff.plates import data_plate

SITE_WEIGHTS, SITE_LOCS, SITE_SCALES = "weights", "locs", "scales"
SITE_ASSIGNMENT, SITE_OBS = "assignment", "obs"
SITE_LOCS_FIRST, SITE_LOCS_REST = "locs_first", "locs_rest"
GLOBAL_SITES = (SITE_WEIGHTS, SITE_LOCS, SITE_SCALES)


@dataclass(frozen=True)
class MixturePrior:
    """Hyper-parameters of the Bayesian variant (None on the model means maximum likelihood)."""

    prior_loc: np.ndarray  # (D,)
    prior_scale: float
    prior_sigma: float
    concentration: float = 1.0


@dataclass
class GaussianMixture:
    """Pyro program for p(z) p(x | z); call it as ``model(x, n_total=None)``.

    ``init`` holds constrained initial values ``weights`` (K,), ``locs`` (K, D), ``scales`` (K,)
    for the maximum-likelihood parameters; ``n_total`` (the size of the full data set) scales
    the data plate when ``x`` is a minibatch.
    """

    num_components: int
    dim: int
    init: dict[str, np.ndarray]
    prior: MixturePrior | None = None
    ordered: bool = False
    dtype: torch.dtype = torch.float32
    device: str | torch.device = "cpu"

    def _t(self, value) -> torch.Tensor:
        return torch.as_tensor(np.asarray(value), dtype=self.dtype, device=self.device)

    def globals(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Return (weights, locs, scales): parameters or prior draws."""
        K = self.num_components
        if self.prior is None:
            weights = pyro.param(
                SITE_WEIGHTS,
                lambda: self._t(self.init[SITE_WEIGHTS]),
                constraint=constraints.simplex,
            )
            locs = pyro.param(SITE_LOCS, lambda: self._t(self.init[SITE_LOCS]))
            scales = pyro.param(
                SITE_SCALES,
                lambda: self._t(self.init[SITE_SCALES]),
                constraint=constraints.positive,
            )
            return weights, locs, scales
        p = self.prior
        weights = pyro.sample(SITE_WEIGHTS, dist.Dirichlet(self._t(np.full(K, p.concentration))))
        scales = pyro.sample(
            SITE_SCALES,
            dist.LogNormal(self._t(math.log(p.prior_sigma)), self._t(1.0)).expand([K]).to_event(1),
        )
        locs = self._locs(self._t(p.prior_loc), self._t(p.prior_scale))
        return weights, locs, scales

    def _locs(self, loc: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
        """Means under the prior N(loc, scale^2 I), first coordinate increasing if ordered.

        The ordered prior is the unordered one restricted to mu_{1,0} < ... < mu_{K,0} (times
        K!): the first column is an improper ordered vector plus a factor carrying its normal
        log density; the other columns are ordinary normal draws.
        """
        K, D = self.num_components, self.dim
        normal = dist.Normal(loc, scale)
        if not self.ordered:
            return pyro.sample(SITE_LOCS, normal.expand([K, D]).to_event(2))
        first = pyro.sample(
            SITE_LOCS_FIRST,
            dist.ImproperUniform(constraints.ordered_vector, batch_shape=(), event_shape=(K,)),
        )
        pyro.factor(
            SITE_LOCS_FIRST + "_prior",
            normal.log_prob(first.unsqueeze(-1))[..., 0].sum(-1) + math.lgamma(K + 1),
        )
        columns = [first.unsqueeze(-1)]
        if D > 1:
            columns.append(
                pyro.sample(
                    SITE_LOCS_REST, dist.Normal(loc[1:], scale).expand([K, D - 1]).to_event(2)
                )
            )
        return pyro.deterministic(SITE_LOCS, torch.cat(columns, -1), event_dim=2)

    def __call__(self, x: torch.Tensor, n_total: int | None = None) -> None:
        weights, locs, scales = self.globals()
        n = x.shape[0]
        with data_plate(n, n_total):
            z = pyro.sample(
                SITE_ASSIGNMENT, dist.Categorical(weights), infer={"enumerate": "parallel"}
            )
            # Vindex: globals may carry batch dims (vectorised particles) left of (K,) / (K, D)
            loc, scale = Vindex(locs)[..., z, :], Vindex(scales)[..., z]
            pyro.sample(SITE_OBS, dist.Normal(loc, scale.unsqueeze(-1)).to_event(1), obs=x)
