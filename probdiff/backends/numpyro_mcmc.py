"""NUTS for any NumPyro model, returned as ArviZ ``InferenceData``.

Model-agnostic: the model is called as ``model(x, **model_kwargs)``. Discrete sample sites that
the model marks ``infer={"enumerate": "parallel"}`` are summed out exactly by NumPyro's
funsor-based enumeration, so NUTS samples the *collapsed* model (for the Gaussian mixture of
docs/equations.md (1.6): p(x | pi, mu, sigma) = prod_n sum_k pi_k N(x_n | mu_k, sigma_k^2 I) times
the prior).

Chains run in parallel only where JAX sees at least ``num_chains`` devices; otherwise
sequentially (this module never changes the host device count, which is process-wide).
Sequential chains each compile their own sampling loop; ``chain_method="vectorized"`` compiles
once but steps all chains in lockstep (each iteration costs the longest tree), so it is the
cheaper choice for short runs and the dearer one for long runs on CPU.

Each chain starts at its own point: ``init_values`` (one dict of constrained site values per
chain) where given, else a draw of ``init_strategy`` from the chain's key (by default uniform in
(-init_radius, init_radius) in the unconstrained space). R-hat is a diagnostic only because the
starts are dispersed. For mixtures, starts drawn without looking at the data often leave some
chain in a local mode (one component over two clusters): give data-informed starts such as
:meth:`probdiff.models.gmm.model.GaussianMixture.init_values`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Literal

import arviz as az
import jax
import jax.numpy as jnp
from jax import random
from numpyro.handlers import seed as seed_handler
from numpyro.infer import MCMC, NUTS, init_to_uniform
from numpyro.infer.util import unconstrain_fn

from probdiff.errors import ProbdiffError

ChainMethod = Literal["parallel", "sequential", "vectorized"]
EXTRA_FIELDS = (
    "diverging",
    "accept_prob",
    "num_steps",
    "potential_energy",
    "energy",
    "adapt_state.step_size",
)


def run_nuts(
    model: Callable,
    x,
    *,
    num_chains: int = 4,
    num_warmup: int = 500,
    num_samples: int = 500,
    seed: int = 0,
    progress: bool = True,
    model_kwargs: dict | None = None,
    init_values: Sequence[dict] | None = None,
    init_strategy: Callable | None = None,
    init_radius: float = 2.0,
    target_accept_prob: float = 0.8,
    dense_mass: bool = False,
    chain_method: ChainMethod | None = None,
) -> az.InferenceData:
    """Run ``num_chains`` NUTS chains on ``model(x, **model_kwargs)``.

    Each chain starts at its entry of ``init_values`` (constrained values of the latent sites,
    e.g. :meth:`probdiff.models.gmm.model.GaussianMixture.init_values`) if given, else at a
    point drawn by ``init_strategy`` from the chain's own key.

    Returns InferenceData with ``posterior`` (dims chain, draw, ...; deterministic sites
    included, enumerated discrete sites excluded), ``sample_stats`` (``diverging``,
    ``acceptance_rate``, ``n_steps``, ``lp``, ``energy``, ``step_size``) and ``observed_data``.
    No ``log_likelihood`` group: ArviZ would evaluate it with the enumerated sites drawn from
    their prior instead of summed out.
    """
    if num_chains < 1 or num_warmup < 0 or num_samples < 1:
        raise ProbdiffError(
            f"need num_chains >= 1, num_warmup >= 0, num_samples >= 1; got "
            f"{num_chains}, {num_warmup}, {num_samples}"
        )
    if chain_method is None:
        chain_method = "parallel" if jax.local_device_count() >= num_chains else "sequential"
    if chain_method not in ("parallel", "sequential", "vectorized"):
        raise ProbdiffError(
            f"unknown chain_method {chain_method!r}: use parallel, sequential or vectorized"
        )
    kernel = NUTS(
        model,
        target_accept_prob=target_accept_prob,
        dense_mass=dense_mass,
        init_strategy=init_strategy or init_to_uniform(radius=init_radius),
    )
    mcmc = MCMC(
        kernel,
        num_warmup=num_warmup,
        num_samples=num_samples,
        num_chains=num_chains,
        chain_method=chain_method,
        progress_bar=progress,
    )
    kwargs = dict(model_kwargs or {})
    init_params = None
    if init_values is not None:
        init_params = _unconstrained_inits(model, x, kwargs, init_values, num_chains)
    mcmc.run(random.PRNGKey(seed), x, extra_fields=EXTRA_FIELDS, init_params=init_params, **kwargs)
    return az.from_numpyro(mcmc, log_likelihood=False)


def _unconstrained_inits(
    model: Callable, x, kwargs: dict, init_values: Sequence[dict], num_chains: int
) -> dict:
    """Per-chain constrained starting values -> NUTS's unconstrained ``init_params``."""
    if len(init_values) != num_chains:
        raise ProbdiffError(f"init_values has {len(init_values)} entries for {num_chains} chains")
    x_dtype = jnp.asarray(x).dtype
    dtype = x_dtype if jnp.issubdtype(x_dtype, jnp.floating) else None
    seeded = seed_handler(model, rng_seed=0)
    chains = [
        unconstrain_fn(
            seeded, (x,), kwargs, {k: jnp.asarray(v, dtype=dtype) for k, v in values.items()}
        )
        for values in init_values
    ]
    if num_chains == 1:
        return chains[0]
    return {k: jnp.stack([c[k] for c in chains]) for k in chains[0]}
