"""NumPyro twin of :mod:`probdiff.guides.gmm`: the encoders q(z | x) and q(globals)
(docs/equations.md (1.8), (1.12)).

Same halves, same site and parameter names, same constraints as the Pyro guide:

* globals: ``none`` (maximum likelihood), ``map`` (Delta at learnable values: MAP under the
  priors) or ``meanfield`` (Dirichlet x LogNormal x Normal with learnable parameters);
* the assignment: ``enum`` (no guide site; the model sums z out) or ``encoder``
  (q(z | x) = Categorical(softmax(W phi(x) + b)), phi(x) = (x, ||x||^2 / 2), enumerated in the
  guide, so TraceEnum_ELBO takes the exact expectation over q(z | x)).

For isotropic components log p(z=k | x) = log pi_k - D log sigma_k - ||x - mu_k||^2 / (2 sigma_k^2)
+ c(x) is affine in phi(x), so the exact posterior is representable by the linear encoder.
The initial encoder weights come from :func:`probdiff.guides.gmm.encoder_init` (pure NumPy),
so both backends start from the same values.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
from numpyro.distributions import constraints

from probdiff.guides.gmm import GLOBAL_GUIDES, LOCAL_GUIDES, encoder_init
from probdiff.models.gmm import em as gmm_em
from probdiff.models.gmm.model import (
    GLOBAL_SITES,
    SITE_ASSIGNMENT,
    SITE_LOCS,
    SITE_LOCS_FIRST,
    SITE_LOCS_REST,
    SITE_SCALES,
    SITE_WEIGHTS,
)
from probdiff.plates import numpyro_data_plate

__all__ = ["MixtureGuide", "encoder_features", "encoder_init"]


def encoder_features(x: jnp.ndarray) -> jnp.ndarray:
    """phi(x) = (x, ||x||^2 / 2): the responsibilities are a softmax of an affine map of phi.

    >>> encoder_features(jnp.array([[1.0, 2.0]])).tolist()
    [[1.0, 2.0, 2.5]]
    """
    return jnp.concatenate([x, 0.5 * (x * x).sum(-1, keepdims=True)], axis=-1)


@dataclass
class MixtureGuide:
    """q(globals) q(z | x) for :class:`probdiff.models.gmm.model.GaussianMixture`.

    ``init`` must hold ``weights``, ``locs``, ``scales`` (constrained starting points of the
    globals) and, for the encoder, the ``encoder_*`` arrays from :func:`encoder_init`.
    ``dtype`` is a JAX dtype.
    """

    num_components: int
    init: dict[str, np.ndarray]
    globals_guide: str = "none"
    local_guide: str = "enum"
    ordered: bool = False
    dtype: Any = jnp.float32

    def __post_init__(self):
        if self.globals_guide not in GLOBAL_GUIDES:
            raise ValueError(
                f"globals_guide must be one of {GLOBAL_GUIDES}, got {self.globals_guide!r}"
            )
        if self.local_guide not in LOCAL_GUIDES:
            raise ValueError(f"local_guide must be one of {LOCAL_GUIDES}, got {self.local_guide!r}")
        if self.ordered and SITE_LOCS in self.init:
            # relabel so the starting means are strictly increasing in coordinate 0
            p = gmm_em.ordered_by_first_coordinate(
                gmm_em.MixtureParams(*(np.asarray(self.init[k], float) for k in GLOBAL_SITES)),
                min_gap=1e-3,
            )
            self.init = {**self.init, **p.as_dict()}

    def _param(self, name, init, constraint=constraints.real):
        return numpyro.param(
            name, jnp.asarray(np.asarray(init), dtype=self.dtype), constraint=constraint
        )

    def __call__(self, x: jnp.ndarray, n_total: int | None = None) -> None:
        if self.globals_guide == "map":
            self._map()
        elif self.globals_guide == "meanfield":
            self._meanfield()
        if self.local_guide == "encoder":
            logits = self.encode_logits(x)
            n = x.shape[0]
            with numpyro_data_plate(n, n_total):
                numpyro.sample(
                    SITE_ASSIGNMENT,
                    dist.Categorical(logits=logits),
                    infer={"enumerate": "parallel"},
                )

    def encode_logits(self, x: jnp.ndarray) -> jnp.ndarray:
        """Unnormalised log q(z = k | x), shape (N, K)."""
        h = encoder_features(x)
        layers = sorted(k for k in self.init if k.startswith("encoder_w"))
        for i in range(len(layers)):
            w = self._param(f"encoder_w{i}", self.init[f"encoder_w{i}"])
            b = self._param(f"encoder_b{i}", self.init[f"encoder_b{i}"])
            h = h @ w + b
            if i < len(layers) - 1:
                h = jnp.tanh(h)
        return h

    def _map(self) -> None:
        init = self.init
        w = self._param("weights_map", init[SITE_WEIGHTS], constraints.simplex)
        numpyro.sample(SITE_WEIGHTS, dist.Delta(w, event_dim=1))
        s = self._param("scales_map", init[SITE_SCALES], constraints.positive)
        numpyro.sample(SITE_SCALES, dist.Delta(s, event_dim=1))
        locs = np.asarray(init[SITE_LOCS])
        if not self.ordered:
            m = self._param("locs_map", locs)
            numpyro.sample(SITE_LOCS, dist.Delta(m, event_dim=2))
            return
        first = self._param("locs_first_map", locs[:, 0], constraints.ordered_vector)
        numpyro.sample(SITE_LOCS_FIRST, dist.Delta(first, event_dim=1))
        if locs.shape[1] > 1:
            rest = self._param("locs_rest_map", locs[:, 1:])
            numpyro.sample(SITE_LOCS_REST, dist.Delta(rest, event_dim=2))

    def _meanfield(self) -> None:
        K = self.num_components
        weights = np.asarray(self.init[SITE_WEIGHTS])
        conc = self._param("weights_concentration", 50.0 * weights * K, constraints.positive)
        numpyro.sample(SITE_WEIGHTS, dist.Dirichlet(conc))
        scales = np.asarray(self.init[SITE_SCALES])
        s_loc = self._param("scales_loc", np.log(scales))
        s_scale = self._param("scales_scale", np.full(K, 0.1), constraints.positive)
        numpyro.sample(SITE_SCALES, dist.LogNormal(s_loc, s_scale).to_event(1))
        locs = np.asarray(self.init[SITE_LOCS])
        if self.ordered:
            raise ValueError(
                "the mean-field guide has no ordered form; use globals_guide='map' "
                "or NUTS for the ordered model"
            )
        m = self._param("locs_loc", locs)
        v = self._param("locs_scale", np.full(locs.shape, 0.1), constraints.positive)
        numpyro.sample(SITE_LOCS, dist.Normal(m, v).to_event(2))
