"""InDI, inversion by direct iteration (Delbracio and Milanfar 2023; tutorial 2.9;
docs/equations.md (2.20), (2.21)).

A clean image x and its degraded version y (noise, blur) span the path
x_t = (1 - t) x + t y, t in [0, 1]. A network F_theta(x_t, t) trained to predict x from x_t
(loss E_{x, t} ||F_theta(x_t, t) - x||^2, t ~ U(0, 1]) restores y by small steps from t = 1:

    x_{t - delta} = (delta / t) F_theta(x_t, t) + (1 - delta / t) x_t.

With the exact F (= x) every step lands on the path: x_{t - delta} = (1 - t + delta) x +
(t - delta) y, so the last step (delta = t) returns x.

Degradations: ``noise`` y = x + sigma n; ``blur`` y = a 3x3 box blur of x (reflected edges),
plus a little noise so the inverse is not a deterministic map.
"""

from __future__ import annotations

import torch
from torch import nn

DEGRADATIONS = ("noise", "blur")


def degrade(
    x: torch.Tensor,
    event_shape: tuple[int, int, int],
    kind: str,
    sigma: float,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """y from clean rows x (N, C*H*W) in [-1, 1]."""
    noise = torch.randn(x.shape, generator=generator, dtype=x.dtype)
    if kind == "noise":
        return x + sigma * noise
    if kind == "blur":
        img = x.reshape((-1,) + tuple(event_shape))
        padded = nn.functional.pad(img, (1, 1, 1, 1), mode="reflect")
        kernel = torch.full((img.shape[1], 1, 3, 3), 1.0 / 9, dtype=x.dtype)
        blurred = nn.functional.conv2d(padded, kernel, groups=img.shape[1])
        return blurred.reshape(x.shape) + 0.1 * sigma * noise
    raise ValueError(f"unknown degradation {kind!r}: {', '.join(DEGRADATIONS)}")


def indi_loss(
    net: nn.Module, x: torch.Tensor, y: torch.Tensor, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Mean over the batch of ||F(x_t, t) - x||^2, t ~ U(0, 1], x_t = (1 - t) x + t y."""
    t = 1.0 - torch.rand(x.shape[0], generator=generator, dtype=x.dtype)  # (0, 1]
    xt = (1 - t)[:, None] * x + t[:, None] * y
    return ((net(xt, t) - x) ** 2).sum(-1).mean()


def restore(net, y: torch.Tensor, steps: int = 20, record: bool = False):
    """Run x_{t - delta} = (delta/t) F(x_t, t) + (1 - delta/t) x_t from t = 1 to 0 in ``steps``
    equal steps; returns x_0 (and the states, if ``record``)."""
    x, states = y, [y]
    delta = 1.0 / steps
    with torch.no_grad():
        for i in range(steps, 0, -1):
            t = i * delta
            f = net(x, torch.full((x.shape[0],), t, dtype=x.dtype))
            x = (delta / t) * f + (1 - delta / t) * x
            if record:
                states.append(x)
    return (x, states) if record else x


class ContinuousTime(nn.Module):
    """Wrap a network taking integer steps 1..T so it takes t in (0, 1] (t -> round(t T))."""

    def __init__(self, net: nn.Module, T: int):
        super().__init__()
        self.net, self.T = net, T

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        steps = torch.clamp(torch.round(t * self.T), 1, self.T).long()
        return self.net(x, steps)


def psnr(x: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
    """Peak signal-to-noise ratio per image, in dB, for images in [-1, 1] (peak-to-peak 2)."""
    mse = ((x.clamp(-1, 1) - ref) ** 2).mean(-1)
    return 10 * torch.log10(4.0 / mse)
