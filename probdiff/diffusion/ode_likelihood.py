"""Exact log-likelihood through the probability-flow ODE (MATH.md section 4).

Along the flow dx/dt = v(x, t) = f(x, t) - g(t)^2 s(x, t) / 2 the density obeys
d log p_t(x_t) / dt = -div v(x_t, t), so integrating [x, delta] from t = eps to 1 with
d delta / dt = div v gives

    log p_eps(x) = log p_1(x_1) + delta(1)      (change of variables, Chen et al. 2018).

The divergence is exact (D autograd passes; low dimension) or Hutchinson's estimate
eps^T (dv/dx) eps with one Rademacher probe per row held fixed over the solve (unbiased for
log p, Grathwohl et al. 2019). Integer data are uniformly dequantised: for a bin of width w
around x, log P(bin) >= E_u[log p(x + u)] + D log w, u ~ U(-w/2, w/2)^D (Jensen).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

import torch

from probdiff.diffusion.divergence import divergence, rademacher
from probdiff.errors import ProbdiffError
from probdiff.diffusion.sde import SDE, ScoreFn
from probdiff.diffusion.solvers import integrate

TRACES = ("exact", "hutchinson")
EXACT_TRACE_MAX_DIM = 16  # exact divergence up to this dimension, Hutchinson above


@dataclass
class ODELikelihood:
    """Per-row log-likelihoods (nats) and the number of network evaluations."""

    log_prob: torch.Tensor  # (N,) float64
    nfe: int


def ode_log_likelihood(sde: SDE, score: ScoreFn, x: torch.Tensor, trace: str = "exact",
                       eps: float = 1e-5, rtol: float = 1e-5, atol: float = 1e-5,
                       generator: torch.Generator | None = None,
                       bin_width: float | None = None, prior_log_prob=None) -> ODELikelihood:
    """log p_eps(x) per row of ``x`` under the model's probability-flow ODE; with
    ``bin_width`` the dequantised lower bound on the log mass of each integer datum's bin.
    ``prior_log_prob`` replaces the SDE's prior density at t = 1 (tests use the exact p_1)."""
    if trace not in TRACES:
        raise ProbdiffError(f"trace must be one of {', '.join(TRACES)}, got {trace!r}")
    n, dim = len(x), x[0].numel()
    offset = 0.0
    if bin_width is not None:
        u = torch.rand(x.shape, generator=generator, dtype=x.dtype, device=x.device) - 0.5
        x = x + bin_width * u
        offset = dim * math.log(bin_width)
    probe = None
    if trace == "hutchinson":
        probe = rademacher(x.shape, generator, x.dtype, x.device)

    def augmented(state: torch.Tensor, t: float) -> torch.Tensor:
        y = state[:, :dim].reshape(x.shape)
        tt = torch.full((n,), t, dtype=x.dtype, device=x.device)
        v, div = divergence(lambda z: sde.reverse_drift(score, z, tt, probability_flow=True),
                            y, probe)
        return torch.cat([v.reshape(n, dim), div[:, None]], dim=1)

    start = torch.cat([x.reshape(n, dim), torch.zeros(n, 1, dtype=x.dtype, device=x.device)], 1)
    end, nfe = integrate(augmented, start, eps, 1.0, rtol, atol)
    x1, delta = end[:, :dim].reshape(x.shape), end[:, dim].double()
    prior = sde.prior_log_prob if prior_log_prob is None else prior_log_prob
    logp = prior(x1).double() + delta + offset
    return ODELikelihood(logp, nfe)


def ode_likelihood_metrics(sde, score, x: np.ndarray, dim: int, bin_width: float | None,
                           log_jacobian: float, seed: int, prefix: str = "test_") -> dict:
    """``{prefix}ode_log_likelihood`` (+ stderr over rows, nats of the data), ``ode_bits_per_dim``
    (+ stderr) and ``ode_nfe`` for the rows of ``x`` (model units) under the flow ODE of
    (sde, score); exact trace up to ``EXACT_TRACE_MAX_DIM``, else Hutchinson."""
    gen = torch.Generator().manual_seed(seed)
    trace = "exact" if dim <= EXACT_TRACE_MAX_DIM else "hutchinson"
    res = ode_log_likelihood(sde, score, torch.as_tensor(x, dtype=torch.float32), trace=trace,
                             generator=gen, bin_width=bin_width)
    ll = res.log_prob.numpy() + (0.0 if bin_width else log_jacobian)
    mean, err = float(ll.mean()), float(ll.std(ddof=1) / math.sqrt(len(ll))) if len(ll) > 1 else 0.0
    bits = dim * math.log(2)
    return {prefix + "ode_log_likelihood": mean, prefix + "ode_log_likelihood_stderr": err,
            "ode_bits_per_dim": -mean / bits, "ode_bits_per_dim_stderr": err / bits,
            "ode_nfe": res.nfe, "ode_trace": trace}


def add_ode_rows_argument(group) -> None:
    """``--ode-rows``: held-out rows for a family's ODE likelihood metric."""
    group.add_argument("--ode-rows", type=int, default=None,
                       help="held-out rows for the ODE log-likelihood (default 500 for vectors, "
                            "100 for images; 0 skips it)")


def ode_rows(options: dict, data) -> int:
    """The ``--ode-rows`` option, or its default for the data's kind."""
    n = options.get("ode_rows")
    if n is None:
        return 500 if data.kind == "vector" else 100
    if n < 0:
        raise ProbdiffError(f"--ode-rows must be >= 0, got {n}")
    return n


def likelihood_table(metrics: dict, bound: bool = False) -> list[str]:
    """Report lines: the ELBO bound (with ``bound``), the flow ODE's log-likelihood and the
    true density where the metrics have them, held-out values first."""
    p = "test_" if "test_ode_log_likelihood" in metrics else ""
    ll = metrics.get(p + "ode_log_likelihood")
    if ll is None:
        return []
    nan = float("nan")
    lines = ["likelihood (nats per datum, held-out rows):"]
    if bound:
        ref = p + "elbo"
        lines.append(f"  ELBO bound            {metrics.get(ref, nan):.4f} +- "
                     f"{metrics.get(ref + '_stderr', 0):.4f}  "
                     f"({metrics.get('bits_per_dim', nan):.4f} bits/dim)")
    lines.append(f"  probability-flow ODE  {ll:.4f} +- "
                 f"{metrics.get(p + 'ode_log_likelihood_stderr', 0):.4f}  "
                 f"({metrics.get('ode_bits_per_dim', nan):.4f} bits/dim, "
                 f"{metrics.get('ode_nfe')} NFE, {metrics.get('ode_trace')} trace)")
    if p + "true_log_likelihood" in metrics:
        lines.append(f"  true density          {metrics[p + 'true_log_likelihood']:.4f}")
    return lines
