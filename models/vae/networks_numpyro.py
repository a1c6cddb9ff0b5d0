"""Flax twins of :mod:`probdiff.models.vae.networks` (same layers, same layer names).

Flax convolutions work on (N, H, W, C); the nets take and return flat vectors in torch's
(C, H, W) order, transposing around the convolutions, so copying weights between the twins
needs only the kernels transposed: a Dense kernel (in, out) is a torch Linear weight
transposed, a Conv kernel (kh, kw, in, out) a torch Conv2d weight (out, in, kh, kw) permuted.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import flax.linen as fnn
import jax
import jax.numpy as jnp


class MLP(fnn.Module):
    """Affine layers of widths ``sizes`` (output widths; the input width comes from the data)
    with tanh between them, none after the last; layers are named ``Dense_0``, ``Dense_1``..."""

    sizes: Sequence[int]
    dtype: Any = jnp.float32

    @fnn.compact
    def __call__(self, h):
        for i, width in enumerate(self.sizes):
            h = fnn.Dense(width, dtype=self.dtype, param_dtype=self.dtype, name=f"Dense_{i}")(h)
            if i < len(self.sizes) - 1:
                h = jnp.tanh(h)
        return h


def _conv(features: int, stride: int, name: str, dtype) -> fnn.Conv:
    return fnn.Conv(
        features,
        (3, 3),
        strides=(stride, stride),
        padding=((1, 1), (1, 1)),
        dtype=dtype,
        param_dtype=dtype,
        name=name,
    )


class ConvEncoderNet(fnn.Module):
    """(..., C*H*W) -> (..., out_dim): strided 3x3 convolutions (SiLU), then ``dense``."""

    event_shape: Sequence[int]
    channels: Sequence[int]
    out_dim: int
    dtype: Any = jnp.float32

    @fnn.compact
    def __call__(self, x):
        lead = x.shape[:-1]
        h = x.reshape((-1, *self.event_shape)).transpose(0, 2, 3, 1)
        for i, c in enumerate(self.channels):
            h = jax.nn.silu(_conv(c, 2, f"conv{i}", self.dtype)(h))
        h = h.transpose(0, 3, 1, 2).reshape(h.shape[0], -1)
        out = fnn.Dense(self.out_dim, dtype=self.dtype, param_dtype=self.dtype, name="dense")(h)
        return out.reshape(lead + (-1,))


class ConvDecoderNet(fnn.Module):
    """(..., L) -> (..., C*H*W): ``dense`` (SiLU) to the smallest map, then per layer a
    nearest 2x upsampling and a 3x3 convolution, SiLU between them."""

    event_shape: Sequence[int]
    channels: Sequence[int]
    dtype: Any = jnp.float32

    @fnn.compact
    def __call__(self, z):
        lead = z.shape[:-1]
        c, height, width = self.event_shape
        depth = len(self.channels)
        widths = list(reversed(self.channels))
        start = (widths[0], height >> depth, width >> depth)
        h = fnn.Dense(math.prod(start), dtype=self.dtype, param_dtype=self.dtype, name="dense")(z)
        h = jax.nn.silu(h).reshape((-1, *start)).transpose(0, 2, 3, 1)
        for i, b in enumerate(widths[1:] + [c]):
            h = jnp.repeat(jnp.repeat(h, 2, axis=1), 2, axis=2)
            h = _conv(b, 1, f"conv{i}", self.dtype)(h)
            if i < depth - 1:
                h = jax.nn.silu(h)
        return h.transpose(0, 3, 1, 2).reshape(lead + (-1,))


def encoder_net(
    kind: str, event_shape: tuple[int, ...], widths: list[int], out_dim: int, dtype=jnp.float32
) -> fnn.Module:
    if kind == "conv":
        return ConvEncoderNet(tuple(event_shape), tuple(widths), out_dim, dtype=dtype)
    return MLP([*widths, out_dim], dtype=dtype)


def decoder_net(
    kind: str, latent_dim: int, event_shape: tuple[int, ...], widths: list[int], dtype=jnp.float32
) -> fnn.Module:
    if kind == "conv":
        return ConvDecoderNet(tuple(event_shape), tuple(widths), dtype=dtype)
    return MLP([*widths, math.prod(event_shape)], dtype=dtype)
