"""Joint traces of a NumPyro program (guide, then the model against its draws) as plain sites:
the twin of :mod:`probdiff.backends.pyro_traces`."""

from __future__ import annotations

import jax
import numpy as np
from numpyro import handlers
from numpyro.primitives import Messenger

from probdiff.program import Program, num_rows
from probdiff.sites import Plate, Site


def base_name(fn) -> str:
    while hasattr(fn, "base_dist"):
        fn = fn.base_dist
    return type(fn).__name__


class uncondition(Messenger):
    """Observed sample sites are drawn from their distributions instead (factors and
    deterministic sites stay as they are)."""

    def process_message(self, msg) -> None:
        if msg["type"] == "sample" and msg["is_observed"] and base_name(msg["fn"]) != "Unit":
            msg["value"] = None
            msg["is_observed"] = False


def to_sites(trace: dict, log_probs: bool = True) -> list[Site]:
    sizes = {name: site["args"][0] for name, site in trace.items() if site["type"] == "plate"}
    out = []
    for name, site in trace.items():
        kind = {"param": "param", "deterministic": "deterministic", "plate": "subsample"}.get(
            site["type"]
        )
        if site["type"] == "plate" and site["args"][1] is None:
            continue  # a plate that does not subsample: no indices to record
        if kind is None and site["type"] != "sample":
            continue
        fn = site.get("fn")
        if kind is None:
            if base_name(fn) == "Unit":
                kind = "factor"
            elif site.get("infer", {}).get("is_auxiliary"):
                kind = "auxiliary"
            else:
                kind = "observed" if site["is_observed"] else "latent"
        plates = tuple(
            Plate(f.name, f.dim, int(f.size), int(sizes.get(f.name, f.size)))
            for f in site.get("cond_indep_stack", ())
        )
        lp = None
        if log_probs and kind in ("latent", "auxiliary", "observed", "factor"):
            lp = fn.log_prob(site["value"])
            if site.get("mask") is not None:
                lp = jax.numpy.where(site["mask"], lp, 0.0)
        out.append(
            Site(
                name,
                kind,
                site["value"],
                lp,
                plates,
                base_name(fn) if fn is not None else "",
                site.get("infer", {}).get("enumerate") == "parallel"
                and kind == "latent"
                and _is_enumerated(site),
                _scale(site.get("scale")),
                int(getattr(fn, "event_dim", 0) or 0),
                site.get("infer", {}).get("enumerate") == "parallel",
            )
        )
    return out


def _scale(scale) -> float:
    try:
        return float(1.0 if scale is None else scale)
    except (TypeError, jax.errors.ConcretizationTypeError):
        return np.nan  # a per-element or traced scale


class JointTraces:
    """:func:`trace_joint` compiled once per program and input structure: the site records
    (names, kinds, plates) are taken while the function is traced, and each call returns only
    the arrays. A program that cannot be compiled is traced eagerly instead."""

    def __init__(self) -> None:
        self._cache: dict = {}

    def __call__(self, program: Program, params: dict, data, key, **kw):
        fixed = kw.get("fixed") or {}
        shapes = jax.tree.map(lambda a: (np.shape(a), str(a.dtype)), (data, fixed))
        cache_key = (
            id(program),
            kw.get("n_total"),
            kw.get("predictive", False),
            kw.get("log_probs", True),
            str(jax.tree.structure((data, fixed))),
            str(shapes),
        )
        hit = self._cache.get(cache_key)
        if hit is None or hit[0] is not program:
            meta: dict = {}

            def arrays(p, d, k, f):
                out = trace_joint(program, p, d, k, **{**kw, "fixed": f})
                meta["sites"] = out
                return [
                    None if group is None else [(x.value, x.log_prob) for x in group]
                    for group in out
                ]

            hit = self._cache[cache_key] = (program, meta, jax.jit(arrays))
        _, meta, fn = hit
        if fn is not None:
            try:
                values = fn(params, data, key, fixed)  # traces (and fills meta) on first use
                return _rebuild(meta["sites"], values)
            except (
                jax.errors.ConcretizationTypeError,
                jax.errors.TracerBoolConversionError,
                jax.errors.TracerIntegerConversionError,
                jax.errors.TracerArrayConversionError,
            ):
                self._cache[cache_key] = (program, meta, None)  # Python control flow on values
        return trace_joint(program, params, data, key, **kw)


def _rebuild(meta, arrays):
    out = []
    for group, values in zip(meta, arrays):
        if group is None:
            out.append(None)
            continue
        if len(group) != len(values):
            raise ValueError("the program's sites changed between calls")
        out.append(
            [
                Site(
                    s.name,
                    s.kind,
                    v,
                    lp,
                    s.plates,
                    s.dist,
                    s.enumerated,
                    s.scale,
                    s.event_dim,
                    s.marked,
                )
                for s, (v, lp) in zip(group, values)
            ]
        )
    return tuple(out)


def _is_enumerated(site) -> bool:
    """A site enumerated by ``enum``: its value is the support, laid out along a new dim."""
    return (
        site.get("infer", {}).get("dim_to_name") is not None
        or site.get("infer", {}).get("_enumerate_dim") is not None
    )


def trace_joint(
    program: Program,
    params: dict,
    data,
    key,
    *,
    n_total: int | None = None,
    fixed: dict | None = None,
    predictive: bool = False,
    log_probs: bool = True,
) -> tuple[list[Site], list[Site], list[Site] | None]:
    """As :func:`probdiff.backends.pyro_traces.trace_joint`, with an explicit rng ``key``."""
    args, kw = program.inputs(data, n_total or num_rows(data))
    k_guide, k_model, k_pred = jax.random.split(key, 3)
    guide = handlers.substitute(program.guide, data=params)
    if fixed:
        guide = handlers.substitute(guide, data=fixed)
    guide_trace = handlers.trace(handlers.seed(guide, k_guide)).get_trace(*args, **kw)
    drawn = {
        name: site["value"]
        for name, site in guide_trace.items()
        if site["type"] in ("sample", "plate") and not site.get("is_observed", False)
    }
    model = handlers.substitute(handlers.substitute(program.model, data=params), data=drawn)
    base = model
    if program.elbo == "enum":
        from numpyro.contrib.funsor import (
            enum,  # funsor: only where enumeration is asked for
        )

        model = enum(
            handlers.infer_config(
                model, lambda msg: {"enumerate": None} if msg["name"] in drawn else {}
            ),
            first_available_dim=-program.max_plate_nesting - 1,
        )
    model_trace = handlers.trace(handlers.seed(model, k_model)).get_trace(*args, **kw)
    pred = None
    if predictive:
        forward = handlers.seed(uncondition(base), k_pred)
        pred = to_sites(handlers.trace(forward).get_trace(*args, **kw), log_probs=False)
    return to_sites(guide_trace, log_probs), to_sites(model_trace, log_probs), pred


def trace_forward(program: Program, params: dict, data, key, fixed: dict) -> list[Site]:
    """As :func:`probdiff.backends.pyro_traces.trace_forward`, with an explicit rng ``key``."""
    args, kw = program.inputs(data, num_rows(data))
    model = handlers.substitute(handlers.substitute(program.model, data=params), data=fixed)
    forward = handlers.seed(uncondition(model), key)
    return to_sites(handlers.trace(forward).get_trace(*args, **kw), log_probs=False)
