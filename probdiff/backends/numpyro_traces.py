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
            site["type"])
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
        plates = tuple(Plate(f.name, f.dim, int(f.size), int(sizes.get(f.name, f.size)))
                       for f in site.get("cond_indep_stack", ()))
        lp = None
        if log_probs and kind in ("latent", "auxiliary", "observed", "factor"):
            lp = fn.log_prob(site["value"])
            if site.get("mask") is not None:
                lp = jax.numpy.where(site["mask"], lp, 0.0)
            lp = np.asarray(lp)
        out.append(Site(name, kind, np.asarray(site["value"]), lp, plates,
                        base_name(fn) if fn is not None else "",
                        site.get("infer", {}).get("enumerate") == "parallel"
                        and kind == "latent" and _is_enumerated(site),
                        float(site.get("scale") or 1.0) if np.ndim(site.get("scale") or 1.0) == 0
                        else np.nan, int(getattr(fn, "event_dim", 0) or 0),
                        site.get("infer", {}).get("enumerate") == "parallel"))
    return out


def _is_enumerated(site) -> bool:
    """A site enumerated by ``enum``: its value is the support, laid out along a new dim."""
    return site.get("infer", {}).get("dim_to_name") is not None or \
        site.get("infer", {}).get("_enumerate_dim") is not None


def trace_joint(program: Program, params: dict, data, key, *, n_total: int | None = None,
                fixed: dict | None = None, predictive: bool = False,
                log_probs: bool = True) -> tuple[list[Site], list[Site], list[Site] | None]:
    """As :func:`probdiff.backends.pyro_traces.trace_joint`, with an explicit rng ``key``."""
    args, kw = program.inputs(data, n_total or num_rows(data))
    k_guide, k_model, k_pred = jax.random.split(key, 3)
    guide = handlers.substitute(program.guide, data=params)
    if fixed:
        guide = handlers.substitute(guide, data=fixed)
    guide_trace = handlers.trace(handlers.seed(guide, k_guide)).get_trace(*args, **kw)
    drawn = {name: site["value"] for name, site in guide_trace.items()
             if site["type"] in ("sample", "plate") and not site.get("is_observed", False)}
    model = handlers.substitute(handlers.substitute(program.model, data=params), data=drawn)
    base = model
    if program.elbo == "enum":
        from numpyro.contrib.funsor import enum  # funsor: only where enumeration is asked for
        model = enum(handlers.infer_config(
            model, lambda msg: {"enumerate": None} if msg["name"] in drawn else {}),
            first_available_dim=-program.max_plate_nesting - 1)
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
