"""Networks of the diffusion chain in torch: an MLP with a sinusoidal time embedding.

``TimeMLP(dim, hidden)`` maps (x_t, t) to a vector of the data's size (the predicted noise,
x_0 or score, by the model's parameterisation). The step t in 1..T enters through
features [sin(pi w_k t / T), cos(pi w_k t / T)] with K frequencies w_k spaced geometrically
from 1 to 1000, concatenated to x. t may be one int for all rows or one per row.
"""

from __future__ import annotations

import math

import torch
from torch import nn


def time_features(t: torch.Tensor, T: int, size: int) -> torch.Tensor:
    """(N,) steps -> (N, size) sinusoidal features of t / T (Vaswani et al.'s embedding with
    frequencies from 1 to 1000 over the unit interval)."""
    half = size // 2
    freqs = torch.exp(torch.linspace(0, math.log(1000.0), half, dtype=torch.float64))
    angle = (t.to(torch.float64)[:, None] / T) * freqs[None, :] * math.pi
    return torch.cat([torch.sin(angle), torch.cos(angle)], dim=1)


class TimeMLP(nn.Module):
    """[x, time_features(t)] -> hidden layers (SiLU) -> output of the data's size."""

    def __init__(self, dim: int, hidden: list[int], T: int, embed: int = 32):
        super().__init__()
        self.T, self.embed = T, embed
        sizes = [dim + embed, *hidden, dim]
        layers: list[nn.Module] = []
        for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
            layers.append(nn.Linear(a, b))
            if i < len(sizes) - 2:
                layers.append(nn.SiLU())
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor, t: int | torch.Tensor) -> torch.Tensor:
        t = torch.as_tensor(t, device=x.device)
        if t.dim() == 0:
            t = t.expand(x.shape[0])
        feats = time_features(t, self.T, self.embed).to(x.dtype)
        return self.net(torch.cat([x, feats], dim=-1))
