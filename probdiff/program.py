"""What a model family hands to a backend: a model, its guide, and which ELBO to optimise."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

ElboName = Literal["trace", "enum", "meanfield"]
ELBO_NAMES: tuple[str, ...] = ("trace", "enum", "meanfield")

# Data as the engine passes it around: one array (rows first) or named arrays sharing rows.
Data = Any

# Post-training budgets: an ELBO is estimated on at most EVAL_ROWS rows per repeat (a fresh
# random subset each time, scaled to the full data, so the estimate stays unbiased and its
# standard error includes the subsampling); posterior draws, per-datum log-likelihoods and
# predictive draws are kept for at most DRAW_ROWS rows.
EVAL_ROWS = 10_000
DRAW_ROWS = 10_000
# a vectorised ELBO call holds about particles x rows x values-per-row numbers at once; more
# particles than fit are split over calls (see particle_groups)
PARTICLE_VALUES = 1 << 24
# streamed data: parameters are created by a traced call on this many rows spread over the file
INIT_ROWS = 4096


def lazy_array(data: Data, convert: Callable[[Any], Any]) -> Data:
    """A backend's copy of ``data``: ``convert`` applied to each array now, or, for rows on disk
    (:class:`probdiff.data.rows.Rows`), to each block of rows when it is read."""
    from probdiff.data.rows import Rows

    return map_arrays(
        lambda a: a.with_convert(convert) if isinstance(a, Rows) else convert(a), data
    )


def head_rows(data: Data) -> Data:
    """The first INIT_ROWS rows (read now, for rows on disk): what a probe of a program sees."""
    return take_rows(data, np.arange(min(num_rows(data), INIT_ROWS)))


def init_rows(data: Data) -> Data:
    """What a traced call that creates parameters sees: ``data``, or for rows on disk
    INIT_ROWS of them spread over the file (read now)."""
    from probdiff.data.rows import is_rows, spread_rows

    if not is_rows(data):
        return data
    return take_rows(data, spread_rows(num_rows(data), INIT_ROWS))


@dataclass
class Program:
    """A generative model and its guide, and how they are called and scored.

    ``elbo`` picks the estimator: ``trace`` (Trace_ELBO, Monte Carlo), ``enum``
    (TraceEnum_ELBO: discrete sites marked ``enumerate`` are summed out exactly) or
    ``meanfield`` (TraceMeanField_ELBO: analytic KL where the backend knows it); the bound is
    docs/equations.md (1.1).

    Calling convention: data that is one array reaches the model as ``model(x)``; named arrays
    (a dict) as ``model(**arrays)``. ``minibatch`` says whether the model and guide accept
    ``n_total`` (the size of the full data set) to scale their data plate when given a
    minibatch; only then does the engine pass it.

    ``vectorize_particles`` lets a backend evaluate several ELBO particles in one vectorised
    call (an extra batch dimension on every site). The built-in programs are written for it;
    a user's program is evaluated particle by particle, exactly as it trained, unless its
    author says otherwise. ``name`` labels the program in error messages (a user model's
    ``file.py:function``); ``None`` for built-ins.
    """

    model: Callable
    guide: Callable
    elbo: ElboName = "trace"
    max_plate_nesting: int = 1
    num_particles: int = 1
    minibatch: bool | None = None  # None: whether both take ``n_total`` (their signatures)
    vectorize_particles: bool = True
    name: str | None = None

    def __post_init__(self) -> None:
        if self.elbo not in ELBO_NAMES:
            raise ValueError(f"elbo must be one of {ELBO_NAMES}, got {self.elbo!r}")
        if self.minibatch is None:
            self.minibatch = takes_n_total(self.model) and takes_n_total(self.guide)

    def kwargs(self, n_total: int | None) -> dict:
        """Keyword arguments for the model and guide on a batch of a data set of size n_total."""
        return {"n_total": n_total} if (self.minibatch and n_total is not None) else {}

    def inputs(self, data: Data, n_total: int | None = None) -> tuple[tuple, dict]:
        """``(args, kwargs)`` for the model and guide on ``data`` (a batch of ``n_total`` rows)."""
        extra = self.kwargs(n_total)
        if isinstance(data, Mapping):
            return (), {**data, **extra}
        return (data,), extra


def takes_n_total(fn: Callable) -> bool:
    """Whether ``fn`` accepts the keyword ``n_total`` (by name or through ``**kwargs``)."""
    import inspect

    try:
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return False
    return "n_total" in params or any(p.kind is p.VAR_KEYWORD for p in params.values())


def num_rows(data: Data) -> int:
    """Rows of one array or of named arrays (which share their first dimension)."""
    if isinstance(data, Mapping):
        return int(next(iter(data.values())).shape[0])
    return int(data.shape[0])


def map_arrays(fn: Callable[[Any], Any], data: Data) -> Data:
    """``fn`` applied to one array or to each of named arrays."""
    if isinstance(data, Mapping):
        return {k: fn(v) for k, v in data.items()}
    return fn(data)


def take_rows(data: Data, idx: np.ndarray | slice) -> Data:
    """The rows ``idx`` of one array or of every named array."""
    return map_arrays(lambda a: a[idx], data)


def particle_groups(num_particles: int, data: Data, max_rows: int | None = None) -> int:
    """Into how many calls of equal size ``num_particles`` vectorised particles on ``data``
    (on at most ``max_rows`` of its rows) are split: the fewest that keep each call within
    PARTICLE_VALUES numbers (1 where all fit). The mean over the calls is the same estimator
    as one call's."""
    rows = num_rows(data) if max_rows is None else min(num_rows(data), max_rows)
    arrays = data.values() if isinstance(data, Mapping) else [data]
    width = sum(int(np.prod(a.shape[1:], dtype=np.int64)) for a in arrays)
    for groups in range(1, num_particles + 1):
        if (
            num_particles % groups == 0
            and num_particles // groups * rows * width <= PARTICLE_VALUES
        ):
            return groups
    return num_particles


def row_subset(n: int, size: int | None, seed: int) -> np.ndarray | None:
    """A seeded random subset of ``size`` of ``n`` rows, in order; None where all rows fit."""
    if size is None or size >= n:
        return None
    return np.sort(np.random.default_rng(seed).choice(n, size=size, replace=False))
