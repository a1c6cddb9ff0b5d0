"""The tutorial's first latent-variable model: an isotropic Gaussian mixture
(docs/equations.md (1.6)), one program text for both backends (Pyro and NumPyro, through
:mod:`probdiff.ppl`).

    z ~ Categorical(pi),            P(z = k) = pi_k
    x | z = k ~ N(mu_k, sigma_k^2 I)
    p(x) = sum_k pi_k N(x | mu_k, sigma_k^2 I)

The assignment ``z`` is a discrete latent marked for parallel enumeration, so under
``TraceEnum_ELBO`` (Pyro's, or NumPyro's through funsor) or NUTS it is summed out exactly. The
globals (``weights`` = pi, ``locs`` = mu, ``scales`` = sigma) are either point parameters
(maximum likelihood, the tutorial's model) or, in the Bayesian variant, sample sites with the
priors (docs/equations.md (1.10))

    pi ~ Dirichlet(concentration * 1),  mu_k ~ N(prior_loc, prior_scale^2 I),
    sigma_k ~ LogNormal(log(prior_sigma), 1).

With ``ordered=True`` the first coordinate of the means is constrained increasing,
mu_{1,0} < mu_{2,0} < ... (docs/equations.md (1.11)), which removes the K! label-switching modes
of the posterior (the sites are then ``locs_first`` (K,) ordered, ``locs_rest`` (K, D-1), and
``locs`` deterministic).

Both backends run this one text, so a dictionary of constrained parameter values gives the same
ELBO under each (checked in ``tests/test_gmm_numpyro.py``).

>>> import numpy as np, jax.numpy as jnp, numpyro
>>> init = {"weights": np.full(2, 0.5), "locs": np.array([[-1.0], [1.0]]), "scales": np.ones(2)}
>>> model = numpyro.handlers.seed(GaussianMixture(2, 1, init, ppl="numpyro"), rng_seed=0)
>>> tr = numpyro.handlers.trace(model).get_trace(jnp.zeros((3, 1)))
>>> tr["assignment"]["infer"]["enumerate"], tr["locs"]["value"].shape
('parallel', (2, 1))
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from probdiff.models.gmm import em as gmm_em
from probdiff.ppl import PPL, get_ppl

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
    """The program p(z) p(x | z); call it as ``model(x, n_total=None)``.

    ``init`` holds constrained initial values ``weights`` (K,), ``locs`` (K, D), ``scales`` (K,)
    for the maximum-likelihood parameters; ``n_total`` (the size of the full data set) scales
    the data plate by n_total / n when ``x`` is a minibatch of n rows. ``ppl`` is "pyro" or
    "numpyro"; ``dtype`` a dtype name or the framework's dtype (NumPyro's float64 needs
    ``jax_enable_x64``, which :class:`NumPyroBackend` sets); ``device`` is Pyro's.
    """

    num_components: int
    dim: int
    init: dict[str, np.ndarray]
    prior: MixturePrior | None = None
    ordered: bool = False
    dtype: Any = "float32"
    device: Any = "cpu"
    ppl: str = "pyro"
    _p: PPL = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        self._p = get_ppl(self.ppl, self.dtype, self.device)

    def globals(self) -> tuple[Any, Any, Any]:
        """Return (weights, locs, scales): parameters or prior draws."""
        K, p, t = self.num_components, self._p, self._p.tensor
        if self.prior is None:
            init = self.init
            weights = p.param(
                SITE_WEIGHTS, lambda: t(init[SITE_WEIGHTS]), constraint=p.constraints.simplex
            )
            locs = p.param(SITE_LOCS, lambda: t(init[SITE_LOCS]))
            scales = p.param(
                SITE_SCALES, lambda: t(init[SITE_SCALES]), constraint=p.constraints.positive
            )
            return weights, locs, scales
        h = self.prior
        weights = p.sample(SITE_WEIGHTS, p.dist.Dirichlet(t(np.full(K, h.concentration))))
        scales = p.sample(
            SITE_SCALES,
            p.dist.LogNormal(t(math.log(h.prior_sigma)), t(1.0)).expand([K]).to_event(1),
        )
        locs = self._locs(t(h.prior_loc), t(h.prior_scale))
        return weights, locs, scales

    def _locs(self, loc: Any, scale: Any) -> Any:
        """Means under the prior N(loc, scale^2 I), first coordinate increasing if ordered.

        The ordered prior is the unordered one restricted to mu_{1,0} < ... < mu_{K,0} (times
        K!): the first column is an improper ordered vector plus a factor carrying its normal
        log density and log K!; the other columns are ordinary normal draws.
        """
        K, D, p = self.num_components, self.dim, self._p
        normal = p.dist.Normal(loc, scale)
        if not self.ordered:
            return p.sample(SITE_LOCS, normal.expand([K, D]).to_event(2))
        first = p.sample(
            SITE_LOCS_FIRST,
            p.dist.ImproperUniform(p.constraints.ordered_vector, batch_shape=(), event_shape=(K,)),
        )
        p.factor(
            SITE_LOCS_FIRST + "_prior",
            normal.log_prob(first[..., None])[..., 0].sum(-1) + math.lgamma(K + 1),
        )
        columns = [first[..., None]]
        if D > 1:
            rest = p.dist.Normal(loc[1:], scale).expand([K, D - 1]).to_event(2)
            columns.append(p.sample(SITE_LOCS_REST, rest))
        return p.deterministic(SITE_LOCS, p.concatenate(columns, -1), event_dim=2)

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
            best = max(cands, key=lambda c: gmm_em.log_likelihood(x, c).sum())
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

    def __call__(self, x: Any, n_total: int | None = None) -> None:
        weights, locs, scales = self.globals()
        p = self._p
        with p.data_plate(x.shape[0], n_total):
            z = p.sample(
                SITE_ASSIGNMENT, p.dist.Categorical(probs=weights), infer={"enumerate": "parallel"}
            )
            # Vindex: globals may carry batch dims (vectorised particles) left of (K,) / (K, D)
            loc, scale = p.Vindex(locs)[..., z, :], p.Vindex(scales)[..., z]
            p.sample(SITE_OBS, p.dist.Normal(loc, scale[..., None]).to_event(1), obs=x)
