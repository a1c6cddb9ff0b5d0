"""The contract between the engine and a model family, and the registry of built-in families.

A family turns command-line options and a data set into :class:`~probdiff.program.Program`s
for each backend, and knows its own metrics and figures. The engine (fitting loop, run folder,
ArviZ output, report) calls only the methods below, so a new family is one file in
``models/`` that subclasses :class:`Family` and decorates itself with :func:`register`.
"""

from __future__ import annotations

import argparse
import importlib
from typing import Any, ClassVar

import numpy as np

from probdiff.data import Dataset
from probdiff.data.rows import Rows
from probdiff.errors import ProbdiffError
from probdiff.phases import Phases
from probdiff.program import EVAL_ROWS, Program, num_rows, take_rows

_FAMILIES: dict[str, type[Family]] = {}


def register(cls: type[Family]) -> type[Family]:
    """Class decorator: make ``cls`` available as ``probdiff fit <cls.name>``."""
    _FAMILIES[cls.name] = cls
    return cls


def parse_widths(text: str, flag: str = "--hidden", allow_none: bool = False) -> list[int]:
    """A network option: '128,64' -> [128, 64]; with ``allow_none``, '' / 'linear' / 'none'
    -> [] (no hidden layer). Anything else is a one-line error naming ``flag``."""
    if allow_none and text.strip().lower() in ("", "linear", "none"):
        return []
    try:
        sizes = [int(t) for t in text.split(",")]
    except ValueError:
        raise ProbdiffError(
            f"{flag} must be comma-separated widths like 128,64, got {text!r}"
        ) from None
    if any(s < 1 for s in sizes):
        raise ProbdiffError(f"{flag} widths must be >= 1, got {text!r}")
    return sizes


def parse_sampler(
    text: str | None,
    names: tuple[str, ...],
    default: str,
    default_steps: int,
    stepless: tuple[str, ...] = (),
) -> tuple[str, int]:
    """A ``--sampler`` option: 'name' | 'name:STEPS' -> (name, steps); the ``stepless`` names
    take no :STEPS. Anything else is a one-line error listing the choices."""
    text = text or default
    name, _, steps = text.partition(":")
    if name not in names or (steps and name in stepless):
        shown = ", ".join(n if n in stepless else f"{n}[:STEPS]" for n in names)
        raise ProbdiffError(f"--sampler must be one of {shown}, got {text!r}")
    try:
        k = int(steps) if steps else default_steps
    except ValueError:
        raise ProbdiffError(f"--sampler {name}:STEPS needs an integer, got {text!r}") from None
    if k < 1:
        raise ProbdiffError(f"--sampler {name}:STEPS needs STEPS >= 1, got {k}")
    return name, k


def builtin_names() -> list[str]:
    """The built-in families' names, read from :data:`probdiff.models.FAMILIES` without
    importing any of them."""
    from probdiff.models import FAMILIES

    return sorted(FAMILIES)


def families() -> dict[str, type[Family]]:
    """Every family by name: the built-ins (each imported now) and any registered since."""
    for name in builtin_names():
        get_family(name)
    return dict(_FAMILIES)


def get_family(name: str) -> type[Family]:
    """The family ``name``: registered already, or a built-in imported on first use (only its
    own module: ``probdiff fit gmm`` never loads the diffusion chapters)."""
    if name not in _FAMILIES:
        from probdiff.models import FAMILIES

        if name not in FAMILIES:
            raise ProbdiffError(
                f"unknown model {name!r}: built-ins are "
                f"{', '.join(builtin_names())}, or give path/to/file.py:function "
                "with --guide"
            )
        importlib.import_module(FAMILIES[name])
    return _FAMILIES[name]


class Family:
    """Base class of a model family. Subclasses set ``name`` and override what they need."""

    name: ClassVar[str] = ""
    summary: ClassVar[str] = ""
    backends: ClassVar[tuple[str, ...]] = ("pyro", "numpyro")
    inferences: ClassVar[tuple[str, ...]] = ("svi",)
    default_lr: ClassVar[float] = 0.01
    default_steps: ClassVar[int] = 1000
    default_batch_size: ClassVar[int | None] = None  # None: the whole training split
    # where the fitted model draws samples (the fit's --device; make_family sets it)
    device: str = "cpu"
    # reparameterisation sites that repeat another variable (left out of summaries and plots)
    auxiliary_sites: ClassVar[tuple[str, ...]] = ()
    # log |dx'/dx| per datum of the map ``prepare`` applies (probdiff.scaling): added to every
    # per-datum log density the model computes, so traces and metrics are in data units
    data_log_jacobian: float = 0.0
    # what the training trace records (-loss per datum)
    objective: str = "ELBO"
    # what the held-out trace records (an ELBO, unless the family trains on another loss)
    held_out_objective: str = "ELBO"
    # metrics defined on held-out data without a test_ prefix (evaluate refreshes them too)
    held_out_keys: ClassVar[tuple[str, ...]] = ()
    # the engine draws ArviZ's posterior densities and predictive check (posterior.png, ppc.png)
    generic_figures: ClassVar[bool] = False

    def __init__(self, options: dict[str, Any], data: Dataset):
        self.options = dict(options)
        self.data = data
        # what metrics() computed that figures() draws (samples, a KL profile, k-hats): the
        # engine saves it in the run folder and hands it back to figures(), so fit and
        # report draw the same figures from the same files
        self.artefacts: dict[str, np.ndarray] = {}
        # the engine's clock: phases of metrics() over a second get a progress line, and every
        # phase's seconds go to metrics.json (phase_seconds)
        self.clock = Phases(show=False)

    def phase(self, name: str, label: str | None = None):
        """Time a part of ``metrics()`` (``with self.phase("ode_likelihood"): ...``)."""
        return self.clock(name, label)

    def keep(self, name: str, value) -> None:
        """Record an artefact of ``metrics()`` for the run folder (``artefacts.npz``)."""
        self.artefacts[name] = np.asarray(value)

    @classmethod
    def add_arguments(cls, parser: argparse.ArgumentParser) -> None:
        """Add the family's own options to ``probdiff fit``."""

    @classmethod
    def default_options(cls, **overrides: Any) -> dict[str, Any]:
        """The family's options as ``probdiff fit`` would parse them with no flags, then ``overrides``."""
        parser = argparse.ArgumentParser(add_help=False)
        cls.add_arguments(parser)
        options = vars(parser.parse_args([]))
        unknown = set(overrides) - set(options)
        if unknown:
            raise ProbdiffError(f"unknown {cls.name} options: {', '.join(sorted(unknown))}")
        return {**options, **overrides}

    def validate_request(
        self, inference: str, backend: str, settings, n_train: int, dtype: str
    ) -> None:
        """Reject option combinations this family cannot honour, before any folder is made."""

    def check(self, backend, backend_name: str, x, settings) -> dict[str, Any]:
        """Checks that need the backend and the prepared training data (run before any folder
        is made); returns options resolved on the way, which the run's config records."""
        return {}

    def prepare(self, data: Dataset) -> np.ndarray | Rows:
        """The array the model sees (rows on disk stay there, mapped as they are read); by
        default each datum flattened to a vector."""
        return data.flat()

    def program(
        self, backend: str, x: np.ndarray, seed: int, dtype: str = "float32", device: str = "cpu"
    ) -> Program:
        """The model and guide for ``backend``, initialised from the training data and seed."""
        raise NotImplementedError

    def trace_rows(self, n_test: int) -> int:
        """How many held-out rows the training-time held-out trace uses (all, by default;
        a subset is an unbiased estimate of the per-datum value)."""
        return n_test

    def evaluation_program(self, program: Program) -> Program:
        """The program whose ELBO is tracked on held-out data during training (sharing the
        training program's parameters); by default the training program itself."""
        return program

    def metrics(
        self,
        backend,
        program: Program,
        params: dict[str, np.ndarray],
        train: np.ndarray,
        test: np.ndarray | None,
        seed: int,
    ) -> dict[str, float]:
        """Per-datum metrics in nats of the data. The default is the ELBO on each split (Monte
        Carlo), plus ``data_log_jacobian``."""
        out = {}
        for key, x in (("elbo", train), ("test_elbo", test)):  # either may be None
            if x is None or num_rows(x) == 0:
                continue
            data = backend.array(x)
            # parameters are created by one traced call: on a head of the rows where the
            # program scales its data plate (its parameters do not grow with the rows)
            backend.set_params(
                program, take_rows(data, slice(0, EVAL_ROWS)) if program.minibatch else data, params
            )
            with self.phase(key, f"{key.replace('_', ' ')}, {num_rows(x)} rows"):
                value, err = backend.elbo(
                    program, data, num_particles=64, repeats=4, seed=seed, max_rows=EVAL_ROWS
                )
            out[key] = value / num_rows(x) + self.data_log_jacobian
            out[key + "_stderr"] = err / num_rows(x)
            if program.minibatch and num_rows(x) > EVAL_ROWS:
                out[key + "_rows_per_estimate"] = EVAL_ROWS
        return out

    def posterior(
        self,
        backend,
        program: Program,
        params: dict[str, np.ndarray],
        x: np.ndarray,
        num_samples: int,
        seed: int,
    ) -> dict[str, np.ndarray]:
        """Draws from the fitted guide, each shaped (num_samples, ...)."""
        data = backend.array(x)
        backend.set_params(program, data, params)
        return backend.guide_draws(program, data, num_samples=num_samples, seed=seed)

    def inference_groups(
        self,
        backend,
        program: Program,
        params: dict[str, np.ndarray],
        x: np.ndarray,
        num_samples: int,
        seed: int,
    ):
        """The ArviZ groups of a fit (:class:`probdiff.inference_data.InferenceGroups`): by
        default the guide's draws, identical draws kept once as point estimates, auxiliary
        sites left out, and ``x`` as the observed data."""
        from probdiff.inference_data import InferenceGroups

        draws = self.posterior(backend, program, params, x, num_samples, seed)
        return InferenceGroups.from_draws(draws, x, self.auxiliary_sites)

    def restore(self, idata) -> None:
        """Take back what a finished run's InferenceData holds (e.g. MCMC draws) before
        ``metrics`` or ``sample`` is called on it again."""

    def sample(self, params: dict[str, np.ndarray], n: int, seed: int) -> np.ndarray:
        """``n`` draws from the fitted model, shaped like the data."""
        raise ProbdiffError(f"model {self.name} has no sampler")

    def run_other(self, inference: str, x: np.ndarray, settings, backend_name: str):
        """Inference other than SVI (e.g. EM, NUTS): returns (params, idata or None, extra)."""
        raise ProbdiffError(f"model {self.name} has no inference {inference!r}")

    def figures(
        self,
        run,
        idata,
        params: dict[str, np.ndarray],
        data: Dataset,
        artefacts: dict[str, np.ndarray],
    ) -> list[str]:
        """Write the family's own figures into the run folder from what it holds (``idata``,
        ``params``, ``data``: the training rows shown, ``artefacts``: what ``metrics`` kept),
        never from state left on the family; return their file names."""
        return []

    def report_lines(self, idata, metrics: dict) -> list[str]:
        """Extra lines (warnings, diagnostics) for ``probdiff report``."""
        return []
