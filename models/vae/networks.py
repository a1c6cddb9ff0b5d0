"""The VAE's networks in torch: affine/MLP, and a small convolutional pair for images.

``mlp(sizes)``: affine layers with tanh between them (none after the last); no hidden widths
is the linear (PPCA) case, docs/equations.md (1.16), (1.17). ``ConvEncoderNet``: per width c_i
a 3x3 convolution with stride 2 (padding 1, SiLU), then one affine layer; each layer halves
height and width, so both must be divisible by 2^len(channels) (8x8, 28x28 and 32x32 with two
layers). ``ConvDecoderNet``
mirrors it: an affine layer (SiLU) to the smallest feature map, then per layer a nearest
2x upsampling and a 3x3 convolution (padding 1), SiLU between them, none after the last.

Inputs and outputs are flat vectors (..., D) in the order (C, H, W), as the Pyro model sees
the data; leading dimensions pass through. :mod:`probdiff.models.vae.networks_numpyro` holds
the Flax twins (same layer names: ``conv0``, ``conv1``, ..., ``dense``).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from probdiff.errors import ProbdiffError


def mlp(sizes: list[int], activation=nn.Tanh) -> nn.Sequential:
    """Affine layers of the given sizes with ``activation`` between them (none after the last)."""
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers.append(nn.Linear(a, b))
        if i < len(sizes) - 2:
            layers.append(activation())
    return nn.Sequential(*layers)


def check_conv_shape(event_shape: tuple[int, ...], channels: list[int]) -> tuple[int, int, int]:
    """(C, H, W) of image data whose sides the conv nets can halve len(channels) times."""
    if len(event_shape) != 3:
        raise ProbdiffError(
            f"--net conv needs image data (C, H, W), got data of shape {event_shape}"
        )
    if not channels:
        raise ProbdiffError("--net conv needs at least one width in --channels")
    c, h, w = event_shape
    f = 2 ** len(channels)
    if h % f or w % f:
        raise ProbdiffError(
            f"--net conv with {len(channels)} layers halves the image "
            f"{len(channels)} times: height and width must be divisible by {f}, "
            f"got {h}x{w}"
        )
    return c, h, w


class ConvEncoderNet(nn.Module):
    """(..., C*H*W) -> (..., out_dim): strided 3x3 convolutions, then one affine layer."""

    def __init__(self, event_shape: tuple[int, ...], channels: list[int], out_dim: int):
        super().__init__()
        self.event_shape = check_conv_shape(event_shape, channels)
        self.depth = len(channels)
        c_in = self.event_shape[0]
        for i, c in enumerate(channels):
            setattr(self, f"conv{i}", nn.Conv2d(c_in, c, 3, stride=2, padding=1))
            c_in = c
        _, h, w = self.event_shape
        self.dense = nn.Linear(c_in * (h >> self.depth) * (w >> self.depth), out_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        lead = x.shape[:-1]
        h = x.reshape((-1,) + self.event_shape)
        for i in range(self.depth):
            h = nn.functional.silu(getattr(self, f"conv{i}")(h))
        return self.dense(h.flatten(1)).reshape(lead + (-1,))


class ConvDecoderNet(nn.Module):
    """(..., L) -> (..., C*H*W): an affine layer to the smallest map, then upsample + conv."""

    def __init__(self, latent_dim: int, event_shape: tuple[int, ...], channels: list[int]):
        super().__init__()
        self.event_shape = check_conv_shape(event_shape, channels)
        self.depth = len(channels)
        c, h, w = self.event_shape
        widths = list(reversed(channels))
        self.start = (widths[0], h >> self.depth, w >> self.depth)
        self.dense = nn.Linear(latent_dim, math.prod(self.start))
        for i, (a, b) in enumerate(zip(widths, widths[1:] + [c])):
            setattr(self, f"conv{i}", nn.Conv2d(a, b, 3, padding=1))

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        lead = z.shape[:-1]
        h = nn.functional.silu(self.dense(z)).reshape((-1,) + self.start)
        for i in range(self.depth):
            h = nn.functional.interpolate(h, scale_factor=2, mode="nearest")
            h = getattr(self, f"conv{i}")(h)
            if i < self.depth - 1:
                h = nn.functional.silu(h)
        return h.reshape(lead + (-1,))


def encoder_net(
    kind: str, event_shape: tuple[int, ...], widths: list[int], out_dim: int
) -> nn.Module:
    """The encoder's network: ``mlp`` over the flattened datum, or ``conv`` over the image."""
    if kind == "conv":
        return ConvEncoderNet(event_shape, widths, out_dim)
    return mlp([math.prod(event_shape), *widths, out_dim])


def decoder_net(
    kind: str, latent_dim: int, event_shape: tuple[int, ...], widths: list[int]
) -> nn.Module:
    """The decoder's network, mirroring :func:`encoder_net`."""
    if kind == "conv":
        return ConvDecoderNet(latent_dim, event_shape, widths)
    return mlp([latent_dim, *widths, math.prod(event_shape)])
