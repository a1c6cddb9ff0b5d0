"""A user's own model and guide, declared as code: functions in a file
(``probdiff fit file.py:model --guide file.py:guide``) or callables handed to
:func:`probdiff.fit`.

The model is called as Pyro's and NumPyro's tutorials write it: ``model(x)`` for one data
array, ``model(x=..., y=...)`` for named arrays; the guide likewise, or an autoguide named
``auto:normal | auto:diagonal | auto:delta | auto:lowrank``. A model that accepts
``n_total`` is told the full data size when it is given a minibatch (``--batch-size``); a
model that subsamples itself (``plate("data", N, subsample_size=B)``) is given all rows.

Trust: a fitted run keeps a copy of each source file with its SHA-256; the run folder's
copy, and only it, is what later commands execute, and only when asked to
(``--trust-model-code`` / ``open_run(..., trust_model_code=True)``).
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.util
import inspect
import itertools
import sys
import types
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from probdiff.data import Dataset
from probdiff.errors import ProbdiffError
from probdiff.family import Family
from probdiff.program import (
    Data,
    Program,
    head_rows,
    num_rows,
    take_rows,
    takes_n_total,
)
from probdiff.seeds import derive

AUTOGUIDES = {
    "auto:normal": "AutoNormal",
    "auto:diagonal": "AutoDiagonalNormal",
    "auto:delta": "AutoDelta",
    "auto:lowrank": "AutoLowRankMultivariateNormal",
}
_IMPORTS = itertools.count()


def is_reference(name: Any) -> bool:
    """True for ``path/to/file.py:function`` (as opposed to a built-in model name)."""
    return isinstance(name, str) and ":" in name and name.rsplit(":", 1)[0].endswith(".py")


@dataclass(frozen=True)
class CodeRef:
    """A function in a file: ``path/to/file.py:function``."""

    path: Path
    function: str

    @classmethod
    def parse(cls, text: str) -> CodeRef:
        if not is_reference(text):
            raise ProbdiffError(f"expected path/to/file.py:function, got {text!r}")
        path, function = text.rsplit(":", 1)
        if not function.isidentifier():
            raise ProbdiffError(f"{text!r}: {function!r} is not a function name")
        return cls(Path(path).expanduser().resolve(), function)

    def __str__(self) -> str:
        return f"{self.path.name}:{self.function}"

    def sha256(self) -> str:
        return file_sha256(self.path)

    def load(self, seed: int | None = None) -> Callable:
        """The function from a fresh import of the file (module-level networks and state are
        built anew, under ``seed`` where given)."""
        if not self.path.is_file():
            raise ProbdiffError(f"no such model file: {self.path}")
        name = f"probdiff_user_{self.path.stem}_{next(_IMPORTS)}"
        spec = importlib.util.spec_from_file_location(name, self.path)
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module  # dataclasses and pickling look their module up
        if seed is not None:
            _seed_torch(seed)
        try:
            spec.loader.exec_module(module)
        except Exception as e:  # the user's file: report, don't trace back
            sys.modules.pop(name, None)
            first = str(e).strip().splitlines()[0] if str(e).strip() else ""
            raise ProbdiffError(
                f"importing {self.path} failed: {type(e).__name__}: {first}"
            ) from None
        fn = getattr(module, self.function, None)
        if not callable(fn):
            raise ProbdiffError(f"{self.path} has no function {self.function!r}")
        return fn


def file_sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def callable_source(fn: Callable) -> tuple[CodeRef | None, bool]:
    """The file a callable was defined in, as a reference, and whether that reference
    re-creates it (a module-level function: yes; a method, closure or lambda: no)."""
    target = inspect.unwrap(getattr(fn, "__func__", fn))
    try:
        path = inspect.getsourcefile(target)
    except TypeError:
        path = None
    if not path or not Path(path).is_file():
        return None, False
    name = getattr(target, "__qualname__", "")
    reopen = (
        isinstance(target, types.FunctionType)
        and name.isidentifier()
        and getattr(fn, "__self__", None) is None
    )
    return CodeRef(
        Path(path).resolve(), name if reopen else getattr(target, "__name__", "?")
    ), reopen


def _seed_torch(seed: int) -> None:
    if "torch" in sys.modules:
        import pyro

        pyro.set_rng_seed(seed)


# -- which PPL a function is written for --------------------------------------------------


def detect_ppl(fn: Callable) -> str | None:
    """``"pyro"`` or ``"numpyro"`` from the libraries the function's module imports (and, where
    it imports both, the names its code uses); None when nothing tells."""
    target = inspect.unwrap(getattr(fn, "__func__", fn))
    if not isinstance(target, types.FunctionType):
        target = getattr(type(fn), "__call__", None) or target  # noqa: B004 (a callable object)
        target = getattr(target, "__func__", target)
    globs = getattr(target, "__globals__", None)
    if globs is None:
        return None
    found = _libraries(globs.values())
    if len(found) == 1:
        return found.pop()
    code = getattr(target, "__code__", None)
    if code is None:
        return None
    used = _libraries(globs[n] for n in _code_names(code) if n in globs)
    return used.pop() if len(used) == 1 else None


def _libraries(objects) -> set[str]:
    out = set()
    for obj in objects:
        name = (
            obj.__name__ if isinstance(obj, types.ModuleType) else getattr(obj, "__module__", None)
        )
        if not isinstance(name, str):
            continue
        top = name.split(".")[0]
        if top in ("pyro", "torch"):
            out.add("pyro")
        elif top in ("numpyro", "jax", "flax"):
            out.add("numpyro")
    return out


def _code_names(code: types.CodeType) -> set[str]:
    names = set(code.co_names)
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            names |= _code_names(const)
    return names


# -- autoguides and restarts --------------------------------------------------------------


def autoguide(kind: str, model: Callable, backend: str) -> Callable:
    """Pyro's or NumPyro's autoguide named ``kind`` on ``model``; sites the model enumerates
    are hidden from it (they are summed out, not guided)."""
    if kind not in AUTOGUIDES:
        raise ProbdiffError(f"unknown guide {kind!r}: autoguides are {', '.join(AUTOGUIDES)}")
    hide = lambda msg: msg.get("infer", {}).get("enumerate") is not None  # noqa: E731
    if backend == "pyro":
        from pyro import poutine
        from pyro.infer import autoguide as auto

        return getattr(auto, AUTOGUIDES[kind])(poutine.block(model, hide_fn=hide))
    from numpyro import handlers
    from numpyro.infer import autoguide as auto

    return getattr(auto, AUTOGUIDES[kind])(handlers.block(model, hide_fn=hide))


def reinitialise(functions: list[Callable], seed: int) -> None:
    """Fresh starting values for the torch state a user's callables hold (a restart): every
    ``nn.Module`` they reach (bound instance, closure, the module-level names their code uses)
    has ``reset_parameters()`` called on its submodules under ``seed``, and an autoguide
    forgets its set-up, so it is built again on its next call."""
    if "torch" not in sys.modules:
        return
    import torch

    _seed_torch(seed)
    seen: set[int] = set()
    for obj in itertools.chain.from_iterable(_reachable(fn) for fn in functions):
        if not isinstance(obj, torch.nn.Module) or id(obj) in seen:
            continue
        seen.add(id(obj))
        for sub in obj.modules():
            if hasattr(sub, "prototype_trace"):  # a Pyro autoguide
                sub.prototype_trace = None
            elif callable(getattr(sub, "reset_parameters", None)):
                sub.reset_parameters()


def _reachable(fn: Callable) -> list[Any]:
    out = [getattr(fn, "__self__", None), fn]
    target = inspect.unwrap(getattr(fn, "__func__", fn))
    for cell in getattr(target, "__closure__", None) or ():
        try:
            out.append(cell.cell_contents)
        except ValueError:
            pass
    globs, code = getattr(target, "__globals__", {}), getattr(target, "__code__", None)
    if code is not None:
        out += [globs[n] for n in _code_names(code) if n in globs]
    return [o for o in out if o is not None]


# -- the family -----------------------------------------------------------------------------


@dataclass
class UserCode:
    """A user's model and guide: callables of this process or functions in files.

    ``guide`` may also be an autoguide name or None (a model with no latent sites: maximum
    likelihood). ``files`` maps each file reference to the copy a run folder keeps.
    """

    model: Callable | CodeRef
    guide: Callable | CodeRef | str | None

    @property
    def label(self) -> str:
        return str(self.model) if isinstance(self.model, CodeRef) else _callable_name(self.model)

    def functions(self, backend: str, seed: int, restart: bool) -> tuple[Callable, Callable]:
        """Model and guide for one fit from ``seed``: files imported afresh, autoguides built
        anew; in-process callables re-initialised where this is a restart."""
        model = self.model.load(seed) if isinstance(self.model, CodeRef) else self.model
        if isinstance(self.guide, str):
            guide = autoguide(self.guide, model, backend)
        elif isinstance(self.guide, CodeRef):
            guide = (
                self.guide.load(None)
                if self.guide != self.model
                else _sibling(model, self.guide.function)
            )
        elif self.guide is None:
            guide = _empty_guide
        else:
            guide = self.guide
        if restart and backend == "pyro" and not isinstance(self.model, CodeRef):
            reinitialise([model, guide], seed)
        return model, guide


def _sibling(fn: Callable, name: str) -> Callable:
    """Another function of the module ``fn`` was imported from (model and guide in one file
    share one import, and so their module-level state)."""
    other = getattr(sys.modules.get(fn.__module__), name, None)
    if not callable(other):
        raise ProbdiffError(f"{fn.__module__} has no function {name!r}")
    return other


def _empty_guide(*args, **kwargs) -> None:
    """The guide of a model with no latent sites (maximum likelihood)."""


def _callable_name(fn: Callable) -> str:
    return getattr(fn, "__qualname__", None) or type(fn).__name__


class UserFamily(Family):
    """A family made of one user model and guide (see the module docstring)."""

    name = "user"
    summary = "your own model: path/to/file.py:model --guide path/to/file.py:guide|auto:normal"
    generic_figures = True
    # options read from a trace at fit time and recorded with the run
    resolved_options = {"vectorize_particles": False}

    @classmethod
    def add_arguments(cls, parser: argparse.ArgumentParser) -> None:
        g = parser.add_argument_group("your own model")
        g.add_argument(
            "--guide",
            default=None,
            help="path/to/file.py:guide, or an autoguide: "
            + ", ".join(AUTOGUIDES)
            + " (none: a model without latent sites)",
        )
        g.add_argument(
            "--elbo",
            choices=("trace", "enum", "meanfield"),
            default=None,
            help="ELBO estimator (default: enum where the model marks sites for "
            "enumeration, else trace)",
        )
        g.add_argument(
            "--max-plate-nesting",
            type=int,
            default=None,
            help="deepest plate nesting of the model (default: read from a trace)",
        )
        g.add_argument("--particles", type=int, default=1, help="ELBO particles per step")

    def __init__(
        self,
        options: dict,
        data: Dataset | None,
        code: UserCode | None,
        base_seed: int = 0,
        runtime: dict | None = None,
    ):
        # data and code are None for a family that only reads a finished folder (the report)
        super().__init__(options, data)  # type: ignore[arg-type]
        self.code = code
        self.runtime = runtime or {"name": "pyro"}  # how to build a backend: get_backend(**runtime)
        self.base_seed = base_seed  # the first restart's seed: later ones re-initialise
        if self.options.get("particles", 1) < 1:
            raise ProbdiffError(f"--particles must be >= 1, got {self.options['particles']}")
        self._programs: dict[tuple, Program] = {}
        depth = self.options.get("max_plate_nesting")
        if depth is not None and depth < 0:
            raise ProbdiffError(f"--max-plate-nesting must be >= 0, got {depth}")

    # -- programs -----------------------------------------------------------------------
    def prepare(self, data: Dataset) -> Data:
        return data.arrays()

    def program(
        self, backend: str, x: Data, seed: int, dtype: str = "float32", device: str = "cpu"
    ) -> Program:
        """The program of the restart with ``seed`` (built once per seed and backend: a
        backend's compiled functions are kept per program)."""
        key = (backend, seed)
        if key not in self._programs:
            self._programs[key] = self._build(backend, seed)
        return self._programs[key]

    def _build(self, backend: str, seed: int) -> Program:
        model, guide = self.code.functions(backend, seed, restart=seed != self.base_seed)
        autoguided = isinstance(self.code.guide, str)
        scales = takes_n_total(model) and (
            autoguided or guide is _empty_guide or takes_n_total(guide)
        )
        return Program(
            model,
            guide,
            elbo=self.options.get("elbo") or "trace",
            max_plate_nesting=self.options.get("max_plate_nesting") or 1,
            num_particles=self.options.get("particles", 1),
            minibatch=scales,
            vectorize_particles=bool(self.options.get("vectorize_particles")),
            name=self.code.label,
        )

    def check(self, backend, backend_name: str, x: Data, settings) -> dict:
        """Before any folder is made: the code is written for this backend, records sample
        sites and an observation, and under ``--batch-size`` scales its likelihood. Returns
        the options read from a trace (``elbo``: enum where the model marks sites for
        enumeration; ``max_plate_nesting``; whether particles may be vectorised), which the
        run records."""
        seed = self.base_seed
        program = self.program(backend_name, x, seed)
        ppl = detect_ppl(program.model)
        label = self.code.label
        if ppl is not None and ppl != backend_name:
            raise ProbdiffError(f"{label} is written for {_PPL[ppl]}: fit it with --backend {ppl}")
        probe = backend.array(head_rows(x))
        backend.start(program, probe, settings.lr, seed)
        guide_sites, model_sites, _ = backend.trace_joint(program, probe, seed=seed)
        sampled = [s for s in model_sites if s.kind in ("latent", "observed", "factor")]
        if not sampled:
            raise ProbdiffError(
                f"{label} records no sample site under --backend {backend_name}: "
                "is it written for the other backend?"
            )
        if not any(s.kind in ("observed", "factor") for s in sampled):
            raise ProbdiffError(
                f"{label} observes nothing: give the data to a site with obs=..., or add a factor"
            )
        guided = {g.name for g in guide_sites}
        marked = [s.name for s in model_sites if s.marked and s.name not in guided]
        latent = [
            s.name
            for s in model_sites
            if s.kind == "latent" and s.name not in guided and s.name not in marked
        ]
        if latent:
            what = "has no guide" if self.code.guide is None else "are not in the guide"
            raise ProbdiffError(
                f"{label}: latent sites {latent} {what}: give a guide (a function, "
                f"or one of {', '.join(AUTOGUIDES)}) or mark discrete ones "
                "for enumeration"
            )
        if marked and self.options.get("elbo") not in (None, "enum"):
            raise ProbdiffError(f"{label} marks {marked} for enumeration: use --elbo enum")
        depth = max((len(s.plates) for s in guide_sites + model_sites), default=1)
        program.elbo = self.options.get("elbo") or ("enum" if marked else "trace")
        program.max_plate_nesting = self.options.get("max_plate_nesting") or max(depth, 1)
        program.vectorize_particles = backend.vectorizes(program, probe, seed)
        resolved = {
            "elbo": program.elbo,
            "max_plate_nesting": program.max_plate_nesting,
            "vectorize_particles": program.vectorize_particles,
        }
        self.options.update(resolved)
        self._check_scaling(backend, program, x, settings.batch_size, seed)
        return resolved

    def _check_scaling(
        self, backend, program: Program, x: Data, batch_size: int | None, seed: int
    ) -> None:
        from probdiff.draws import read_layout

        n = num_rows(x)
        if batch_size is None or batch_size >= n:
            return
        layout = read_layout(backend, program, backend.array(x), seed)
        label = self.code.label
        if layout.subsample_size:
            raise ProbdiffError(
                f"{label} subsamples its own data plate {layout.data_plate!r} "
                f"({layout.subsample_size} of {n} rows per step): drop --batch-size"
            )
        if not program.minibatch:
            raise ProbdiffError(
                f"--batch-size {batch_size} needs a model that scales its likelihood to the full "
                f"data, and {label} takes no n_total: subsample inside the model with "
                f"plate('data', len(x), subsample_size={batch_size}) and drop --batch-size, or "
                "accept n_total and scale the data plate by n_total / len(x)"
            )
        batch = backend.array(take_rows(x, np.arange(batch_size)))
        guide, model, _ = backend.trace_joint(program, batch, seed=seed, n_total=n)
        expected = n / batch_size
        for s in guide + model:
            if s.kind not in ("latent", "observed", "factor") or s.enumerated:
                continue
            local = s.plate(layout.data_plate) is not None
            want = expected if local else 1.0
            if not np.isclose(s.scale, want, rtol=1e-6):
                where = "local" if local else "global"
                raise ProbdiffError(
                    f"{label} does not scale its minibatch likelihood: {where} site {s.name!r} "
                    f"has scale {s.scale:.6g} on {batch_size} of {n} rows, expected {want:.6g} "
                    "(scale the data plate by n_total / len(x) in model and guide)"
                )

    # -- results ------------------------------------------------------------------------
    def metrics(self, backend, program, params, train, test, seed):
        out = super().metrics(backend, program, params, train, None, seed)
        skipped = {}
        if test is not None and num_rows(test):
            try:
                out.update(super().metrics(backend, program, params, None, test, seed))
                out.update(self.held_out_predictive(backend, program, params, test, seed))
            except ProbdiffError as e:
                skipped["test_elbo"] = str(e)
        if skipped:
            out["skipped"] = skipped
        return out

    def held_out_predictive(
        self, backend, program, params, test, seed, num_samples: int = 100
    ) -> dict[str, float]:
        """``test_log_predictive``: mean over held-out rows of log (1/S) sum_s w_sn
        (:mod:`probdiff.draws`), with its standard error over rows."""
        from probdiff.draws import draw_program, log_predictive, read_layout

        data = backend.array(test)
        backend.set_params(program, data, params)
        layout = read_layout(backend, program, data, seed)
        draws = draw_program(
            backend, program, data, layout, num_samples, derive(seed, 17), local_values=False
        )
        if draws.local_log_weights is None:
            return {}
        lpd = log_predictive(draws.local_log_weights)
        n = len(lpd)
        return {
            "test_log_predictive": float(lpd.mean()) + self.data_log_jacobian,
            "test_log_predictive_stderr": float(lpd.std(ddof=1) / np.sqrt(n))
            if n > 1
            else float("nan"),
        }

    def inference_groups(self, backend, program, params, x, num_samples, seed):
        from probdiff.draws import draw_program, read_layout
        from probdiff.inference_data import InferenceGroups

        data = backend.array(x)
        backend.set_params(program, data, params)
        layout = read_layout(backend, program, data, seed)
        draws = draw_program(backend, program, data, layout, num_samples, seed, predictive=True)
        point = dict(draws.point)
        for name in layout.model_params:  # maximum-likelihood parameters of the model
            if "$$$" not in name and name in params and np.size(params[name]) <= 10_000:
                point[name] = np.asarray(params[name])
        observed = {
            site: np.asarray(x[key] if isinstance(x, dict) else x)
            for site, key in layout.observes.items()
        }
        return InferenceGroups(
            posterior=draws.posterior,
            point=point,
            log_likelihood=draws.log_likelihood,
            posterior_predictive={k: v for k, v in draws.predictive.items() if k in observed},
            observed_data=observed,
            row_dim=layout.data_plate or "row",
            row_axes=draws.data_axes,
            notes=draws.notes,
            conditional_on=[k for k in layout.latent if k in layout.local],
        )

    # -- drawing from the fitted model -----------------------------------------------------
    def _fitted(self, backend, params):
        """The fitted program on (the head of) the training data, and its layout."""
        from probdiff.draws import read_layout

        x = self.prepare(self.data)
        head = backend.array(head_rows(x))
        program = self.program(backend.name, head, self.base_seed)
        backend.set_params(program, head, params)
        return program, head, read_layout(backend, program, head, self.base_seed)

    def _global_draw(self, backend, program, head, layout, seed: int) -> dict:
        guide, _, _ = backend.trace_joint(program, head, seed=seed)
        return {
            g.name: g.value
            for g in guide
            if g.kind == "latent" and g.plate(layout.data_plate) is None
        }

    def predictive(
        self, backend, params, train: Dataset, data: Dataset | None, num_samples: int, seed: int
    ) -> dict[str, np.ndarray]:
        """Draws of the observed sites, ``(num_samples, N, ...)``: on the training rows, with
        every latent site from the guide; on new ``data`` (covariates, observed arrays
        optional), global latents from the guide and local ones from the model."""
        from probdiff.draws import draw_program, read_layout

        if data is None:
            x = backend.array(self.prepare(train))
            program = self.program(backend.name, x, self.base_seed)
            backend.set_params(program, x, params)
            layout = read_layout(backend, program, x, seed)
            return draw_program(
                backend,
                program,
                x,
                layout,
                num_samples,
                seed,
                predictive=True,
                per_datum_values=False,
                local_values=False,
            ).predictive
        program, head, layout = self._fitted(backend, params)
        new = backend.array(self.prepare(data))
        draws: dict[str, list] = {}
        for s in range(num_samples):
            fixed = self._global_draw(backend, program, head, layout, derive(seed, 2 * s))
            for site in backend.trace_forward(
                program, new, seed=derive(seed, 2 * s + 1), fixed=fixed
            ):
                if site.name in layout.observed and site.kind in ("latent", "observed"):
                    draws.setdefault(site.name, []).append(site.value)
        return {k: np.stack(v) for k, v in draws.items()}

    def sample(self, params, n: int, seed: int):
        """``n`` new rows from the fitted model: each under its own draw of the global latents
        (from the guide), local latents and observations drawn from the model. Only for models
        whose every data array is observed (otherwise new rows need covariates: use
        ``predictive(data=...)``)."""
        from probdiff.backends import get_backend

        backend = get_backend(**self.runtime)
        program, head, layout = self._fitted(backend, params)
        x = self.prepare(self.data)
        arrays = x if isinstance(x, dict) else {"x": x}
        covariates = sorted(set(arrays) - set(layout.observes.values()))
        if covariates:
            raise ProbdiffError(
                f"{self.code.label} takes covariates ({', '.join(covariates)}): "
                "draw on new covariates with predictive(data=...)"
            )
        site_of = {key: site for site, key in layout.observes.items()}
        rng_rows = np.array_split(np.arange(n), min(n, 100))
        pieces: dict[str, list] = {}
        for i, rows in enumerate(rng_rows):
            blank = {k: np.zeros((len(rows),) + v.shape[1:], v.dtype) for k, v in arrays.items()}
            data = backend.array(blank if isinstance(x, dict) else blank["x"])
            fixed = self._global_draw(backend, program, head, layout, derive(seed, 2 * i))
            values = {
                site.name: site.value
                for site in backend.trace_forward(
                    program, data, seed=derive(seed, 2 * i + 1), fixed=fixed
                )
            }
            for key in arrays:
                pieces.setdefault(key, []).append(np.asarray(values[site_of[key]]))
        out = {k: np.concatenate(v) for k, v in pieces.items()}
        return out if isinstance(x, dict) else out["x"]


_PPL = {"pyro": "Pyro", "numpyro": "NumPyro"}
