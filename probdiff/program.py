"""What a model family hands to a backend: a model, its guide, and which ELBO to optimise."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Literal

ElboName = Literal["trace", "enum", "meanfield"]
ELBO_NAMES: tuple[str, ...] = ("trace", "enum", "meanfield")


@dataclass
class Program:
    """A generative model and its guide, both called as ``f(x, n_total=None)``.

    ``elbo`` picks the estimator: ``trace`` (Trace_ELBO, Monte Carlo), ``enum``
    (TraceEnum_ELBO: discrete sites marked ``enumerate`` are summed out exactly) or
    ``meanfield`` (TraceMeanField_ELBO: analytic KL where the backend knows it).
    ``minibatch`` says whether the model accepts ``n_total`` (the size of the full data set)
    to scale its data plate when given a minibatch; user models that do not take it are fitted
    on the full data only.
    """

    model: Callable
    guide: Callable
    elbo: ElboName = "trace"
    max_plate_nesting: int = 1
    num_particles: int = 1
    minibatch: bool = True

    def __post_init__(self) -> None:
        if self.elbo not in ELBO_NAMES:
            raise ValueError(f"elbo must be one of {ELBO_NAMES}, got {self.elbo!r}")

    def kwargs(self, n_total: int | None) -> dict:
        """Keyword arguments for the model and guide on a batch of a data set of size n_total."""
        return {"n_total": n_total} if (self.minibatch and n_total is not None) else {}
