"""From data units to a model's units and back, with the log-Jacobian that keeps densities
in data units.

Integer images (``meta["integer"]``, values ``low..high`` on ``levels`` levels) are mapped
affinely onto ``target`` (default [0, 1]): x' = t0 + (x - low) (t1 - t0) / (high - low). A
continuous density of x' is a density of x times |dx'/dx|^D, so (docs/equations.md (2.18))

    log p(x) = log p'(x') + D log((t1 - t0) / (high - low))      (``log_jacobian``, nats)

and metrics reported in data units add ``log_jacobian`` to every per-datum log density. A
probability mass (Bernoulli, discretised Gaussian) needs no Jacobian. Non-integer data pass
through unchanged (Jacobian 0).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from probdiff.data import Dataset
from probdiff.data.rows import Rows
from probdiff.errors import ProbdiffError


@dataclass(frozen=True)
class DataScaling:
    """The map from a data set's units to the model's: affine, then binarised if asked."""

    low: float = 0.0
    high: float = 1.0
    target: tuple[float, float] = (0.0, 1.0)
    levels: int | None = None  # integer levels the model sees (None: continuous data)
    binarize: bool = False  # threshold at the middle of the target range
    discrete: bool = False  # the likelihood is a mass function: no Jacobian
    dim: int = 1
    identity: bool = True

    @classmethod
    def of(
        cls, data: Dataset, likelihood: str, target: tuple[float, float] = (0.0, 1.0)
    ) -> DataScaling:
        """The scaling a likelihood needs on ``data``: ``gaussian`` (any data; integer images
        scaled), ``bernoulli`` (binary data, or integer images binarised at half range),
        ``discretized`` (integer images only)."""
        meta = data.meta
        integer = bool(meta.get("integer")) and meta.get("levels", 0) >= 2
        kw = {"dim": data.dim, "target": tuple(target)}
        if integer:
            kw.update(
                low=float(meta["low"]),
                high=float(meta["high"]),
                levels=int(meta["levels"]),
                identity=False,
            )
        if likelihood == "gaussian":
            return cls(**kw)
        if likelihood == "bernoulli":
            if integer:
                return cls(**kw, binarize=True, discrete=True)
            blocks = data.x.blocks() if isinstance(data.x, Rows) else [data.x]
            if not all(np.isin(b, (0.0, 1.0)).all() for b in blocks):
                raise ProbdiffError(
                    "--likelihood bernoulli needs binary data (values 0 and 1) or "
                    f"integer images; {data.name!r} has other values"
                )
            return cls(dim=data.dim, discrete=True, levels=2)
        if likelihood == "discretized":
            if not integer:
                raise ProbdiffError(
                    f"--likelihood discretized needs integer images (PNG folders, "
                    f"uint8 arrays, digits); {data.name!r} is continuous data"
                )
            return cls(**kw, discrete=True)
        raise ProbdiffError(f"unknown likelihood {likelihood!r}")

    @property
    def model_levels(self) -> int | None:
        """Levels of the data as the model sees them (2 once binarised)."""
        return 2 if self.binarize else self.levels

    @property
    def log_jacobian(self) -> float:
        """log |dx'/dx| summed over a datum: add to a per-datum log density of x' for nats of x."""
        if self.identity or self.discrete:
            return 0.0
        t0, t1 = self.target
        return self.dim * math.log((t1 - t0) / (self.high - self.low))

    def forward(self, data: Dataset) -> np.ndarray | Rows:
        """``data`` flattened to (N, D) in the model's units; other data sets are checked to
        hold the same integer levels as the fitted one. Streamed rows are mapped (and checked)
        as they are read."""
        x = data.flat()
        if self.identity:
            return x
        meta = data.meta
        if not meta.get("integer") or (meta.get("low"), meta.get("high")) != (self.low, self.high):
            raise ProbdiffError(
                f"{data.name!r} is not integer data on {self.low:g}..{self.high:g} "
                "like the data the model was fitted to"
            )
        if isinstance(x, Rows):
            return x.map(lambda block: self._to_model(block, data.name))
        return self._to_model(x, data.name)

    def _to_model(self, x: np.ndarray, name: str) -> np.ndarray:
        """Integer rows on low..high in the model's units (a one-line error for others)."""
        if x.size and (
            not np.array_equal(x, np.round(x)) or x.min() < self.low or x.max() > self.high
        ):
            raise ProbdiffError(
                f"{name!r} holds values that are not integers in {self.low:g}..{self.high:g}"
            )
        t0, t1 = self.target
        u = (x - self.low) / (self.high - self.low)
        if self.binarize:
            u = (u > 0.5).astype(float)
        return t0 + (t1 - t0) * u

    def inverse(self, x: np.ndarray) -> np.ndarray:
        """Model units back to data units (binarised data come back as low or high)."""
        if self.identity:
            return x
        t0, t1 = self.target
        return self.low + (self.high - self.low) * (x - t0) / (t1 - t0)
