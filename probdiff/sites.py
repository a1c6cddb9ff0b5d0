"""What one joint run of a program's guide and model shows, in plain NumPy: its sites.

A backend traces the guide, then the model against the guide's draws, and describes every
site as a :class:`Site` (value, unscaled log density, plates, the kind of site). From one such
trace of the training data, :class:`Layout` reads the program's shape: which plate holds the
data, which latent sites are global and which local, which are point estimates (a ``Delta``
guide: MAP, AutoDelta), which the model enumerates, which sites observe which data array.
Everything downstream (posterior draws, per-datum log-likelihoods, predictive draws, the
minibatch scaling check) works from these records, never from a framework's types.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
from scipy.special import logsumexp

from probdiff.errors import ProbdiffError

SiteKind = Literal[
    "latent", "auxiliary", "observed", "factor", "deterministic", "subsample", "param"
]


@dataclass(frozen=True)
class Plate:
    """A vectorised plate around a site: ``size`` rows drawn here of ``full_size`` in all."""

    name: str
    dim: int
    size: int
    full_size: int


@dataclass
class Site:
    """One site of a trace, as NumPy. ``log_prob`` is unscaled (no plate or minibatch
    scale), masked, summed over event dims; it carries enumeration dims left of the plates."""

    name: str
    kind: SiteKind
    value: np.ndarray | None
    log_prob: np.ndarray | None = None
    plates: tuple[Plate, ...] = ()
    dist: str = ""
    enumerated: bool = False
    scale: float = 1.0
    event_dim: int = 0
    marked: bool = False  # marked for enumeration (infer={"enumerate": "parallel"})

    def data_axis(self, data_plate: str | None) -> int | None:
        """The axis of ``value`` that runs over the rows of ``data_plate`` (negative), if any."""
        plate = self.plate(data_plate)
        return None if plate is None else plate.dim - self.event_dim

    def plate(self, name: str | None) -> Plate | None:
        return next((p for p in self.plates if p.name == name), None)


@dataclass
class Layout:
    """The shape of a program, read from one joint trace on ``n`` rows of training data."""

    n: int
    data_plate: str | None
    subsample_size: int | None  # the model subsamples its own data plate (plate(subsample_size=))
    latent: list[str]  # the guide's latent sites
    point: list[str]  # latent sites whose guide is a Delta (a point mass if its draws agree)
    local: list[str]  # latent, observed and deterministic sites inside the data plate
    enumerated: list[str]  # model sites summed out by enumeration
    observed: list[str]  # observed sites and factors of the model
    deterministic: list[str]
    model_params: list[str]
    observes: dict[str, str] = field(default_factory=dict)  # observed site -> data array name
    plate_sites: list[str] = field(default_factory=list)  # subsample sites (plate indices)

    @classmethod
    def read(
        cls, guide: list[Site], model: list[Site], data: np.ndarray | Mapping, n: int
    ) -> Layout:
        observed = [s for s in model if s.kind in ("observed", "factor")]
        candidates = {p.name for s in observed for p in s.plates if p.full_size == n}
        data_plate = None
        if candidates:
            data_plate = "data" if "data" in candidates else sorted(candidates)[0]
        latent = [s for s in guide if s.kind == "latent"]
        in_data = {s.name for s in guide + model if s.plate(data_plate) is not None}
        sub = [
            p for s in observed for p in s.plates if p.name == data_plate and p.size < p.full_size
        ]
        return cls(
            n=n,
            data_plate=data_plate,
            subsample_size=sub[0].size if sub else None,
            latent=[s.name for s in latent],
            point=[s.name for s in latent if s.dist == "Delta"],
            local=sorted(in_data),
            enumerated=[s.name for s in model if s.enumerated],
            observed=[s.name for s in observed],
            deterministic=[s.name for s in model if s.kind == "deterministic"],
            model_params=[s.name for s in model if s.kind == "param"],
            observes=_observed_arrays(observed, data),
            plate_sites=sorted({s.name for s in guide + model if s.kind == "subsample"}),
        )

    @property
    def global_latent(self) -> list[str]:
        return [k for k in self.latent if k not in self.local]

    def per_datum_problem(self, model: list[Site]) -> str | None:
        """Why per-datum log densities cannot be formed from this program, or None."""
        if self.data_plate is None:
            return "no plate of the data's size surrounds the observed sites"
        for s in model:
            if s.enumerated and [p.name for p in s.plates] != [self.data_plate]:
                return (
                    f"enumerated site {s.name!r} lies in plates {[p.name for p in s.plates]},"
                    f" not in the data plate {self.data_plate!r} alone"
                )
        return None


def _observed_arrays(observed: list[Site], data) -> dict[str, str]:
    """Which data array each observed site observes (equal values), where one does."""
    arrays = data if isinstance(data, Mapping) else {"x": data}
    out = {}
    for s in observed:
        if s.kind != "observed" or s.value is None:
            continue
        for key, a in arrays.items():
            a = np.asarray(a)
            if a.shape == s.value.shape and np.array_equal(a, s.value):
                out[s.name] = key
                break
    return out


def per_datum(sites: list[Site], data_plate: str, max_plate_nesting: int) -> np.ndarray:
    """sum over ``sites`` of their log densities per row of the data plate, enumeration
    dimensions summed out exactly: log sum_z exp(sum_sites log p) for each datum.

    Each site must lie in the data plate; other plates it lies in are summed first (their
    sites must not be enumerated; :meth:`Layout.per_datum_problem` checks).
    """
    total = None
    dim = None
    for s in sites:
        plate = s.plate(data_plate)
        if plate is None or s.log_prob is None:
            raise ProbdiffError(f"site {s.name!r} is not inside the data plate {data_plate!r}")
        lp = np.asarray(s.log_prob, dtype=np.float64)
        lp = lp.reshape((1,) * max(0, max_plate_nesting - lp.ndim) + lp.shape)
        for p in s.plates:
            if p.name != data_plate and lp.ndim >= -p.dim:
                lp = lp.sum(axis=p.dim, keepdims=True)
        dim = plate.dim
        total = lp if total is None else total + lp
    if total is None:
        raise ProbdiffError("no site to sum per datum")
    assert dim is not None  # set with total
    total = np.moveaxis(total, dim, -1)
    return logsumexp(total.reshape(-1, total.shape[-1]), axis=0)


def is_point(values: np.ndarray) -> bool:
    """Whether every draw along the first axis is identical (a point estimate)."""
    return bool(len(values) > 1 and np.all(values == values[:1]))
