"""Inference backends: the same SVI contract over Pyro (torch) and NumPyro (JAX).

A backend turns a :class:`probdiff.program.Program` and a data array into an optimiser state
and steps it; everything it returns to the engine is NumPy, so the fitting loop, checkpoints,
metrics and ArviZ output never see a framework type.
"""

from __future__ import annotations

from probdiff.errors import ProbdiffError

BACKENDS = ("pyro", "numpyro")


def get_backend(name: str, device: str = "cpu", dtype: str = "float32", threads: int | None = None):
    """Return the backend object for ``name`` (imported lazily: JAX starts only when asked)."""
    if name == "pyro":
        from probdiff.backends.pyro_backend import PyroBackend
        return PyroBackend(device=device, dtype=dtype, threads=threads)
    if name == "numpyro":
        from probdiff.backends.numpyro_backend import NumPyroBackend
        return NumPyroBackend(device=device, dtype=dtype)
    raise ProbdiffError(f"unknown backend {name!r}: choose one of {', '.join(BACKENDS)}")
