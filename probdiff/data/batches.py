"""Train/test splits and seeded, epoch-shuffled minibatches of row indices."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from probdiff.data.dataset import Dataset, _check_seed, _positive_int
from probdiff.errors import ProbdiffError


def train_test_split(ds: Dataset, test_fraction: float, seed: int) -> tuple[Dataset, Dataset]:
    """Seeded random split into (train, test); each keeps the original row order.

    The test set has ``round(test_fraction * N)`` rows (at least one when the fraction is
    positive); ``test_fraction == 0`` gives an empty test set. The training set must keep at
    least one row.
    """
    seed = _check_seed(seed)
    try:
        fraction = float(test_fraction)
    except (TypeError, ValueError):
        raise ProbdiffError(f"test fraction must be a number, got {test_fraction!r}") from None
    if not 0.0 <= fraction < 1.0:
        raise ProbdiffError(f"test fraction must be in [0, 1), got {test_fraction!r}")
    n_test = int(round(fraction * ds.n))
    if fraction > 0 and n_test == 0:
        n_test = 1
    if ds.n - n_test < 1:
        raise ProbdiffError(
            f"test fraction {test_fraction!r} of {ds.n} data points leaves no training data"
        )
    perm = np.random.default_rng(seed).permutation(ds.n)
    return ds.subset(np.sort(perm[n_test:])), ds.subset(np.sort(perm[:n_test]))


EVAL_BYTES = 64 << 20  # streamed data: the rows metrics read into memory, as float64
EVAL_MAX_ROWS = 20_000


def evaluation_subset(ds: Dataset, seed: int) -> Dataset:
    """What the metrics after training read: ``ds`` itself, or for streamed data a seeded
    random subset of its rows (at most EVAL_MAX_ROWS and EVAL_BYTES as float64, at least 1000
    rows), read into memory. Per-datum metrics on it estimate those of ``ds`` without bias."""
    if not ds.streamed:
        return ds
    size = max(1000, min(EVAL_MAX_ROWS, EVAL_BYTES // (8 * ds.dim)))
    if size >= ds.n:
        return ds.loaded()
    return ds.subset(sample_rows(ds.n, size, _check_seed(seed))).loaded()


def sample_rows(n: int, k: int, seed: int) -> np.ndarray:
    """A uniformly random ``k``-subset of ``0..n-1``, sorted, in memory O(k) (the rows drawn
    with replacement, duplicates drawn again: the law is invariant under relabelling the rows,
    so every subset is equally likely)."""
    rng = np.random.default_rng(seed)
    chosen = np.unique(rng.integers(n, size=k))
    while len(chosen) < k:
        chosen = np.union1d(chosen, rng.integers(n, size=k - len(chosen)))
    return chosen


class Minibatches:
    """Seeded, epoch-shuffled minibatches of indices ``0..n-1``.

    Epoch ``e`` uses the permutation drawn from ``(seed, e)``, so the stream depends only on
    ``(n, batch_size, seed)``; the last batch of an epoch may be smaller. ``batch_size`` None
    or ``>= n`` means the full batch, in order, every time. ``next_batch()`` crosses epochs;
    ``for batch in mb`` runs to the end of the current epoch (a full epoch when started at
    an epoch boundary) and both share one cursor, saved by ``state_dict()``.
    """

    def __init__(self, n: int, batch_size: int | None, seed: int) -> None:
        self.n = _positive_int(n, "number of data points")
        self.batch_size = None if batch_size is None else _positive_int(batch_size, "batch size")
        self.seed = _check_seed(seed)
        self.epoch = 0
        self._pos = 0  # index of the next batch within the epoch
        self._perm: np.ndarray | None = None

    @property
    def full_batch(self) -> bool:
        """Whether every batch is the whole data set."""
        return self.batch_size is None or self.batch_size >= self.n

    def __len__(self) -> int:
        """Batches per epoch."""
        if self.batch_size is None or self.full_batch:
            return 1
        return -(-self.n // self.batch_size)

    def __iter__(self) -> Iterator[np.ndarray]:
        """The remaining batches of the current epoch."""
        epoch = self.epoch
        while self.epoch == epoch:
            yield self.next_batch()

    def next_batch(self) -> np.ndarray:
        """The next index array, moving on to the next epoch after the last batch."""
        if self.batch_size is None or self.full_batch:
            batch = np.arange(self.n)
        else:
            perm = self._permutation()
            batch = perm[self._pos * self.batch_size : (self._pos + 1) * self.batch_size].copy()
        self._pos += 1
        if self._pos >= len(self):
            self.epoch += 1
            self._pos = 0
            self._perm = None
        return batch

    def _permutation(self) -> np.ndarray:
        """The current epoch's permutation (cached)."""
        if self._perm is None:
            self._perm = np.random.default_rng([self.seed, self.epoch]).permutation(self.n)
        return self._perm

    def state_dict(self) -> dict[str, int | None]:
        """JSON-friendly cursor: settings plus epoch and batch position."""
        return {
            "n": self.n,
            "batch_size": self.batch_size,
            "seed": self.seed,
            "epoch": self.epoch,
            "position": self._pos,
        }

    def load_state_dict(self, state: dict) -> None:
        """Resume from :meth:`state_dict`; the settings must match this instance's."""
        missing = {"n", "batch_size", "seed", "epoch", "position"} - set(state)
        if missing:
            raise ProbdiffError(f"minibatch state lacks {', '.join(sorted(missing))}")
        for key in ("n", "batch_size", "seed"):
            if state[key] != getattr(self, key):
                raise ProbdiffError(
                    f"minibatch state was saved with {key}={state[key]!r}, not {getattr(self, key)!r}"
                )
        epoch, position = int(state["epoch"]), int(state["position"])
        if epoch < 0 or not 0 <= position < len(self):
            raise ProbdiffError(
                f"minibatch state has a bad cursor: epoch {epoch}, position {position}"
            )
        self.epoch, self._pos, self._perm = epoch, position, None
