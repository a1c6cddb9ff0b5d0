"""Pyro (PyTorch) backend: SVI with Pyro's ELBO classes (docs/equations.md (1.1)), on CPU or
CUDA."""

from __future__ import annotations

import contextlib
import math

import numpy as np
import pyro
import pyro.poutine.runtime
import torch
from pyro.infer import SVI, Trace_ELBO, TraceEnum_ELBO
from pyro.optim import PyroOptim
from pyro.poutine.util import site_is_subsample

from probdiff.backends.meanfield_elbo import MeanFieldELBO
from probdiff.backends.optim import clipped_adam
from probdiff.errors import ProbdiffError, user_code_error
from probdiff.program import (
    Data,
    Program,
    init_rows,
    lazy_array,
    num_rows,
    particle_groups,
    row_subset,
    take_rows,
)
from probdiff.seeds import derive

_ELBOS = {"trace": Trace_ELBO, "enum": TraceEnum_ELBO, "meanfield": MeanFieldELBO}


def torch_device(device: str) -> torch.device:
    """``cpu`` or ``cuda`` (``cuda:N``); a clear error where CUDA is asked for and absent."""
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ProbdiffError(f"--device {device} asked for, but torch sees no CUDA device here")
    if not (device == "cpu" or device.startswith("cuda")):
        raise ProbdiffError(f"unknown device {device!r}: use cpu or cuda")
    return torch.device(device)


def make_elbo(program: Program, num_particles: int | None = None):
    """The Pyro ELBO object that ``program.elbo`` names (particles vectorised only where the
    program allows it)."""
    particles = num_particles or program.num_particles
    return _ELBOS[program.elbo](
        num_particles=particles,
        max_plate_nesting=program.max_plate_nesting,
        vectorize_particles=particles > 1 and program.vectorize_particles,
    )


class SiteTracker(pyro.poutine.messenger.Messenger):
    """Remembers the last sample site a program reached, to name it when user code fails."""

    def __init__(self) -> None:
        super().__init__()
        self.last: tuple[str, tuple] | None = None

    def _postprocess_message(self, msg) -> None:
        if msg["type"] == "sample" and not site_is_subsample(msg):
            value = msg.get("value")
            self.last = (msg["name"], tuple(getattr(value, "shape", ())))


class PyroBackend:
    """Holds Pyro's global parameter store and one SVI object for the fit in progress."""

    name = "pyro"

    def __init__(self, device: str = "cpu", dtype: str = "float32", threads: int | None = None):
        self.device = torch_device(device)
        if threads is not None:
            # small models run fastest on one intra-op thread: OpenMP hand-offs cost more than
            # the arithmetic, and on a loaded machine they cost milliseconds per op
            torch.set_num_threads(threads)
        self.dtype = {"float32": torch.float32, "float64": torch.float64}[dtype]
        self._svi: SVI | None = None
        self._optim: PyroOptim | None = None
        self._good_steps = 0  # steps since start(): a refused parameter after them is divergence
        from probdiff import distributed

        self.rank, self.world_size = distributed.world()
        if self.world_size > 1:  # torchrun: each process a share of every batch
            distributed.start(device)

    # -- data ---------------------------------------------------------------------------
    def array(self, x: Data) -> Data:
        """A copy of ``x`` (one array or named arrays) as tensors, never aliasing the caller's
        arrays (which steps would move): floating point in the backend's dtype, integers as
        int64, booleans as bool. Rows on disk stay there, converted as they are read."""
        return lazy_array(x, self._tensor)

    def _tensor(self, a) -> torch.Tensor:
        a = np.asarray(a)
        if a.dtype.kind in "iu":
            return torch.tensor(a, dtype=torch.int64, device=self.device)
        if a.dtype.kind == "b":
            return torch.tensor(a, device=self.device)
        return torch.tensor(a, dtype=self.dtype, device=self.device)

    def take(self, x: Data, idx: np.ndarray) -> Data:
        return take_rows(x, torch.as_tensor(idx, device=self.device))

    # -- optimisation -------------------------------------------------------------------
    def start(
        self, program: Program, x: torch.Tensor, lr: float, seed: int, clip_norm: float = 10.0
    ) -> None:
        """Fresh parameter store and optimiser; parameters are created by one trace of the guide and model."""
        pyro.clear_param_store()
        pyro.set_rng_seed(seed)
        self._program = program
        self._optim = clipped_adam({"lr": lr, "clip_norm": clip_norm})
        self._good_steps = 0
        self._svi = SVI(program.model, program.guide, self._optim, loss=make_elbo(program))
        self._create_params(program, x)
        if self.world_size > 1:  # the same start everywhere, then each process its own draws
            from probdiff import distributed

            distributed.broadcast(self._ordered_params())
            pyro.set_rng_seed(derive(seed, 7919 * self.rank) if self.rank else seed)

    def _create_params(self, program: Program, x: Data) -> None:
        """Create every parameter now (Pyro would at the first step) by one traced call on the
        data (initialisers may look at it, e.g. ``x.var(0)``; rows on disk: a spread of them)."""
        x = init_rows(x)
        args, kw = program.inputs(x, num_rows(x))
        with torch.no_grad(), self._user_code(program, "its first call", inputs=(args, kw)):
            guide_trace = pyro.poutine.trace(program.guide).get_trace(*args, **kw)
            # the model runs against the guide's draws: improper sites (ordered means) cannot sample
            pyro.poutine.replay(program.model, trace=guide_trace)(*args, **kw)

    def step(self, batch: Data, n_total: int) -> float:
        """One gradient step; returns the loss, an estimate of -ELBO of the whole data set
        (NaN where the step met non-finite parameters)."""
        if self.world_size > 1:
            return self._distributed_step(batch, n_total)
        args, kw = self._program.inputs(batch, n_total)
        # Pyro's validation (shapes, supports, argument checks) on the first good step; the
        # loop then runs without it (a NaN it would have refused shows as a NaN loss)
        with (
            self._user_code(
                self._program, "a training step", diverged_ok=True, inputs=(args, kw)
            ) as outcome,
            pyro.validation_enabled(
                self._good_steps == 0 and pyro.infer.util.is_validation_enabled()
            ),
        ):
            loss = float(self._svi.step(*args, **kw))
            self._good_steps += 1
            return loss
        return outcome.value

    def _ordered_params(self) -> list[torch.Tensor]:
        store = pyro.get_param_store()
        return [store._params[name] for name in sorted(store._params)]

    def _distributed_step(self, batch: Data, n_total: int) -> float:
        """SVI's step with the gradients averaged over the processes before the update; the
        loss returned is their mean (the combined batch's estimate)."""
        from probdiff import distributed

        mine = distributed.shard(np.arange(num_rows(batch)), self.rank, self.world_size)
        args, kw = self._program.inputs(self.take(batch, mine), n_total)
        svi = self._svi
        with self._user_code(
            self._program, "a training step", diverged_ok=True, inputs=(args, kw)
        ) as outcome:
            with pyro.poutine.trace(param_only=True) as capture:
                loss = float(svi.loss_and_grads(svi.model, svi.guide, *args, **kw))
            store = pyro.get_param_store()
            params = [store._params[k] for k in sorted(capture.trace.nodes) if k in store]
            loss = distributed.average_gradients(params, loss)
            self._optim(params)
            pyro.infer.util.zero_grads(set(params))
            self._good_steps += 1
            return loss
        return outcome.value

    def params(self) -> dict[str, np.ndarray]:
        """Constrained values of every parameter, as NumPy arrays."""
        return {k: v.detach().cpu().numpy().copy() for k, v in pyro.get_param_store().items()}

    def set_params(self, program: Program, x: Data, params: dict[str, np.ndarray]) -> None:
        """Create the program's parameters (one traced call) and set them to ``params``
        (constrained values). Values are copied into the tensors the store holds, so networks
        registered with ``pyro.module`` (whose weights *are* those tensors) follow."""
        store = pyro.get_param_store()
        store.clear()  # the program's own tensors (its pyro.module networks), nobody else's
        self._create_params(program, x)
        for name, value in params.items():
            if name in store:
                constraint = store._constraints[name]
                unconstrained = torch.distributions.transform_to(constraint).inv(
                    torch.as_tensor(np.asarray(value), dtype=self.dtype, device=self.device)
                )
                self._copy_into(name, unconstrained)

    def _copy_into(self, name: str, unconstrained: torch.Tensor) -> None:
        target = pyro.get_param_store()._params[name]
        if tuple(target.shape) != tuple(unconstrained.shape):
            raise ProbdiffError(
                f"parameter {name!r} has shape {tuple(unconstrained.shape)} in the "
                f"saved state but {tuple(target.shape)} in the program"
            )
        with torch.no_grad():
            target.copy_(unconstrained)

    def state_dict(self) -> dict:
        """Plain data (tensors, numbers, tuples): unconstrained parameters, Adam's state per
        parameter, and the random states; constraints come back from the program itself."""
        params = {k: v.detach().cpu().clone() for k, v in pyro.get_param_store()._params.items()}
        return {
            "params": params,
            "optim": _to_cpu(self._optim.get_state()) if self._optim else {},
            "rng": pyro.util.get_rng_state(),
        }

    def load_state_dict(self, state: dict) -> None:
        """Restore :meth:`state_dict` output after :meth:`start` with the same program: values
        are copied into the store's tensors (and so into ``pyro.module`` networks)."""
        store = pyro.get_param_store()
        missing = sorted(set(state["params"]) - set(store.keys()))
        if missing:
            raise ProbdiffError(
                f"the saved state has parameters {missing} that the program does not create"
            )
        for name, value in state["params"].items():
            self._copy_into(name, value.to(self.device, self.dtype))
        optim = _to_device(state["optim"], self.device)
        settings = (
            self._optim.pt_optim_args
        )  # this fit's lr and clip_norm: a resume may change them
        for saved in optim.values():
            for group in saved.get("param_groups", []):
                group.update({k: v for k, v in settings.items() if k in group})
        self._optim.set_state(optim)
        pyro.util.set_rng_state(state["rng"])

    @contextlib.contextmanager
    def _user_code(self, program: Program, what: str, diverged_ok: bool = False, inputs=None):
        """Run a program's code; a failure of a user's program becomes one line naming the
        last site it reached, and with ``diverged_ok`` a failure on non-finite parameters
        (Pyro's validation refusing NaN) becomes ``outcome.value = nan``."""
        outcome = _Outcome()
        try:
            yield outcome
        except (ProbdiffError, pyro.poutine.runtime.NonlocalExit):
            raise
        except Exception as e:
            if diverged_ok and (
                _refused_parameter(e)
                and self._good_steps > 0
                or not all(torch.isfinite(v).all() for _, v in pyro.get_param_store().items())
            ):
                outcome.value = math.nan  # diverged: the caller names the step
                return
            if program.name is None:
                raise
            raise user_code_error(program.name, what, e, _failing_site(program, inputs)) from None

    # -- evaluation ---------------------------------------------------------------------
    def elbo(
        self,
        program: Program,
        x: Data,
        *,
        num_particles: int = 1,
        repeats: int = 1,
        seed: int = 0,
        max_rows: int | None = None,
    ) -> tuple[float, float]:
        """ELBO of the whole data ``x`` at the current parameters: (mean, standard error),
        drawn from ``seed`` without disturbing the global random state.

        A vectorisable program takes ``repeats`` independent estimates of ``num_particles``
        particles each (vectorised); the standard error comes from their spread. Any other
        program is evaluated as it trained, one particle per call, ``num_particles * repeats``
        times, and the standard error is that of their mean. An estimator with no randomness
        (enumeration with point globals) has error 0; one estimate gives NaN.

        With ``max_rows``, a program that scales its data plate (``minibatch``) is evaluated on
        a fresh random subset of that many rows per call, scaled to all of them.
        """
        rng = pyro.util.get_rng_state()  # leave the training stream untouched
        pyro.set_rng_seed(seed)
        n = num_rows(x)
        if program.vectorize_particles:  # in groups that fit in memory (one where all do)
            groups = particle_groups(num_particles, x, max_rows if program.minibatch else None)
            loss, calls = make_elbo(program, num_particles // groups), repeats * groups
        else:
            groups, loss, calls = 1, make_elbo(program, 1), num_particles * repeats
        subsets = [
            row_subset(n, max_rows if program.minibatch else None, derive(seed, i))
            for i in range(calls)
        ]
        values = np.full(calls, math.nan)  # stays NaN where the parameters are not finite
        inputs = program.inputs(x, n)
        try:
            with (
                torch.no_grad(),
                self._user_code(program, "evaluating the ELBO", diverged_ok=True, inputs=inputs),
            ):
                values = np.array(
                    [
                        -loss.loss(program.model, program.guide, *args, **kw)
                        for args, kw in (
                            inputs if rows is None else program.inputs(self.take(x, rows), n)
                            for rows in subsets
                        )
                    ]
                )
        finally:
            pyro.util.set_rng_state(rng)
        values = values.reshape(-1, groups).mean(1)  # an estimate per repeat (vectorised)
        err = values.std(ddof=1) / math.sqrt(len(values)) if len(values) > 1 else float("nan")
        return float(values.mean()), float(err)

    def trace_joint(
        self,
        program: Program,
        data: Data,
        *,
        seed: int,
        n_total: int | None = None,
        fixed: dict[str, np.ndarray] | None = None,
        predictive: bool = False,
    ):
        """One joint draw of the guide and the model at the current parameters, as plain
        sites (:func:`probdiff.backends.pyro_traces.trace_joint`), drawn from ``seed``
        without disturbing the global random state."""
        from probdiff.backends import pyro_traces as pt

        values = pt.as_values(fixed, self.dtype, self.device) if fixed else None
        inputs = program.inputs(data, n_total or num_rows(data))
        with (
            pt.seeded(seed),
            self._user_code(program, "a joint trace of model and guide", inputs=inputs),
        ):
            return pt.trace_joint(
                program, data, n_total=n_total, fixed=values, predictive=predictive
            )

    def vectorizes(self, program: Program, data: Data, seed: int = 0) -> bool:
        """Whether the program may evaluate ELBO particles vectorised: checked on ``data``
        (:func:`probdiff.backends.pyro_traces.vectorizes`); never under enumeration."""
        from probdiff.backends import pyro_traces as pt

        if program.elbo == "enum":
            return False
        with pt.seeded(seed):
            return pt.vectorizes(program, data)

    def trace_forward(
        self, program: Program, data: Data, *, seed: int, fixed: dict[str, np.ndarray]
    ):
        """The model run forwards with ``fixed`` latent values (observed sites drawn), as
        plain sites (:func:`probdiff.backends.pyro_traces.trace_forward`)."""
        from probdiff.backends import pyro_traces as pt

        with (
            pt.seeded(seed),
            self._user_code(
                program, "a forward run of the model", inputs=program.inputs(data, num_rows(data))
            ),
        ):
            return pt.trace_forward(program, data, pt.as_values(fixed, self.dtype, self.device))

    def guide_draws(
        self, program: Program, x: Data, *, num_samples: int, seed: int = 0
    ) -> dict[str, np.ndarray]:
        """``num_samples`` draws of every sample site of the guide at the current parameters."""
        pyro.set_rng_seed(seed)
        args, kw = program.inputs(x, num_rows(x))
        draws: dict[str, list] = {}
        with torch.no_grad():
            for _ in range(num_samples):
                tr = pyro.poutine.trace(program.guide).get_trace(*args, **kw)
                for name, site in tr.nodes.items():
                    if (
                        site["type"] == "sample"
                        and not site["is_observed"]
                        and not site_is_subsample(site)
                    ):  # a plate's indices: not a latent
                        draws.setdefault(name, []).append(site["value"].detach().cpu().numpy())
        return {k: np.stack(v) for k, v in draws.items()}

    def log_weights(
        self, program: Program, x: Data, *, num_samples: int, seed: int = 0
    ) -> np.ndarray:
        """log p(x, z_s) - log q(z_s | x) for ``num_samples`` draws z_s of the guide, shape (S,).

        Each term is the program's ELBO estimator evaluated at one fixed guide draw (the guide
        replayed), so sites the ELBO enumerates are summed out exactly. These are the
        importance weights whose Pareto tail gives the PSIS k-hat of the guide
        (docs/equations.md (1.4)).
        """
        pyro.set_rng_seed(seed)
        loss = make_elbo(program, 1)
        args, kw = program.inputs(x, num_rows(x))
        # guide sites are draws here, not enumerated: drop their enumerate marks
        guide = pyro.poutine.infer_config(program.guide, lambda site: {"enumerate": None})
        out = []
        with torch.no_grad():
            for _ in range(num_samples):
                tr = pyro.poutine.trace(guide).get_trace(*args, **kw)
                out.append(
                    -loss.loss(program.model, pyro.poutine.replay(guide, trace=tr), *args, **kw)
                )
        return np.asarray(out)

    def local_log_weights(
        self, program: Program, x: Data, *, num_samples: int, seed: int = 0
    ) -> np.ndarray:
        """log p(x_n, z_s) - log q(z_s | x_n) per datum, shape (S, N), for models whose every
        site lies in the data plate (a VAE). Feeds IWAE_K and per-datum PSIS k-hat
        (docs/equations.md (1.2), (1.4))."""
        pyro.set_rng_seed(seed)
        n = num_rows(x)
        args, kw = program.inputs(x, n)
        out = np.empty((num_samples, n))
        with torch.no_grad():
            for s in range(num_samples):
                guide_trace = pyro.poutine.trace(program.guide).get_trace(*args, **kw)
                model_trace = pyro.poutine.trace(
                    pyro.poutine.replay(program.model, trace=guide_trace)
                ).get_trace(*args, **kw)
                total = torch.zeros(n, dtype=self.dtype, device=self.device)
                for trace, sign in ((model_trace, 1.0), (guide_trace, -1.0)):
                    trace.compute_log_prob()
                    for name, site in trace.nodes.items():
                        if site["type"] != "sample" or site_is_subsample(site):
                            continue
                        lp = site["log_prob"]
                        if lp.shape != (n,):
                            raise ProbdiffError(
                                f"per-datum weights need site {name!r} inside the "
                                f"data plate; its log-density has shape {tuple(lp.shape)}"
                            )
                        total = total + sign * lp
                out[s] = total.cpu().numpy()
        return out


def _refused_parameter(error: Exception) -> bool:
    """Pyro's validation refusing a distribution parameter (a scale of 0 or inf, a NaN): after
    good steps, the optimiser has driven the parameters out of range."""
    return isinstance(error, ValueError) and str(error).startswith("Expected parameter")


def _failing_site(program: Program, inputs) -> tuple[str, tuple] | None:
    """The last sample site reached before a user's program fails, found after the fact (no
    bookkeeping on the hot path): the guide, then the model against its draws, and then the
    model alone (an autoguide traces it out of sight, behind ``poutine.block``), are run
    again under a :class:`SiteTracker`."""
    if inputs is None:
        return None
    args, kw = inputs
    attempts = (
        lambda: pyro.poutine.replay(
            program.model, trace=pyro.poutine.trace(program.guide).get_trace(*args, **kw)
        )(*args, **kw),
        lambda: program.model(*args, **kw),
    )
    for attempt in attempts:
        tracker = SiteTracker()
        try:
            with torch.no_grad(), tracker:
                attempt()
        except Exception:
            if tracker.last is not None:
                return tracker.last
    return None


class _Outcome:
    value: float = math.nan


def _to_cpu(state):
    if isinstance(state, torch.Tensor):
        return state.detach().cpu()
    if isinstance(state, dict):
        return {k: _to_cpu(v) for k, v in state.items()}
    return state


def _to_device(state, device):
    if isinstance(state, torch.Tensor):
        return state.to(device)
    if isinstance(state, dict):
        return {k: _to_device(v, device) for k, v in state.items()}
    return state
