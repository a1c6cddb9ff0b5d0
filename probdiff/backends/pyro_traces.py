"""Joint traces of a Pyro program (guide, then the model against its draws) as plain sites.

The one primitive behind posterior draws, per-datum log densities, predictive draws and the
checks on a user's program (:mod:`probdiff.sites`). Sites the model enumerates are
enumerated here too, so their log densities carry the enumeration dimensions that
:func:`probdiff.sites.per_datum` sums out.
"""

from __future__ import annotations

import numpy as np
import pyro
import torch
from pyro import poutine
from pyro.poutine.util import site_is_subsample

from probdiff.program import Program, num_rows
from probdiff.sites import Plate, Site


def base_name(fn) -> str:
    """The distribution under Independent / Expanded / Masked wrappers: ``Delta``, ``Normal``..."""
    while hasattr(fn, "base_dist"):
        fn = fn.base_dist
    return type(fn).__name__


def fixed_trace(values: dict[str, torch.Tensor]) -> poutine.Trace:
    """A trace of unobserved sample sites with these values, for ``poutine.replay``."""
    tr = poutine.Trace()
    for name, value in values.items():
        tr.add_node(name, type="sample", name=name, value=value, is_observed=False, infer={})
    return tr


def to_sites(trace: poutine.Trace, log_probs: bool = True) -> list[Site]:
    if log_probs:
        trace.compute_log_prob(lambda name, site: not site_is_subsample(site))
    out = []
    for name, site in trace.nodes.items():
        if site["type"] == "param":
            out.append(Site(name, "param", _np(site["value"])))
            continue
        if site["type"] != "sample":
            continue
        fn = site["fn"]
        if site_is_subsample(site):
            kind = "subsample"
        elif site["infer"].get("_deterministic"):
            kind = "deterministic"
        elif site["infer"].get("is_auxiliary"):
            kind = "auxiliary"
        elif base_name(fn) == "Unit":
            kind = "factor"
        else:
            kind = "observed" if site["is_observed"] else "latent"
        plates = tuple(
            Plate(f.name, f.dim, int(f.size), int(f.full_size or f.size))
            for f in site["cond_indep_stack"]
            if f.vectorized
        )
        lp = None
        if log_probs and kind != "subsample":
            lp = site["unscaled_log_prob"]
            if site["mask"] is not None and not isinstance(site["mask"], bool):
                lp = torch.where(site["mask"], lp, lp.new_zeros(()))
            lp = _np(lp)
        scale = site["scale"]
        out.append(
            Site(
                name,
                kind,
                _np(site["value"]),
                lp,
                plates,
                base_name(fn),
                site["infer"].get("_enumerate_dim") is not None,
                float(scale) if not torch.is_tensor(scale) or scale.numel() == 1 else np.nan,
                int(getattr(fn, "event_dim", 0)),
                site["infer"].get("enumerate") == "parallel",
            )
        )
    return out


def _np(value) -> np.ndarray:
    if torch.is_tensor(value):
        return value.detach().cpu().numpy()
    return np.asarray(value)


def trace_joint(
    program: Program,
    data,
    *,
    n_total: int | None = None,
    fixed: dict[str, torch.Tensor] | None = None,
    predictive: bool = False,
    log_probs: bool = True,
) -> tuple[list[Site], list[Site], list[Site] | None]:
    """(guide sites, model sites, predictive model sites or None) of one joint draw.

    The guide draws every latent site (enumeration marks on the guide are ignored: these are
    draws), except those in ``fixed`` (values held fixed: global draws shared by chunks of
    rows, a plate's subsample indices). The model replays the guide and enumerates what it
    marks for enumeration when the program's ELBO does. With ``predictive`` the model runs a
    second time with its observed sites drawn (no enumeration: discrete sites are sampled).
    """
    args, kw = program.inputs(data, n_total or num_rows(data))
    guide = poutine.infer_config(program.guide, lambda site: {"enumerate": None})
    if fixed:
        guide = poutine.replay(guide, trace=fixed_trace(fixed))
    with torch.no_grad():
        guide_trace = poutine.trace(guide).get_trace(*args, **kw)
        model = poutine.replay(program.model, trace=guide_trace)
        if program.elbo == "enum":
            model = poutine.enum(model, first_available_dim=-program.max_plate_nesting - 1)
        model_trace = poutine.trace(model).get_trace(*args, **kw)
        pred = None
        if predictive:
            forward = poutine.uncondition(poutine.replay(program.model, trace=guide_trace))
            pred = to_sites(poutine.trace(forward).get_trace(*args, **kw), log_probs=False)
    return to_sites(guide_trace, log_probs), to_sites(model_trace, log_probs), pred


def trace_forward(program: Program, data, fixed: dict[str, torch.Tensor]) -> list[Site]:
    """The model run forwards on ``data`` with the sites in ``fixed`` held at their values
    (global latent draws): other latent sites drawn from the model, observed sites drawn."""
    args, kw = program.inputs(data, num_rows(data))
    model = poutine.uncondition(poutine.replay(program.model, trace=fixed_trace(fixed)))
    with torch.no_grad():
        return to_sites(poutine.trace(model).get_trace(*args, **kw), log_probs=False)


def as_values(values: dict[str, np.ndarray], dtype, device) -> dict[str, torch.Tensor]:
    """Fixed values for :func:`trace_joint` as tensors (integers stay integer)."""
    out = {}
    for k, v in values.items():
        v = np.asarray(v)
        out[k] = torch.as_tensor(
            v, device=device, dtype=torch.int64 if v.dtype.kind in "iu" else dtype
        )
    return out


def seeded(seed: int):
    """Context: draws from ``seed``, leaving the global random state as it was."""

    class _Seeded:
        def __enter__(self):
            self.state = pyro.util.get_rng_state()
            pyro.set_rng_seed(seed)

        def __exit__(self, *exc):
            pyro.util.set_rng_state(self.state)

    return _Seeded()


def vectorizes(program: Program, data, num: int = 3) -> bool:
    """Whether ``num`` particles drawn at once (an extra plate left of the program's plates,
    as Pyro's ``vectorize_particles`` does) give each particle the same log p - log q as that
    particle's values replayed one at a time. User code that indexes or multiplies with fixed
    shapes (``locs[assignment]``, ``x @ w``) fails this and is evaluated particle by particle."""
    args, kw = program.inputs(data, num_rows(data))
    dim = -program.max_plate_nesting - 1

    def vectorised(fn):
        def run(*a, **k):
            with pyro.plate("_particles", num, dim=dim):
                return fn(*a, **k)

        return run

    def log_ratio(guide_trace, model_trace, per_particle: bool):
        """log p - log q summed over everything but (with ``per_particle``) the particles."""
        total = 0.0
        for trace, sign in ((model_trace, 1.0), (guide_trace, -1.0)):
            trace.compute_log_prob()
            for site in trace.nodes.values():
                if site["type"] == "sample" and not site_is_subsample(site):
                    lp = site["log_prob"]
                    if per_particle and lp.dim() >= -dim:
                        lp = lp.movedim(dim, 0).reshape(num, -1).sum(-1)
                    else:
                        lp = lp.sum()
                    total = total + sign * lp
        return total

    try:
        with torch.no_grad():
            plain = poutine.trace(program.guide).get_trace(*args, **kw)
            guide = poutine.trace(vectorised(program.guide)).get_trace(*args, **kw)
            model = poutine.trace(poutine.replay(vectorised(program.model), trace=guide)).get_trace(
                *args, **kw
            )
            together = log_ratio(guide, model, True)
            if not (torch.is_tensor(together) and together.shape == (num,)):
                return False
            for i in range(num):
                values = {}
                for name, site in guide.nodes.items():
                    if site["type"] == "sample" and not site_is_subsample(site):
                        shape = plain.nodes[name]["value"].shape
                        v = site["value"]
                        axis = v.dim() - site["fn"].event_dim + dim
                        values[name] = (v.select(axis, i) if axis >= 0 else v).reshape(shape)
                g = poutine.trace(
                    poutine.replay(program.guide, trace=fixed_trace(values))
                ).get_trace(*args, **kw)
                m = poutine.trace(poutine.replay(program.model, trace=g)).get_trace(*args, **kw)
                alone = torch.as_tensor(log_ratio(g, m, False))
                if not torch.allclose(alone, together[i], rtol=1e-4, atol=1e-3):
                    return False
    except Exception:  # the program cannot run vectorised
        return False
    return True
