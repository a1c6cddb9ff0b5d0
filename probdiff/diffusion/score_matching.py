"""Score-matching losses (docs/equations.md (3.4), (3.5), (3.7), (3.9)), per row so callers can
average and take errors.

With s = s_theta and data x ~ p:

* explicit   0.5 ||s(x) - grad log p(x)||^2                  (needs the true score)
* implicit   tr(grad_x s(x)) + 0.5 ||s(x)||^2                  (Hyvarinen 2005; = explicit - const)
* denoising  0.5 ||s(x + sigma z) + z / sigma||^2, z ~ N(0, I)  (Vincent 2011; = explicit on the
             blurred density q_sigma, plus a constant >= 0)
* NCSN       0.5 lambda(sigma_i) ||s(x + sigma_i z, i) + z / sigma_i||^2 with lambda = sigma^2,
             i uniform over the levels (Song and Ermon 2019): 0.5 ||sigma_i s + z||^2.

The trace is exact (D passes) or Hutchinson's estimate (one Rademacher probe) for images
(docs/equations.md (3.6)).
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from probdiff.diffusion.divergence import divergence, rademacher
from probdiff.errors import ProbdiffError

Score = Callable[[torch.Tensor], torch.Tensor]


def _sq(v: torch.Tensor) -> torch.Tensor:
    return v.reshape(len(v), -1).pow(2).sum(1)


def noise_conditional_term(
    score_value: torch.Tensor, noise: torch.Tensor, std: torch.Tensor
) -> torch.Tensor:
    """0.5 ||std s + z||^2 = 0.5 std^2 ||s(x + std z) + z / std||^2: the denoising loss at
    one noise level weighted by lambda = std^2, per row (``std`` broadcast against rows);
    docs/equations.md (3.9), (4.8)."""
    return 0.5 * _sq(std * score_value + noise)


def explicit_loss(score: Score, true_score: Score, x: torch.Tensor) -> torch.Tensor:
    return 0.5 * _sq(score(x) - true_score(x))


def implicit_loss(
    score: Score, x: torch.Tensor, trace: str = "exact", generator: torch.Generator | None = None
) -> torch.Tensor:
    if trace not in ("exact", "hutchinson"):
        raise ProbdiffError(f"trace must be exact or hutchinson, got {trace!r}")
    probe = rademacher(x.shape, generator, x.dtype, x.device) if trace == "hutchinson" else None
    s, div = divergence(score, x, probe, create_graph=True)
    return div + 0.5 * _sq(s)


def denoising_loss(
    score: Score,
    x: torch.Tensor,
    sigma: float,
    generator: torch.Generator | None = None,
    noise: torch.Tensor | None = None,
) -> torch.Tensor:
    z = (
        torch.randn(x.shape, generator=generator, dtype=x.dtype, device=x.device)
        if noise is None
        else noise
    )
    return 0.5 * _sq(score(x + sigma * z) + z / sigma)


def ncsn_loss(
    score: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    x: torch.Tensor,
    sigmas: torch.Tensor,
    generator: torch.Generator | None = None,
    levels: torch.Tensor | None = None,
    noise: torch.Tensor | None = None,
) -> torch.Tensor:
    """``score(x_noisy, i)`` for level indices i (N,); ``sigmas`` (L,) decreasing."""
    n = len(x)
    if levels is None:
        levels = torch.randint(0, len(sigmas), (n,), generator=generator, device=x.device)
    z = (
        torch.randn(x.shape, generator=generator, dtype=x.dtype, device=x.device)
        if noise is None
        else noise
    )
    sig = sigmas.to(x.dtype).to(x.device)[levels].reshape((n,) + (1,) * (x.dim() - 1))
    return noise_conditional_term(score(x + sig * z, levels), z, sig)
