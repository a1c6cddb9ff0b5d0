"""A user's own model and guide, declared as code: ``probdiff fit file.py:model --guide file.py:guide``."""

from __future__ import annotations

import argparse
import importlib.util
import inspect
import sys
from pathlib import Path
from typing import Callable

from probdiff.data import Dataset
from probdiff.errors import ProbdiffError
from probdiff.family import Family
from probdiff.program import Program


def is_reference(name: str) -> bool:
    """True for ``path/to/file.py:function`` (as opposed to a built-in model name)."""
    return ":" in name and name.split(":", 1)[0].endswith(".py")


def load_callable(ref: str) -> Callable:
    """Import ``function`` from ``path/to/file.py:function``; a clear error when either is missing."""
    if not is_reference(ref):
        raise ProbdiffError(f"expected path/to/file.py:function, got {ref!r}")
    path_str, attr = ref.rsplit(":", 1)
    path = Path(path_str)
    if not path.is_file():
        raise ProbdiffError(f"no such model file: {path}")
    name = f"probdiff_user_{abs(hash(path.resolve()))}"
    module = sys.modules.get(name)
    if module is None:
        spec = importlib.util.spec_from_file_location(name, path)
        module = importlib.util.module_from_spec(spec)
        try:
            spec.loader.exec_module(module)
        except Exception as e:  # the user's file: report, don't trace back
            raise ProbdiffError(f"importing {path} failed: {type(e).__name__}: {e}") from None
        sys.modules[name] = module
    fn = getattr(module, attr, None)
    if not callable(fn):
        raise ProbdiffError(f"{path} has no function {attr!r}")
    return fn


def accepts_n_total(fn: Callable) -> bool:
    try:
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return False
    return "n_total" in params or any(p.kind is p.VAR_KEYWORD for p in params.values())


class UserFamily(Family):
    """A family made of one user model and guide, called as ``model(x)`` and ``guide(x)``."""

    name = "user"
    summary = "your own model: path/to/file.py:model --guide path/to/file.py:guide"

    @classmethod
    def add_arguments(cls, parser: argparse.ArgumentParser) -> None:
        g = parser.add_argument_group("your own model")
        g.add_argument("--guide", default=None, help="path/to/file.py:guide for a model given as a file")
        g.add_argument("--elbo", choices=("trace", "enum", "meanfield"), default="trace",
                       help="ELBO estimator for your model (enum sums out marked discrete sites)")
        g.add_argument("--max-plate-nesting", type=int, default=1)
        g.add_argument("--particles", type=int, default=1, help="ELBO particles per step")

    def __init__(self, options: dict, data: Dataset, model_ref: str):
        super().__init__(options, data)
        if not options.get("guide"):
            raise ProbdiffError(f"model {model_ref} is a file: give its guide with --guide file.py:guide")
        self.model_ref, self.guide_ref = model_ref, options["guide"]
        self.model_fn = load_callable(model_ref)
        self.guide_fn = load_callable(self.guide_ref)
        if options["particles"] < 1:
            raise ProbdiffError(f"--particles must be >= 1, got {options['particles']}")

    def program(self, backend, x, seed, dtype="float32", device="cpu") -> Program:
        return Program(self.model_fn, self.guide_fn, elbo=self.options["elbo"],
                       max_plate_nesting=self.options["max_plate_nesting"],
                       num_particles=self.options["particles"],
                       minibatch=accepts_n_total(self.model_fn) and accepts_n_total(self.guide_fn))
