"""The SVI optimiser of the Pyro backend: Pyro's ClippedAdam (per-entry gradient clipping,
Adam), without the 1.3 s import of ``torch._dynamo`` that torch's Optimizer makes on its
first ``add_param_group``, ``state_dict`` or ``load_state_dict`` call.

torch wraps those three methods so that, called inside ``torch.compile``, they are excluded
from tracing; the wrapper imports the compiler to do so even when nothing is compiled.
probdiff never compiles an optimiser, so this subclass calls the methods underneath the
wrapper (``__wrapped__``) where torch exposes them, and torch's own otherwise. The update
and the state's format are Pyro's, so checkpoints written with either class resume with the
other (tests/test_svi_optim.py).
"""

from __future__ import annotations

import torch
from pyro.optim import PyroOptim
from pyro.optim.clipped_adam import ClippedAdam as _ClippedAdam


def _unwrapped(name: str):
    method = getattr(torch.optim.Optimizer, name)
    return getattr(method, "__wrapped__", method)


class ClippedAdam(_ClippedAdam):
    """Pyro's ClippedAdam, its bookkeeping methods called without the compiler's wrapper."""

    _add_param_group = staticmethod(_unwrapped("add_param_group"))
    _state_dict = staticmethod(_unwrapped("state_dict"))
    _load_state_dict = staticmethod(_unwrapped("load_state_dict"))

    def add_param_group(self, param_group):
        return self._add_param_group(self, param_group)

    def state_dict(self):
        return self._state_dict(self)

    def load_state_dict(self, state_dict):
        return self._load_state_dict(self, state_dict)


def clipped_adam(args: dict) -> PyroOptim:
    """``pyro.optim.ClippedAdam(args)`` on :class:`ClippedAdam`."""
    return PyroOptim(ClippedAdam, args)
