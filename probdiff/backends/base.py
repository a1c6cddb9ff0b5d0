"""The contract every inference backend keeps, as a typed protocol.

The engine (fitting loop, checkpoints, metrics, ArviZ output) talks to a backend only through
these methods, and everything that comes back is NumPy or plain Python. A backend holds the
optimiser state of one fit: :meth:`Backend.start` (or :meth:`Backend.load_state_dict` after it)
begins it, :meth:`Backend.step` advances it, the other methods read it. ``mypy`` checks that
:class:`~probdiff.backends.pyro_backend.PyroBackend` and
:class:`~probdiff.backends.numpyro_backend.NumPyroBackend` both satisfy it (see
:func:`probdiff.backends.get_backend`).
"""

from __future__ import annotations

from typing import Any, Protocol

import numpy as np

from probdiff.program import Data, Program
from probdiff.sites import Site

# One joint draw as plain sites: (guide sites, model sites, model sites run forwards or None).
JointSites = tuple[list[Site], list[Site], list[Site] | None]


class Backend(Protocol):
    """Stochastic variational inference over one framework (Pyro or NumPyro)."""

    name: str

    # -- data -----------------------------------------------------------------------------
    def array(self, x: Data) -> Data:
        """``x`` (one array or named arrays) as the framework's arrays, never aliasing it."""
        ...

    def take(self, x: Data, idx: np.ndarray) -> Data:
        """Rows ``idx`` of framework data ``x``."""
        ...

    # -- optimisation ---------------------------------------------------------------------
    def start(
        self, program: Program, x: Any, lr: float, seed: int, clip_norm: float = 10.0
    ) -> None:
        """Fresh parameters (created by one call of the program on ``x``) and optimiser."""
        ...

    def step(self, batch: Any, n_total: int) -> float:
        """One gradient step on ``batch`` (scaled to ``n_total`` rows); returns the loss,
        an estimate of -ELBO of the whole data set, NaN where parameters went non-finite."""
        ...

    def params(self) -> dict[str, np.ndarray]:
        """Constrained values of every parameter."""
        ...

    def set_params(self, program: Program, x: Any, params: dict[str, np.ndarray]) -> None:
        """Create the program's parameters and set them to the constrained ``params``."""
        ...

    def state_dict(self) -> dict:
        """Everything a bit-identical resume needs, as plain data."""
        ...

    def load_state_dict(self, state: dict) -> None:
        """Restore :meth:`state_dict` output after :meth:`start` with the same program."""
        ...

    # -- evaluation -----------------------------------------------------------------------
    def elbo(
        self,
        program: Program,
        x: Any,
        *,
        num_particles: int = 1,
        repeats: int = 1,
        seed: int = 0,
        max_rows: int | None = None,
    ) -> tuple[float, float]:
        """ELBO per datum of ``x`` at the current parameters: (mean, standard error)."""
        ...

    def trace_joint(
        self,
        program: Program,
        data: Data,
        *,
        seed: int,
        n_total: int | None = None,
        fixed: dict[str, np.ndarray] | None = None,
        predictive: bool = False,
    ) -> JointSites:
        """One joint draw of the guide and the model at the current parameters."""
        ...

    def vectorizes(self, program: Program, data: Data, seed: int = 0) -> bool:
        """Whether ELBO particles of ``program`` may be evaluated vectorised."""
        ...

    def trace_forward(
        self, program: Program, data: Data, *, seed: int, fixed: dict[str, np.ndarray]
    ) -> list[Site]:
        """The model run forwards with ``fixed`` latent values (observed sites drawn)."""
        ...

    def guide_draws(
        self, program: Program, x: Any, *, num_samples: int, seed: int = 0
    ) -> dict[str, np.ndarray]:
        """``num_samples`` draws of every sample site of the guide."""
        ...

    def log_weights(
        self, program: Program, x: Any, *, num_samples: int, seed: int = 0
    ) -> np.ndarray:
        """log p(x, z_s) - log q(z_s | x) for ``num_samples`` guide draws, shape (S,)."""
        ...

    def local_log_weights(
        self, program: Program, x: Any, *, num_samples: int, seed: int = 0
    ) -> np.ndarray:
        """log p(x_n, z_s) - log q(z_s | x_n) per datum, shape (S, N)."""
        ...
