"""Seeds: the range a user may give, and the seeds derived from one.

NumPy, PyTorch and JAX all take 32-bit seeds. A run derives several from the one it is given
(restart r uses ``seed + 1000 r``, evaluations their own offsets); :func:`derive` wraps them
modulo 2**32, so every seed from 0 to :data:`MAX_SEED` is valid with any number of restarts.
"""

from __future__ import annotations

MAX_SEED = 2**32 - 2


def derive(seed: int, offset: int) -> int:
    """``seed + offset`` wrapped into 0 .. 2**32 - 1."""
    return (int(seed) + int(offset)) % 2**32
