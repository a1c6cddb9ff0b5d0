"""The data plate every program opens over a batch: ``n`` rows of a data set of ``n_total``,
each site inside scaled by ``n_total / n`` (so a minibatch ELBO estimates the full data's,
docs/equations.md (1.3)), one helper per backend.

>>> import pyro, torch, pyro.distributions as dist
>>> def model(x, n_total=None):
...     with data_plate(len(x), n_total):
...         pyro.sample("obs", dist.Normal(0.0, 1.0), obs=x)
>>> tr = pyro.poutine.trace(model).get_trace(torch.zeros(4), n_total=100)
>>> tr.nodes["obs"]["scale"]
25.0
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

DATA_PLATE = "data"


@contextlib.contextmanager
def data_plate(n: int, n_total: int | None = None, dim: int | None = None) -> Iterator:
    """Pyro: ``pyro.plate("data", n, dim=dim)`` scaled by ``n_total / n``."""
    import pyro

    with pyro.plate(DATA_PLATE, n, dim=dim) as idx, pyro.poutine.scale(scale=(n_total or n) / n):
        yield idx


@contextlib.contextmanager
def numpyro_data_plate(n: int, n_total: int | None = None, dim: int | None = None) -> Iterator:
    """NumPyro: ``numpyro.plate("data", n, dim=dim)`` scaled by ``n_total / n``."""
    import numpyro

    with (
        numpyro.plate(DATA_PLATE, n, dim=dim) as idx,
        numpyro.handlers.scale(scale=(n_total or n) / n),
    ):
        yield idx
