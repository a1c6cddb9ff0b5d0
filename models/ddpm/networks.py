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
    freqs = torch.exp(
        torch.linspace(0, math.log(1000.0), half, dtype=torch.float64, device=t.device)
    )
    angle = (t.to(torch.float64)[:, None] / T) * freqs[None, :] * math.pi
    return torch.cat([torch.sin(angle), torch.cos(angle)], dim=1)


class TimeMLP(nn.Module):
    """[x, time_features(t)] -> hidden layers (SiLU) -> ``outputs`` x the data's size (2 for
    a chain that also learns its variances)."""

    def __init__(self, dim: int, hidden: list[int], T: int, embed: int = 32, outputs: int = 1):
        super().__init__()
        self.T, self.embed = T, embed
        sizes = [dim + embed, *hidden, outputs * dim]
        layers: list[nn.Module] = []
        for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
            layers.append(nn.Linear(a, b))
            if i < len(sizes) - 2:
                layers.append(nn.SiLU())
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor, t: int | torch.Tensor) -> torch.Tensor:
        t = torch.as_tensor(t, device=x.device)
        if t.dim() == 0:  # one step for every row: its features once, broadcast
            feats = time_features(t[None], self.T, self.embed).to(x.dtype).expand(x.shape[0], -1)
        else:
            feats = time_features(t, self.T, self.embed).to(x.dtype)
        return self.net(torch.cat([x, feats], dim=-1))


def unet_widths(event_shape: tuple[int, ...], text: str) -> list[int]:
    """``--channels`` for a U-Net on data of ``event_shape``: image data (C, H, W) whose height
    and width the levels' downsampling divides; one-line errors otherwise."""
    from probdiff.errors import ProbdiffError
    from probdiff.family import parse_widths

    if len(event_shape) != 3:
        raise ProbdiffError(f"--net unet needs image data (C, H, W), got shape {event_shape}")
    channels = parse_widths(text, "--channels")
    f = 2 ** (len(channels) - 1)
    if event_shape[1] % f or event_shape[2] % f:
        raise ProbdiffError(
            f"a {len(channels)}-level U-Net needs height and width divisible "
            f"by {f}, got {event_shape[1]}x{event_shape[2]}"
        )
    return channels


class _ResBlock(nn.Module):
    """GroupNorm-free residual block: conv3x3 -> SiLU -> (+ time bias) -> conv3x3, plus skip."""

    def __init__(self, c_in: int, c_out: int, emb: int):
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, padding=1)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1)
        self.time = nn.Linear(emb, c_out)
        self.skip = nn.Conv2d(c_in, c_out, 1) if c_in != c_out else nn.Identity()

    def forward(self, h: torch.Tensor, e: torch.Tensor) -> torch.Tensor:
        out = nn.functional.silu(self.conv1(nn.functional.silu(h)))
        out = out + self.time(e)[:, :, None, None]
        return self.skip(h) + self.conv2(nn.functional.silu(out))


class UNet(nn.Module):
    """A small U-Net for (x_t, t) -> a tensor of x_t's shape, on flat rows (R, C*H*W).

    Widths ``channels`` = (c_1, ..., c_L): a 3x3 input convolution to c_1, then per level a
    residual block with a time bias and (except the last level) a stride-2 downsampling; the
    way up mirrors it with nearest upsampling and the skip connections concatenated. Height
    and width must be divisible by 2^(L-1): two levels for 8x8, three for 28x28 or 32x32.
    """

    def __init__(
        self,
        event_shape: tuple[int, int, int],
        channels: list[int],
        T: int,
        embed: int = 32,
        outputs: int = 1,
    ):
        super().__init__()
        c, h, w = event_shape
        f = 2 ** (len(channels) - 1)
        if h % f or w % f:
            raise ValueError(
                f"a {len(channels)}-level U-Net needs height and width divisible "
                f"by {f}, got {h}x{w}"
            )
        self.event_shape, self.T, self.embed = tuple(event_shape), T, embed
        e = 4 * channels[0]
        self.time = nn.Sequential(nn.Linear(embed, e), nn.SiLU(), nn.Linear(e, e))
        self.inp = nn.Conv2d(c, channels[0], 3, padding=1)
        self.down = nn.ModuleList()
        self.pool = nn.ModuleList()
        for i, ch in enumerate(channels):
            self.down.append(_ResBlock(channels[max(i - 1, 0)], ch, e))
            if i < len(channels) - 1:
                self.pool.append(nn.Conv2d(ch, ch, 3, stride=2, padding=1))
        self.mid = _ResBlock(channels[-1], channels[-1], e)
        self.up = nn.ModuleList()
        for i in reversed(range(len(channels))):
            below = channels[-1] if i == len(channels) - 1 else channels[i + 1]
            self.up.append(_ResBlock(below + channels[i], channels[i], e))
        self.out = nn.Conv2d(channels[0], outputs * c, 3, padding=1)  # channel blocks
        nn.init.zeros_(self.out.weight)  # start by predicting zero
        nn.init.zeros_(self.out.bias)

    def forward(self, x: torch.Tensor, t: int | torch.Tensor) -> torch.Tensor:
        t = torch.as_tensor(t, device=x.device)
        if t.dim() == 0:
            t = t.expand(x.shape[0])
        e = self.time(time_features(t, self.T, self.embed).to(x.dtype))
        h = self.inp(x.reshape((-1,) + self.event_shape))
        skips = []
        for i, block in enumerate(self.down):
            h = block(h, e)
            skips.append(h)
            if i < len(self.pool):
                h = self.pool[i](h)
        h = self.mid(h, e)
        for block in self.up:
            skip = skips.pop()
            if h.shape[-1] != skip.shape[-1]:
                h = nn.functional.interpolate(h, scale_factor=2, mode="nearest")
            h = block(torch.cat([h, skip], dim=1), e)
        return self.out(h).reshape(x.shape[0], -1)
