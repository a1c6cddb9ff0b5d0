"""Guides for the Gaussian mixture (docs/equations.md (1.8), (1.12)): the encoders q(z | x) and
q(globals).

Two halves, combined by :class:`MixtureGuide`:

* globals: ``none`` (maximum likelihood: the model holds the parameters), ``map`` (a point mass
  at learnable values, i.e. MAP under the priors) or ``meanfield`` (Dirichlet x Normal x
  LogNormal with learnable parameters);
* the assignment: ``enum`` (no guide site: the model sums z out exactly, so the ELBO is
  log p(x) under point globals) or ``encoder`` (an amortised q(z | x) = Categorical(softmax(
  W phi(x) + b)) with phi(x) = (x, ||x||^2 / 2), enumerated in the guide).

The encoder's features make the exact posterior representable: for isotropic components
log p(z=k | x) = log pi_k - D log sigma_k - ||x - mu_k||^2 / (2 sigma_k^2) + c(x), which is
affine in (x, ||x||^2 / 2). With ``hidden > 0`` a tanh layer is inserted before the output layer.

Parameter names match :mod:`probdiff.guides.gmm_numpyro`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyro
import pyro.distributions as dist
import torch
from pyro import poutine
from pyro.distributions import constraints

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
from probdiff.plates import data_plate

GLOBAL_GUIDES = ("none", "map", "meanfield")
LOCAL_GUIDES = ("enum", "encoder")


def encoder_features(x: torch.Tensor) -> torch.Tensor:
    """phi(x) = (x, ||x||^2 / 2): the responsibilities are a softmax of an affine map of phi."""
    return torch.cat([x, 0.5 * (x * x).sum(-1, keepdim=True)], dim=-1)


def encoder_init(dim: int, num_components: int, hidden: int, seed: int) -> dict[str, np.ndarray]:
    """Small random initial weights of the encoder, keyed by parameter name."""
    rng = np.random.default_rng(seed)
    sizes = [dim + 1] + ([hidden] if hidden else []) + [num_components]
    init = {}
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        init[f"encoder_w{i}"] = rng.normal(0.0, 0.1 / np.sqrt(a), size=(a, b))
        init[f"encoder_b{i}"] = np.zeros(b)
    return init


@dataclass
class MixtureGuide:
    """q(globals) q(z | x) for :class:`probdiff.models.gmm.GaussianMixture`.

    ``init`` must hold ``weights``, ``locs``, ``scales`` (constrained starting points of the
    globals) and, for the encoder, the ``encoder_*`` arrays from :func:`encoder_init`.
    """

    num_components: int
    init: dict[str, np.ndarray]
    globals_guide: str = "none"
    local_guide: str = "enum"
    ordered: bool = False
    dtype: torch.dtype = torch.float32
    device: str | torch.device = "cpu"

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
        return pyro.param(
            name,
            lambda: torch.as_tensor(np.asarray(init), dtype=self.dtype, device=self.device),
            constraint=constraint,
        )

    def __call__(self, x: torch.Tensor, n_total: int | None = None) -> None:
        if self.globals_guide == "map":
            self._map()
        elif self.globals_guide == "meanfield":
            self._meanfield()
        if self.local_guide == "encoder":
            logits = self.encode_logits(x)
            n = x.shape[0]
            with data_plate(n, n_total):
                pyro.sample(
                    SITE_ASSIGNMENT,
                    dist.Categorical(logits=logits),
                    infer={"enumerate": "parallel"},
                )

    def encode_logits(self, x: torch.Tensor) -> torch.Tensor:
        """Unnormalised log q(z = k | x), shape (N, K)."""
        h = encoder_features(x)
        layers = sorted(k for k in self.init if k.startswith("encoder_w"))
        for i in range(len(layers)):
            w = self._param(f"encoder_w{i}", self.init[f"encoder_w{i}"])
            b = self._param(f"encoder_b{i}", self.init[f"encoder_b{i}"])
            h = h @ w + b
            if i < len(layers) - 1:
                h = torch.tanh(h)
        return h

    def _map(self) -> None:
        init = self.init
        w = self._param("weights_map", init[SITE_WEIGHTS], constraints.simplex)
        pyro.sample(SITE_WEIGHTS, dist.Delta(w, event_dim=1))
        s = self._param("scales_map", init[SITE_SCALES], constraints.positive)
        pyro.sample(SITE_SCALES, dist.Delta(s, event_dim=1))
        locs = np.asarray(init[SITE_LOCS])
        if not self.ordered:
            m = self._param("locs_map", locs)
            pyro.sample(SITE_LOCS, dist.Delta(m, event_dim=2))
            return
        first = self._param("locs_first_map", locs[:, 0], constraints.ordered_vector)
        pyro.sample(SITE_LOCS_FIRST, dist.Delta(first, event_dim=1))
        if locs.shape[1] > 1:
            rest = self._param("locs_rest_map", locs[:, 1:])
            pyro.sample(SITE_LOCS_REST, dist.Delta(rest, event_dim=2))

    def _meanfield(self) -> None:
        K = self.num_components
        weights = np.asarray(self.init[SITE_WEIGHTS])
        conc = self._param("weights_concentration", 50.0 * weights * K, constraints.positive)
        pyro.sample(SITE_WEIGHTS, dist.Dirichlet(conc))
        scales = np.asarray(self.init[SITE_SCALES])
        s_loc = self._param("scales_loc", np.log(scales))
        s_scale = self._param("scales_scale", np.full(K, 0.1), constraints.positive)
        pyro.sample(SITE_SCALES, dist.LogNormal(s_loc, s_scale).to_event(1))
        locs = np.asarray(self.init[SITE_LOCS])
        if self.ordered:
            raise ValueError(
                "the mean-field guide has no ordered form; use globals_guide='map' "
                "or NUTS for the ordered model"
            )
        m = self._param("locs_loc", locs)
        v = self._param("locs_scale", np.full(locs.shape, 0.1), constraints.positive)
        pyro.sample(SITE_LOCS, dist.Normal(m, v).to_event(2))


def posterior_assignments(model, guide, x: torch.Tensor, temperature: int = 0) -> torch.Tensor:
    """Assignments from p(z | x, globals) by Pyro's ``infer_discrete``, shape (N,).

    ``temperature=0`` gives the MAP assignment (the hard encoder), ``1`` a posterior draw. The
    globals are taken from one run of the guide (its point values for MLE or MAP fits); the
    guide's own q(z | x), if any, is ignored: this is the exact posterior under the model
    (docs/equations.md (1.7)).
    """
    from pyro.infer import infer_discrete

    globals_trace = poutine.trace(poutine.block(guide, hide=[SITE_ASSIGNMENT])).get_trace(x)
    conditioned = poutine.replay(model, trace=globals_trace)
    decoded = infer_discrete(conditioned, first_available_dim=-2, temperature=temperature)
    tr = poutine.trace(decoded).get_trace(x)
    return tr.nodes[SITE_ASSIGNMENT]["value"]
