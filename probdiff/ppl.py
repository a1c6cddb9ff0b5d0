"""One program text for both backends: the primitives a network-free model needs, bound to
Pyro (torch) or NumPyro (JAX).

A model written against a :class:`PPL` object (``ppl.sample``, ``ppl.param``, ``ppl.dist``,
``ppl.data_plate``, ...) runs unchanged under either framework; only arrays and distributions
differ, and both frameworks share the names of the distributions, constraints and effect
handlers a model uses. Models with networks keep a twin per backend (the networks differ).

>>> ppl = get_ppl("numpyro")
>>> import numpyro
>>> def model(x):
...     loc = ppl.sample("loc", ppl.dist.Normal(0.0, 1.0))
...     with ppl.data_plate(len(x), 100):
...         ppl.sample("obs", ppl.dist.Normal(loc, 1.0), obs=x)
>>> tr = numpyro.handlers.trace(numpyro.handlers.seed(model, 0)).get_trace(ppl.tensor([0.0, 1.0]))
>>> float(tr["obs"]["scale"]), get_ppl("pyro").name
(50.0, 'pyro')
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

PPL_NAMES = ("pyro", "numpyro")


class PPL:
    """The primitives of one framework: ``sample``, ``param``, ``factor``, ``deterministic``,
    ``data_plate``, ``Vindex``, ``tensor``, ``concatenate``, and the modules ``dist`` and
    ``constraints``. ``dtype`` is a floating dtype name ("float32", "float64") or the
    framework's own dtype object."""

    name: str
    dist: Any
    constraints: Any
    Vindex: Any

    def tensor(self, value: Any) -> Any:
        """``value`` as a floating array of this framework, dtype and device."""
        raise NotImplementedError

    def sample(self, name: str, fn: Any, obs: Any = None, infer: dict | None = None) -> Any:
        raise NotImplementedError

    def param(self, name: str, init: Callable[[], Any], constraint: Any = None) -> Any:
        """A parameter whose first value is ``init()`` (called only when it is created)."""
        raise NotImplementedError

    def factor(self, name: str, log_factor: Any) -> None:
        raise NotImplementedError

    def deterministic(self, name: str, value: Any, event_dim: int | None = None) -> Any:
        raise NotImplementedError

    def data_plate(self, n: int, n_total: int | None = None) -> Any:
        """The plate over ``n`` rows, scaled by ``n_total / n`` for a minibatch."""
        raise NotImplementedError

    def concatenate(self, arrays: Sequence[Any], axis: int = -1) -> Any:
        raise NotImplementedError


class PyroPPL(PPL):
    name = "pyro"

    def __init__(self, dtype: Any = "float32", device: Any = "cpu"):
        import pyro
        import pyro.distributions as dist
        import torch
        from pyro.distributions import constraints
        from pyro.ops.indexing import Vindex

        self._pyro, self._torch = pyro, torch
        self.dist, self.constraints, self.Vindex = dist, constraints, Vindex
        self.dtype = getattr(torch, dtype) if isinstance(dtype, str) else dtype
        self.device = device

    def tensor(self, value: Any) -> Any:
        import numpy as np

        return self._torch.as_tensor(np.asarray(value), dtype=self.dtype, device=self.device)

    def sample(self, name, fn, obs=None, infer=None):
        return self._pyro.sample(name, fn, obs=obs, infer=infer or {})

    def param(self, name, init, constraint=None):
        kw = {} if constraint is None else {"constraint": constraint}
        return self._pyro.param(name, init, **kw)

    def factor(self, name, log_factor):
        self._pyro.factor(name, log_factor)

    def deterministic(self, name, value, event_dim=None):
        return self._pyro.deterministic(name, value, event_dim=event_dim)

    def data_plate(self, n, n_total=None):
        from probdiff.plates import data_plate

        return data_plate(n, n_total)

    def concatenate(self, arrays, axis=-1):
        return self._torch.cat(list(arrays), axis)


class NumPyroPPL(PPL):
    name = "numpyro"

    def __init__(self, dtype: Any = "float32", device: Any = None):
        import jax.numpy as jnp
        import numpyro
        import numpyro.distributions as dist
        from numpyro.distributions import constraints
        from numpyro.ops.indexing import Vindex

        self._numpyro, self._jnp = numpyro, jnp
        self.dist, self.constraints, self.Vindex = dist, constraints, Vindex
        self.dtype = getattr(jnp, dtype) if isinstance(dtype, str) else dtype

    def tensor(self, value: Any) -> Any:
        import numpy as np

        return self._jnp.asarray(np.asarray(value), dtype=self.dtype)

    def sample(self, name, fn, obs=None, infer=None):
        return self._numpyro.sample(name, fn, obs=obs, infer=infer)

    def param(self, name, init, constraint=None):
        kw = {} if constraint is None else {"constraint": constraint}
        return self._numpyro.param(name, init(), **kw)

    def factor(self, name, log_factor):
        self._numpyro.factor(name, log_factor)

    def deterministic(self, name, value, event_dim=None):
        return self._numpyro.deterministic(name, value)

    def data_plate(self, n, n_total=None):
        from probdiff.plates import numpyro_data_plate

        return numpyro_data_plate(n, n_total)

    def concatenate(self, arrays, axis=-1):
        return self._jnp.concatenate(list(arrays), axis)


def get_ppl(name: str, dtype: Any = "float32", device: Any = "cpu") -> PPL:
    """The primitives of ``name`` ("pyro" or "numpyro"), the framework imported now."""
    if name == "pyro":
        return PyroPPL(dtype, device)
    if name == "numpyro":
        return NumPyroPPL(dtype)
    raise ValueError(f"unknown PPL {name!r}: choose one of {', '.join(PPL_NAMES)}")
