"""NumPyro twin of :mod:`probdiff.models.gmm.model`: the isotropic Gaussian mixture (MATH.md 1a).

    z ~ Categorical(pi),            P(z = k) = pi_k
    x | z = k ~ N(mu_k, sigma_k^2 I)
    p(x) = sum_k pi_k N(x | mu_k, sigma_k^2 I)

Site names, parameter names, constraints, shapes, the ``n_total`` scaling of the data plate and
the ``enumerate: parallel`` marking of ``z`` are those of the Pyro program, so a dictionary of
constrained parameter values gives the same ELBO under both backends (checked in
``tests/test_gmm_numpyro.py``). Under NumPyro's ``TraceEnum_ELBO`` (funsor) or NUTS the marked
``assignment`` is summed out exactly: the "collapsed" model with density
sum_k pi_k N(x | mu_k, sigma_k^2 I) per datum.

The Bayesian variant has the priors

    pi ~ Dirichlet(concentration * 1),  mu_k ~ N(prior_loc, prior_scale^2 I),
    sigma_k ~ LogNormal(log(prior_sigma), 1),

and with ``ordered=True`` the first coordinate of the means is constrained increasing
(sites ``locs_first`` (K,) ordered, ``locs_rest`` (K, D-1), ``locs`` deterministic), which removes
the K! label-switching modes of the posterior. :meth:`GaussianMixture.init_values` gives NUTS
dispersed, data-informed starting points (k-means++), one per chain.

>>> import numpy as np, jax.numpy as jnp, numpyro
>>> init = {"weights": np.full(2, 0.5), "locs": np.array([[-1.0], [1.0]]), "scales": np.ones(2)}
>>> model = numpyro.handlers.seed(GaussianMixture(2, 1, init), rng_seed=0)
>>> tr = numpyro.handlers.trace(model).get_trace(jnp.zeros((3, 1)))
>>> tr["assignment"]["infer"]["enumerate"], tr["locs"]["value"].shape
('parallel', (2, 1))
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
from numpyro.distributions import constraints
from numpyro.ops.indexing import Vindex

from probdiff.models.gmm import em as gmm_em
from probdiff.models.gmm.model import (
    GLOBAL_SITES,
    SITE_ASSIGNMENT,
    SITE_LOCS,
    SITE_LOCS_FIRST,
    SITE_LOCS_REST,
    SITE_OBS,
    SITE_SCALES,
    SITE_WEIGHTS,
    MixturePrior,
)
from probdiff.plates import numpyro_data_plate

__all__ = ["GaussianMixture", "MixturePrior", "GLOBAL_SITES"]


@dataclass
class GaussianMixture:
    """NumPyro program for p(z) p(x | z); call it as ``model(x, n_total=None)``.

    ``init`` holds constrained initial values ``weights`` (K,), ``locs`` (K, D), ``scales`` (K,)
    for the maximum-likelihood parameters; ``n_total`` (the size of the full data set) scales
    the data plate by n_total / n when ``x`` is a minibatch of n rows. ``dtype`` is a JAX dtype
    (``jnp.float64`` needs ``jax_enable_x64``; :class:`NumPyroBackend` sets it for ``float64``).
    """

    num_components: int
    dim: int
    init: dict[str, np.ndarray]
    prior: MixturePrior | None = None
    ordered: bool = False
    dtype: Any = jnp.float32

    def _t(self, value) -> jnp.ndarray:
        return jnp.asarray(np.asarray(value), dtype=self.dtype)

    def globals(self) -> tuple[jnp.ndarray, jnp.ndarray, jnp.ndarray]:
        """Return (weights, locs, scales): parameters or prior draws."""
        K = self.num_components
        if self.prior is None:
            weights = numpyro.param(
                SITE_WEIGHTS, self._t(self.init[SITE_WEIGHTS]), constraint=constraints.simplex
            )
            locs = numpyro.param(SITE_LOCS, self._t(self.init[SITE_LOCS]))
            scales = numpyro.param(
                SITE_SCALES, self._t(self.init[SITE_SCALES]), constraint=constraints.positive
            )
            return weights, locs, scales
        p = self.prior
        weights = numpyro.sample(SITE_WEIGHTS, dist.Dirichlet(self._t(np.full(K, p.concentration))))
        scales = numpyro.sample(
            SITE_SCALES,
            dist.LogNormal(self._t(math.log(p.prior_sigma)), self._t(1.0)).expand([K]).to_event(1),
        )
        locs = self._locs(self._t(p.prior_loc), self._t(p.prior_scale))
        return weights, locs, scales

    def _locs(self, loc: jnp.ndarray, scale: jnp.ndarray) -> jnp.ndarray:
        """Means under the prior N(loc, scale^2 I), first coordinate increasing if ordered.

        The ordered prior is the unordered one restricted to mu_{1,0} < ... < mu_{K,0} (times
        K!): the first column is an improper ordered vector plus a factor carrying its normal
        log density and log K!; the other columns are ordinary normal draws.
        """
        K, D = self.num_components, self.dim
        normal = dist.Normal(loc, scale)
        if not self.ordered:
            return numpyro.sample(SITE_LOCS, normal.expand([K, D]).to_event(2))
        first = numpyro.sample(
            SITE_LOCS_FIRST,
            dist.ImproperUniform(constraints.ordered_vector, batch_shape=(), event_shape=(K,)),
        )
        numpyro.factor(
            SITE_LOCS_FIRST + "_prior",
            normal.log_prob(first[..., None])[..., 0].sum(-1) + math.lgamma(K + 1),
        )
        columns = [first[..., None]]
        if D > 1:
            columns.append(
                numpyro.sample(
                    SITE_LOCS_REST, dist.Normal(loc[1:], scale).expand([K, D - 1]).to_event(2)
                )
            )
        return numpyro.deterministic(SITE_LOCS, jnp.concatenate(columns, -1))

    def init_values(
        self, x: np.ndarray, num_chains: int, seed: int = 0, tries: int = 10
    ) -> list[dict[str, np.ndarray]]:
        """Dispersed, data-informed starting points of the Bayesian model's sites, one per chain.

        Each chain starts at the best (highest log-likelihood) of ``tries`` k-means++ seedings
        (:func:`probdiff.models.gmm.em.kmeans_pp_init`: means at data points drawn far apart,
        equal weights, scales the RMS distance to the nearest mean), drawn from its own stream
        of ``default_rng(seed)``. Starting points drawn without looking at the data (NumPyro's
        ``init_to_uniform``/``init_to_sample``) often leave a chain in a local mode where one
        component covers two clusters; for ``run_nuts(..., init_values=...)``.
        """
        if self.prior is None:
            raise ValueError(
                "init_values is for the Bayesian model (prior=...): maximum "
                "likelihood has no latent globals"
            )
        x = np.asarray(x, dtype=float)
        inits = []
        for rng in np.random.default_rng(seed).spawn(num_chains):
            cands = [gmm_em.kmeans_pp_init(x, self.num_components, rng) for _ in range(tries)]
            best = max(cands, key=lambda p: gmm_em.log_likelihood(x, p).sum())
            if self.ordered:
                best = gmm_em.ordered_by_first_coordinate(best, 1e-3 * (np.ptp(x[:, 0]) or 1.0))
            values = {SITE_WEIGHTS: best.weights, SITE_SCALES: best.scales}
            if not self.ordered:
                values[SITE_LOCS] = best.locs  # in k-means++'s (random) label order
            else:
                values[SITE_LOCS_FIRST] = best.locs[:, 0]
                if self.dim > 1:
                    values[SITE_LOCS_REST] = best.locs[:, 1:]
            inits.append(values)
        return inits

    def __call__(self, x: jnp.ndarray, n_total: int | None = None) -> None:
        weights, locs, scales = self.globals()
        n = x.shape[0]
        with numpyro_data_plate(n, n_total):
            z = numpyro.sample(
                SITE_ASSIGNMENT, dist.Categorical(probs=weights), infer={"enumerate": "parallel"}
            )
            # Vindex: globals may carry batch dims (vectorised draws) left of (K,) / (K, D)
            loc, scale = Vindex(locs)[..., z, :], Vindex(scales)[..., z]
            numpyro.sample(SITE_OBS, dist.Normal(loc, scale[..., None]).to_event(1), obs=x)
