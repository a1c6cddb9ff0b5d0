"""Langevin dynamics as a sampler for any differentiable log density (docs/equations.md (3.1)).

    x_{k+1} = x_k + tau s(x_k) + sqrt(2 tau) z_k,   s = grad_x log p,  z_k ~ N(0, I)

(the tutorial's form; Song and Ermon write alpha / 2 for tau). Rows of x are independent
chains. ``annealed_langevin`` runs it down noise levels sigma_1 > ... > sigma_L with
tau_i = tau (sigma_i / sigma_L)^2 (Song and Ermon 2019, Algorithm 1), optionally followed by
one Tweedie denoising step x + sigma_L^2 s(x, sigma_L) (Song and Ermon 2020); docs/equations.md
(3.8), (3.10). The Pyro
MCMC kernel for a model's log joint is :class:`probdiff.diffusion.langevin_kernel.Langevin`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch

from probdiff.errors import ProbdiffError


def score_of(
    log_prob: Callable[[torch.Tensor], torch.Tensor],
) -> Callable[[torch.Tensor], torch.Tensor]:
    """s(x) = grad_x log p(x) by autograd, for a log density summed per row."""

    def score(x: torch.Tensor) -> torch.Tensor:
        with torch.enable_grad():
            y = x.detach().requires_grad_(True)
            (grad,) = torch.autograd.grad(log_prob(y).sum(), y)
        return grad

    return score


def langevin(
    score: Callable[[torch.Tensor], torch.Tensor],
    x: torch.Tensor,
    step_size: float,
    n_steps: int,
    generator: torch.Generator | None = None,
    record: Sequence[int] = (),
    progress=None,
) -> tuple[torch.Tensor, dict[int, torch.Tensor]]:
    """``n_steps`` Langevin steps from x (rows are chains); returns (x, {k: x_k for k in record})."""
    if step_size <= 0 or n_steps < 0:
        raise ProbdiffError(
            f"Langevin needs step_size > 0 and n_steps >= 0, got {step_size}, {n_steps}"
        )
    kept = {0: x.clone()} if 0 in record else {}
    noise_scale = math.sqrt(2 * step_size)
    for k in range(1, n_steps + 1):
        z = torch.randn(x.shape, generator=generator, dtype=x.dtype, device=x.device)
        x = x + step_size * score(x) + noise_scale * z
        if k in record:
            kept[k] = x.clone()
        if progress is not None:
            progress.update(1)
    return x, kept


def geometric_sigmas(sigma_max: float, sigma_min: float, levels: int) -> torch.Tensor:
    """sigma_1 = sigma_max > ... > sigma_L = sigma_min, geometrically spaced (float64);
    docs/equations.md (3.8)."""
    if not 0 < sigma_min < sigma_max or levels < 2:
        raise ProbdiffError(
            f"noise levels need 0 < sigma_min < sigma_max and >= 2 levels, got "
            f"{sigma_min}, {sigma_max}, {levels}"
        )
    return torch.exp(
        torch.linspace(math.log(sigma_max), math.log(sigma_min), levels, dtype=torch.float64)
    )


def annealed_langevin(
    score: Callable[[torch.Tensor, int], torch.Tensor],
    sigmas: torch.Tensor,
    x: torch.Tensor,
    step_size: float,
    steps_per_level: int,
    generator: torch.Generator | None = None,
    denoise: bool = True,
    record_levels: bool = False,
    progress=None,
) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """Annealed Langevin with ``score(x, i)`` ~ grad log p_{sigma_i}(x) at level i = 0..L-1;
    tau_i = step_size (sigma_i / sigma_L)^2 (docs/equations.md (3.10)). Returns (x, [x after each
    level] if recorded)."""
    if step_size <= 0 or steps_per_level < 1:
        raise ProbdiffError(
            f"annealed Langevin needs step_size > 0 and steps_per_level >= 1, "
            f"got {step_size}, {steps_per_level}"
        )
    sigma_last = float(sigmas[-1])
    levels = []
    for i, sigma in enumerate(sigmas.tolist()):
        tau = step_size * (sigma / sigma_last) ** 2
        x, _ = langevin(
            lambda y, i=i: score(y, i), x, tau, steps_per_level, generator, progress=progress
        )
        if record_levels:
            levels.append(x.clone())
    if denoise:
        x = x + sigma_last**2 * score(x, len(sigmas) - 1)
    return x, levels
