"""Inference backends: the same SVI contract over Pyro (torch) and NumPyro (JAX).

A backend turns a :class:`probdiff.program.Program` and a data array into an optimiser state
and steps it; everything it returns to the engine is NumPy, so the fitting loop, checkpoints,
metrics and ArviZ output never see a framework type.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from probdiff.errors import ProbdiffError

if TYPE_CHECKING:
    from probdiff.backends.base import Backend

BACKENDS = ("pyro", "numpyro")


def get_backend(
    name: str,
    device: str = "cpu",
    dtype: str = "float32",
    threads: int | None = None,
    devices: int = 1,
) -> Backend:
    """Return the backend object for ``name`` (imported lazily: JAX starts only when asked)."""
    backend: Backend  # mypy checks each class against the protocol here
    if name == "pyro":
        from probdiff.backends.pyro_backend import PyroBackend

        if devices != 1:
            raise ProbdiffError(
                "--devices is for the numpyro backend (JAX's device mesh); the pyro backend "
                "runs one process per device under torchrun"
            )

        backend = PyroBackend(device=device, dtype=dtype, threads=threads)
        return backend
    if name == "numpyro":
        import importlib.util

        missing = [m for m in ("numpyro", "jax", "flax") if importlib.util.find_spec(m) is None]
        if missing:
            raise ProbdiffError(
                f"the numpyro backend needs {', '.join(missing)}: pip install 'probdiff[numpyro]'"
            )
        from probdiff.backends.numpyro_backend import NumPyroBackend

        backend = NumPyroBackend(device=device, dtype=dtype, devices=devices)
        return backend
    raise ProbdiffError(f"unknown backend {name!r}: choose one of {', '.join(BACKENDS)}")
