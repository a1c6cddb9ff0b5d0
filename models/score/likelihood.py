"""The probability-flow ODE likelihood as a family's metric, option and report lines, shared by
the score SDE (chapter 4) and the DDPM read as an SDE (chapter 2); the mathematics is
:mod:`probdiff.diffusion.ode_likelihood`."""

from __future__ import annotations

import math

import numpy as np

from probdiff.errors import ProbdiffError


def ode_likelihood_metrics(
    sde,
    score,
    x: np.ndarray,
    dim: int,
    bin_width: float | None,
    log_jacobian: float,
    seed: int,
    prefix: str = "test_",
) -> dict:
    """``{prefix}ode_log_likelihood`` (+ stderr over rows, nats of the data), ``ode_bits_per_dim``
    (+ stderr) and ``ode_nfe`` for the rows of ``x`` (model units) under the flow ODE of
    (sde, score); exact trace up to ``EXACT_TRACE_MAX_DIM``, else Hutchinson.
    docs/equations.md (2.19), (4.14), (4.15)."""
    import torch

    from probdiff.diffusion.ode_likelihood import EXACT_TRACE_MAX_DIM, ode_log_likelihood

    gen = torch.Generator().manual_seed(seed)
    trace = "exact" if dim <= EXACT_TRACE_MAX_DIM else "hutchinson"
    res = ode_log_likelihood(
        sde,
        score,
        torch.as_tensor(x, dtype=torch.float32),
        trace=trace,
        generator=gen,
        bin_width=bin_width,
    )
    ll = res.log_prob.numpy() + (0.0 if bin_width else log_jacobian)
    mean, err = float(ll.mean()), float(ll.std(ddof=1) / math.sqrt(len(ll))) if len(ll) > 1 else 0.0
    bits = dim * math.log(2)
    return {
        prefix + "ode_log_likelihood": mean,
        prefix + "ode_log_likelihood_stderr": err,
        "ode_bits_per_dim": -mean / bits,
        "ode_bits_per_dim_stderr": err / bits,
        "ode_nfe": res.nfe,
        "ode_trace": trace,
    }


def add_ode_rows_argument(group) -> None:
    """``--ode-rows``: held-out rows for a family's ODE likelihood metric."""
    group.add_argument(
        "--ode-rows",
        type=int,
        default=None,
        help="held-out rows for the ODE log-likelihood (default 500 for vectors, "
        "100 for images; 0 skips it)",
    )


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
        lines.append(
            f"  ELBO bound            {metrics.get(ref, nan):.4f} +- "
            f"{metrics.get(ref + '_stderr', 0):.4f}  "
            f"({metrics.get('bits_per_dim', nan):.4f} bits/dim)"
        )
    lines.append(
        f"  probability-flow ODE  {ll:.4f} +- "
        f"{metrics.get(p + 'ode_log_likelihood_stderr', 0):.4f}  "
        f"({metrics.get('ode_bits_per_dim', nan):.4f} bits/dim, "
        f"{metrics.get('ode_nfe')} NFE, {metrics.get('ode_trace')} trace)"
    )
    if p + "true_log_likelihood" in metrics:
        lines.append(f"  true density          {metrics[p + 'true_log_likelihood']:.4f}")
    return lines
