"""Pyro (PyTorch) backend: SVI with Pyro's ELBO classes, on CPU or CUDA."""

from __future__ import annotations

import math

import numpy as np
import pyro
import torch
from pyro.infer import SVI, Trace_ELBO, TraceEnum_ELBO, TraceMeanField_ELBO
from pyro.optim import ClippedAdam
from pyro.poutine.util import site_is_subsample

from probdiff.errors import ProbdiffError
from probdiff.program import Program

_ELBOS = {"trace": Trace_ELBO, "enum": TraceEnum_ELBO, "meanfield": TraceMeanField_ELBO}


def torch_device(device: str) -> torch.device:
    """``cpu`` or ``cuda`` (``cuda:N``); a clear error where CUDA is asked for and absent."""
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ProbdiffError(f"--device {device} asked for, but torch sees no CUDA device here")
    if not (device == "cpu" or device.startswith("cuda")):
        raise ProbdiffError(f"unknown device {device!r}: use cpu or cuda")
    return torch.device(device)


def make_elbo(program: Program, num_particles: int | None = None):
    """The Pyro ELBO object that ``program.elbo`` names."""
    particles = num_particles or program.num_particles
    return _ELBOS[program.elbo](num_particles=particles, max_plate_nesting=program.max_plate_nesting,
                                vectorize_particles=particles > 1)


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
        self._optim: ClippedAdam | None = None

    # -- data ---------------------------------------------------------------------------
    def array(self, x: np.ndarray) -> torch.Tensor:
        """A copy of ``x`` as a tensor (never aliasing the caller's array, which steps would move)."""
        return torch.tensor(np.asarray(x), dtype=self.dtype, device=self.device)

    def take(self, x: torch.Tensor, idx: np.ndarray) -> torch.Tensor:
        return x[torch.as_tensor(idx, device=x.device)]

    # -- optimisation -------------------------------------------------------------------
    def start(self, program: Program, x: torch.Tensor, lr: float, seed: int,
              clip_norm: float = 10.0) -> None:
        """Fresh parameter store and optimiser; parameters are created by one trace of the guide and model."""
        pyro.clear_param_store()
        pyro.set_rng_seed(seed)
        self._program = program
        self._optim = ClippedAdam({"lr": lr, "clip_norm": clip_norm})
        self._svi = SVI(program.model, program.guide, self._optim, loss=make_elbo(program))
        self._create_params(program, x)

    def _create_params(self, program: Program, x: torch.Tensor) -> None:
        """Create every parameter now (Pyro would at the first step) by one traced call on the
        data (initialisers may look at it, e.g. ``x.var(0)``)."""
        kw = program.kwargs(x.shape[0])
        with torch.no_grad():
            guide_trace = pyro.poutine.trace(program.guide).get_trace(x, **kw)
            # the model runs against the guide's draws: improper sites (ordered means) cannot sample
            pyro.poutine.replay(program.model, trace=guide_trace)(x, **kw)

    def step(self, batch: torch.Tensor, n_total: int) -> float:
        """One gradient step; returns the loss, an estimate of -ELBO of the whole data set."""
        return float(self._svi.step(batch, **self._program.kwargs(n_total)))

    def params(self) -> dict[str, np.ndarray]:
        """Constrained values of every parameter, as NumPy arrays."""
        return {k: v.detach().cpu().numpy().copy() for k, v in pyro.get_param_store().items()}

    def set_params(self, program: Program, x: torch.Tensor, params: dict[str, np.ndarray]) -> None:
        """Create the program's parameters (one traced call) and overwrite them with ``params``."""
        store = pyro.get_param_store()
        self._create_params(program, x)
        for name, value in params.items():
            if name in store:
                store[name] = self.array(value)

    def state_dict(self) -> dict:
        store = pyro.get_param_store().get_state()
        params = {k: v.detach().cpu() for k, v in store["params"].items()}
        return {"params": params, "constraints": store["constraints"],
                "optim": _to_cpu(self._optim.get_state()) if self._optim else {},
                "rng": pyro.util.get_rng_state()}

    def load_state_dict(self, state: dict) -> None:
        pyro.get_param_store().set_state({
            "params": {k: v.to(self.device, self.dtype).detach().clone().requires_grad_()
                       for k, v in state["params"].items()},
            "constraints": state["constraints"]})
        self._optim.set_state(_to_device(state["optim"], self.device))
        pyro.util.set_rng_state(state["rng"])

    # -- evaluation ---------------------------------------------------------------------
    def elbo(self, program: Program, x: torch.Tensor, *, num_particles: int = 1,
             repeats: int = 1, seed: int = 0) -> tuple[float, float]:
        """ELBO of the whole data ``x`` at the current parameters: (mean, standard error),
        drawn from ``seed`` without disturbing the global random state.

        ``repeats`` independent estimates of ``num_particles`` particles each give the standard
        error; an estimator with no randomness (enumeration with point globals) has error 0.
        """
        rng = pyro.util.get_rng_state()  # leave the training stream untouched
        pyro.set_rng_seed(seed)
        loss = make_elbo(program, num_particles)
        try:
            with torch.no_grad():
                values = np.array([-loss.loss(program.model, program.guide, x,
                                              **program.kwargs(x.shape[0]))
                                   for _ in range(repeats)])
        finally:
            pyro.util.set_rng_state(rng)
        err = values.std(ddof=1) / math.sqrt(repeats) if repeats > 1 else float("nan")
        return float(values.mean()), float(err)


    def guide_draws(self, program: Program, x: torch.Tensor, *, num_samples: int,
                    seed: int = 0) -> dict[str, np.ndarray]:
        """``num_samples`` draws of every sample site of the guide at the current parameters."""
        pyro.set_rng_seed(seed)
        draws: dict[str, list] = {}
        with torch.no_grad():
            for _ in range(num_samples):
                tr = pyro.poutine.trace(program.guide).get_trace(x, **program.kwargs(x.shape[0]))
                for name, site in tr.nodes.items():
                    if site["type"] == "sample" and not site["is_observed"]:
                        draws.setdefault(name, []).append(site["value"].detach().cpu().numpy())
        return {k: np.stack(v) for k, v in draws.items()}


    def log_weights(self, program: Program, x: torch.Tensor, *, num_samples: int,
                    seed: int = 0) -> np.ndarray:
        """log p(x, z_s) - log q(z_s | x) for ``num_samples`` draws z_s of the guide, shape (S,).

        Each term is the program's ELBO estimator evaluated at one fixed guide draw (the guide
        replayed), so sites the ELBO enumerates are summed out exactly. These are the
        importance weights whose Pareto tail gives the PSIS k-hat of the guide.
        """
        pyro.set_rng_seed(seed)
        loss = make_elbo(program, 1)
        kw = program.kwargs(x.shape[0])
        # guide sites are draws here, not enumerated: drop their enumerate marks
        guide = pyro.poutine.infer_config(program.guide, lambda site: {"enumerate": None})
        out = []
        with torch.no_grad():
            for _ in range(num_samples):
                tr = pyro.poutine.trace(guide).get_trace(x, **kw)
                out.append(-loss.loss(program.model, pyro.poutine.replay(guide, trace=tr), x, **kw))
        return np.asarray(out)


    def local_log_weights(self, program: Program, x: torch.Tensor, *, num_samples: int,
                          seed: int = 0) -> np.ndarray:
        """log p(x_n, z_s) - log q(z_s | x_n) per datum, shape (S, N), for models whose every
        site lies in the data plate (a VAE). Feeds IWAE_K and per-datum PSIS k-hat."""
        pyro.set_rng_seed(seed)
        kw = program.kwargs(x.shape[0])
        n = x.shape[0]
        out = np.empty((num_samples, n))
        with torch.no_grad():
            for s in range(num_samples):
                guide_trace = pyro.poutine.trace(program.guide).get_trace(x, **kw)
                model_trace = pyro.poutine.trace(
                    pyro.poutine.replay(program.model, trace=guide_trace)).get_trace(x, **kw)
                total = torch.zeros(n, dtype=x.dtype, device=x.device)
                for trace, sign in ((model_trace, 1.0), (guide_trace, -1.0)):
                    trace.compute_log_prob()
                    for name, site in trace.nodes.items():
                        if site["type"] != "sample" or site_is_subsample(site):
                            continue
                        lp = site["log_prob"]
                        if lp.shape != (n,):
                            raise ProbdiffError(f"per-datum weights need site {name!r} inside the "
                                                f"data plate; its log-density has shape {tuple(lp.shape)}")
                        total = total + sign * lp
                out[s] = total.cpu().numpy()
        return out


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
