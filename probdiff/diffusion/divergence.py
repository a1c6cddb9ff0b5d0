"""The divergence div v(x) = tr(dv/dx) of a vector field on rows, exact or by Hutchinson.

Exact: D reverse-mode passes, one per coordinate (low dimension). Hutchinson (1989):
E[e^T (dv/dx) e] = tr(dv/dx) for probes e with E[e e^T] = I (Rademacher here), one
vector-Jacobian product per probe (docs/equations.md (3.6)). Used by implicit score matching
(docs/equations.md (3.5)) and by the probability-flow likelihood (docs/equations.md (4.14)).
"""

from __future__ import annotations

from collections.abc import Callable

import torch


def rademacher(
    shape, generator: torch.Generator | None = None, dtype=torch.float32, device="cpu"
) -> torch.Tensor:
    """Entries +1 / -1 with probability 1/2 each."""
    return torch.randint(0, 2, shape, generator=generator, device=device).to(dtype) * 2 - 1


def divergence(
    v: Callable[[torch.Tensor], torch.Tensor],
    x: torch.Tensor,
    probe: torch.Tensor | None = None,
    create_graph: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(v(x), div v(x) per row): exact when ``probe`` is None, else probe^T (dv/dx) probe.
    With ``create_graph`` both stay differentiable (for training on the divergence)."""
    with torch.enable_grad():
        y = x if (create_graph and x.requires_grad) else x.detach().requires_grad_(True)
        out = v(y)
        n = len(x)
        if probe is not None:
            (g,) = torch.autograd.grad((out * probe).sum(), y, create_graph=create_graph)
            div = (g * probe).reshape(n, -1).sum(1)
        else:
            flat = out.reshape(n, -1)
            d = flat.shape[1]
            parts = []
            for i in range(d):
                (g,) = torch.autograd.grad(
                    flat[:, i].sum(),
                    y,
                    create_graph=create_graph,
                    retain_graph=create_graph or i < d - 1,
                )
                parts.append(g.reshape(n, -1)[:, i])
            div = torch.stack(parts, 1).sum(1)
    if create_graph:
        return out, div
    return out.detach(), div.detach()
