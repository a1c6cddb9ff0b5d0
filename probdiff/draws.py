"""Posterior draws, per-datum log densities and predictive draws of any program.

Built on one backend primitive, ``backend.trace_joint`` (a draw of the guide, the model run
against it, optionally the model run forwards with its observed sites drawn), so it serves a
user's program on either backend exactly as it trained: one draw at a time, no extra batch
dimension. Rows are visited in chunks with the global latent draw held fixed across chunks,
which bounds memory on large data and lets a model that subsamples its own data plate be
evaluated on every row (its plate is given the indices of each chunk).

Definitions (per datum n, draw s of the guide; docs/equations.md (1.4), (1.5)):
- ``log_likelihood[o][s, n] = log p(o_n | z_s)`` for each observed site o: the site's log
  density given the draw, sites the model enumerates summed out exactly;
- ``local_log_weights[s, n] = log p(x_n, z_sn | g_s) - log q(z_sn | x_n, g_s)`` over the
  sites in the data plate (z local, g global): its log-mean-exp over s estimates
  int p(x_n | g) q(g) dg, the predictive density of a held-out row under the guide's globals
  (the posterior predictive p(x_n | data) where q(g) is the exact posterior), with no KL of
  the globals.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy.special import logsumexp

from probdiff.errors import ProbdiffError
from probdiff.program import Data, Program, init_rows, num_rows, take_rows
from probdiff.seeds import derive
from probdiff.sites import Layout, Site, is_point, per_datum

CHUNK_ROWS = 4096


def read_layout(backend, program: Program, data: Data, seed: int) -> Layout:
    """The program's :class:`Layout` from one joint trace on ``data`` (current parameters;
    rows on disk: on a spread of them)."""
    data = init_rows(data)
    guide, model, _ = backend.trace_joint(program, data, seed=seed)
    return Layout.read(guide, model, data, num_rows(data))


def row_chunks(n: int, layout: Layout, rows: int = CHUNK_ROWS) -> list[np.ndarray]:
    """Row indices visited together. A model that subsamples its data plate needs exactly
    its subsample size per visit: the last chunk is padded from the start (callers keep the
    first ``len(chunk)`` rows of the last visit, see :func:`_visit`)."""
    size = layout.subsample_size or rows
    return [np.arange(i, min(i + size, n)) for i in range(0, n, size)]


def _visit(data: Data, idx: np.ndarray, layout: Layout, n: int) -> tuple[Data, dict, int]:
    """(data, fixed values, n_total) that make one joint trace cover the rows ``idx``."""
    if layout.subsample_size:
        size = layout.subsample_size
        padded = np.concatenate([idx, np.arange(size - len(idx)) % n]).astype(np.int64)
        return data, {layout.data_plate: padded}, n
    return take_rows(data, idx), {}, len(idx)


def _take(value: np.ndarray, axis: int | None, keep: int) -> np.ndarray:
    """The first ``keep`` rows along ``axis`` (a padded last visit)."""
    if axis is None:
        return value
    return np.take(value, np.arange(keep), axis=axis)


@dataclass
class ProgramDraws:
    """What :func:`draw_program` returns; every array has draws first."""

    posterior: dict[str, np.ndarray] = field(default_factory=dict)
    point: dict[str, np.ndarray] = field(default_factory=dict)
    log_likelihood: dict[str, np.ndarray] = field(default_factory=dict)
    local_log_weights: np.ndarray | None = None
    predictive: dict[str, np.ndarray] = field(default_factory=dict)
    data_axes: dict[str, int | None] = field(default_factory=dict)  # "group:site" -> row axis
    notes: list[str] = field(default_factory=list)


def draw_program(
    backend,
    program: Program,
    data: Data,
    layout: Layout,
    num_samples: int,
    seed: int,
    *,
    predictive: bool = False,
    per_datum_values: bool = True,
    local_values: bool = True,
) -> ProgramDraws:
    """``num_samples`` joint draws of ``program`` on every row of ``data`` (parameters as set
    in ``backend``): posterior draws of the latent and deterministic sites (point masses
    apart), per-datum log-likelihoods and local log weights, and with ``predictive`` draws of
    the observed sites."""
    n = num_rows(data)
    out = ProgramDraws()
    chunks = row_chunks(n, layout)
    problem = layout.per_datum_problem([])
    if per_datum_values and problem:
        out.notes.append(f"no per-datum log-likelihood: {problem}")
        per_datum_values = False
    mpn = program.max_plate_nesting
    series: dict[str, list] = {}
    for s in range(num_samples):
        fixed_globals: dict[str, np.ndarray] = {}
        parts: dict[str, list] = {}
        for c, idx in enumerate(chunks):
            chunk, fixed, n_total = _visit(data, idx, layout, n)
            guide, model, pred = backend.trace_joint(
                program,
                chunk,
                seed=derive(seed, 100_003 * s + c),
                n_total=n_total,
                fixed={**fixed_globals, **fixed},
                predictive=predictive,
            )
            if c == 0:
                fixed_globals = {
                    g.name: g.value
                    for g in guide
                    if g.kind in ("latent", "auxiliary") and g.plate(layout.data_plate) is None
                }
                if s == 0:
                    bad = layout.per_datum_problem(model)
                    if per_datum_values and bad:
                        out.notes.append(f"no per-datum log-likelihood: {bad}")
                        per_datum_values = False
            _collect(
                parts,
                guide,
                model,
                pred,
                layout,
                len(idx),
                mpn,
                per_datum_values,
                local_values,
                out.data_axes,
            )
        for key, pieces in parts.items():
            axis = out.data_axes.get(key)
            value = pieces[0] if axis is None or len(pieces) == 1 else np.concatenate(pieces, axis)
            series.setdefault(key, []).append(value)
    for key, values in series.items():
        group, name = key.split(":", 1)
        stacked = np.stack(values)
        if group == "post":
            if name in layout.point and is_point(stacked):
                out.point[name] = stacked[0]
            else:
                out.posterior[name] = stacked
        elif group == "ll":
            out.log_likelihood[name] = stacked
        elif group == "pred":
            out.predictive[name] = stacked
        elif group == "lw":
            out.local_log_weights = stacked
    return out


def _collect(
    parts,
    guide: list[Site],
    model: list[Site],
    pred: list[Site] | None,
    layout: Layout,
    keep: int,
    mpn: int,
    per_datum_values: bool,
    local_values: bool,
    axes: dict,
) -> None:
    plate = layout.data_plate

    def add(key: str, value: np.ndarray, axis: int | None) -> None:
        """One chunk's piece: rows along ``axis``; a global value (axis None) once."""
        if axis is None and key in parts:
            return
        axes[key] = axis
        parts.setdefault(key, []).append(_take(value, axis, keep))

    for g in guide:
        if g.kind == "latent" and (local_values or g.plate(plate) is None):
            add("post:" + g.name, g.value, g.data_axis(plate))
    for m in model:
        if m.kind == "deterministic" and (local_values or m.plate(plate) is None):
            add("post:" + m.name, m.value, m.data_axis(plate))
    for p in pred or ():
        if p.name in layout.observed and p.kind in ("latent", "observed"):
            add("pred:" + p.name, p.value, p.data_axis(plate))
    if not per_datum_values:
        return
    enumerated = [m for m in model if m.enumerated]
    for m in model:
        if m.name in layout.observed and m.plate(plate) is not None:
            add("ll:" + m.name, per_datum([m] + enumerated, plate, mpn), -1)
    local_model = [
        m
        for m in model
        if m.plate(plate) is not None and m.kind in ("latent", "observed", "factor")
    ]
    local_guide = [
        g for g in guide if g.plate(plate) is not None and g.kind in ("latent", "auxiliary")
    ]
    lw = per_datum(local_model, plate, mpn)
    if local_guide:
        lw = lw - per_datum(local_guide, plate, mpn)
    add("lw:", lw, -1)


def log_predictive(local_log_weights: np.ndarray) -> np.ndarray:
    """Per-datum log (1/S) sum_s exp(w_sn): the posterior-predictive log density of each row
    (see the module docstring), from an (S, N) array of local log weights; docs/equations.md
    (1.5)."""
    w = np.asarray(local_log_weights, dtype=np.float64)
    if w.ndim != 2 or len(w) == 0:
        raise ProbdiffError(f"expected local log weights of shape (S, N), got {w.shape}")
    return logsumexp(w, axis=0) - np.log(len(w))
