"""NumPyro (JAX) backend: SVI with NumPyro's ELBO classes, the same contract as ``PyroBackend``.

State is functional (an ``SVIState``: optimiser state plus an explicit rng key) and lives on the
backend object instead of a global parameter store. The update is jit-compiled once per
``n_total`` (closed over, since it sets the python-float plate scale that enumeration needs).

float64: ``NumPyroBackend(dtype="float64")`` calls ``jax.config.update("jax_enable_x64", True)``
before creating any array. That switch is process-wide (JAX has no per-object precision) and is
never switched off here; a float32 backend stays float32 under it, because its data, the twins'
constants and its parameter state all carry explicit dtypes (see ``_init``).

Differences from ``PyroBackend``: ``start`` creates the parameters at once (one traced call on
``x``), where Pyro creates them at the first step; ``set_params`` restarts Adam's moments and
keeps the rng key; the random stream is JAX's, so Monte Carlo estimates agree with Pyro's in
distribution, not draw for draw.
"""

from __future__ import annotations

import contextlib
import math

import jax
import jax.numpy as jnp
import numpy as np
from jax import random
from numpyro import handlers
from numpyro.infer import SVI, Trace_ELBO, TraceEnum_ELBO, TraceMeanField_ELBO
from numpyro.infer.util import log_density
from numpyro.optim import ClippedAdam
from numpyro.primitives import Messenger

from probdiff.errors import ProbdiffError, user_code_error
from probdiff.program import (
    Data,
    Program,
    init_rows,
    lazy_array,
    map_arrays,
    num_rows,
    particle_groups,
    row_subset,
    take_rows,
)
from probdiff.seeds import derive

_ELBOS = {"trace": Trace_ELBO, "enum": TraceEnum_ELBO, "meanfield": TraceMeanField_ELBO}
_DTYPES = {"float32": jnp.float32, "float64": jnp.float64}


def data_parallel(device: jax.Device, count: int):
    """(row sharding, replicated sharding) over ``count`` devices of ``device``'s platform
    (None, None for one): a one-axis mesh ``data``. CPU devices beyond the first come from
    XLA_FLAGS=--xla_force_host_platform_device_count=N, set before JAX starts."""
    if count == 1:
        return None, None
    if not isinstance(count, int) or count < 1:
        raise ProbdiffError(f"--devices must be a positive integer, got {count!r}")
    from jax.sharding import Mesh, NamedSharding, PartitionSpec

    available = jax.devices(device.platform)
    if len(available) < count:
        hint = (
            " (for CPU devices set XLA_FLAGS=--xla_force_host_platform_device_count="
            f"{count} before starting)"
            if device.platform == "cpu"
            else ""
        )
        raise ProbdiffError(
            f"--devices {count} asked for, but JAX sees {len(available)} "
            f"{device.platform} device(s){hint}"
        )
    mesh = Mesh(np.array(available[:count]), ("data",))
    return NamedSharding(mesh, PartitionSpec("data")), NamedSharding(mesh, PartitionSpec())


def jax_device(device: str) -> jax.Device:
    """``cpu`` or ``cuda`` (``cuda:N``) as a JAX device; a clear error where no GPU is visible."""
    if device == "cpu":
        return jax.devices("cpu")[0]
    if not device.startswith("cuda"):
        raise ProbdiffError(f"unknown device {device!r}: use cpu or cuda")
    try:
        gpus = jax.devices("gpu")
    except RuntimeError:
        gpus = []
    suffix = device[len("cuda") :]
    if suffix and not (suffix[0] == ":" and suffix[1:].isdigit()):
        raise ProbdiffError(f"unknown device {device!r}: use cpu, cuda or cuda:N")
    index = int(suffix[1:]) if suffix else 0
    if index >= len(gpus):
        raise ProbdiffError(
            f"--device {device} asked for, but JAX sees {len(gpus)} GPU device(s) "
            "here (is the CUDA build of jaxlib installed?)"
        )
    return gpus[index]


def make_elbo(program: Program, num_particles: int | None = None):
    """The NumPyro ELBO object that ``program.elbo`` names."""
    particles = num_particles or program.num_particles
    if program.elbo == "enum":
        return TraceEnum_ELBO(num_particles=particles, max_plate_nesting=program.max_plate_nesting)
    return _ELBOS[program.elbo](num_particles=particles)


class SiteTracker(Messenger):
    """Remembers the last sample site a program reached, to name it when user code fails."""

    def __init__(self) -> None:
        super().__init__(fn=None)
        self.last: tuple[str, tuple] | None = None

    def postprocess_message(self, msg) -> None:
        if msg["type"] == "sample":
            self.last = (msg["name"], tuple(getattr(msg.get("value"), "shape", ())))


@contextlib.contextmanager
def user_code(program: Program, what: str):
    """Run (and trace) a program's code; a failure of a user's program becomes one line
    naming the last site it reached."""
    tracker = SiteTracker()
    try:
        with tracker:
            yield
    except ProbdiffError:
        raise
    except Exception as e:
        if program.name is None:
            raise
        raise user_code_error(program.name, what, e, tracker.last) from None


class NumPyroBackend:
    """Holds one NumPyro SVI object and its state for the fit in progress."""

    name = "numpyro"

    def __init__(self, device: str = "cpu", dtype: str = "float32", devices: int = 1):
        if dtype not in _DTYPES:
            raise ProbdiffError(f"unknown dtype {dtype!r}: use one of {', '.join(_DTYPES)}")
        self.dtype_name = dtype
        self._ensure_x64()
        self.device = jax_device(device)
        self._rows, self._replicated = data_parallel(self.device, devices)
        self.dtype = _DTYPES[dtype]
        self._program: Program | None = None
        self._svi: SVI | None = None
        self._state = None
        self._lr = 1e-3
        self._updates: dict = {}
        self._inits: dict = {}
        self._evals: dict = {}
        from probdiff.backends.numpyro_traces import JointTraces

        self._joint = JointTraces()

    def _ensure_x64(self) -> None:
        """float64 needs JAX's process-wide x64 switch (set again if someone turned it off)."""
        if self.dtype_name == "float64" and not jax.config.jax_enable_x64:
            jax.config.update("jax_enable_x64", True)

    # -- data ---------------------------------------------------------------------------
    def array(self, x: Data) -> Data:
        """``x`` (one array or named arrays) on the device: floating point in the backend's
        dtype; integers and booleans keep their kind (JAX's default integer width). Rows on
        disk stay there, put on the device as they are read."""
        self._ensure_x64()

        def put(a):
            a = np.asarray(a)
            return jax.device_put(
                a if a.dtype.kind in "iub" else a.astype(self.dtype_name), self.device
            )

        return lazy_array(x, put)

    def take(self, x: Data, idx: np.ndarray) -> Data:
        return take_rows(x, jax.device_put(np.asarray(idx), self.device))

    def _split(self, batch: Data) -> Data:
        """A training batch split over the devices by rows (each device a shard; the step's
        sums over rows become all-reduces)."""
        count = self._rows.mesh.devices.size
        if num_rows(batch) % count:
            raise ProbdiffError(
                f"a batch of {num_rows(batch)} rows does not split over {count} devices: "
                f"use a --batch-size divisible by {count}"
            )
        return map_arrays(lambda a: jax.device_put(a, self._rows), batch)

    # -- optimisation -------------------------------------------------------------------
    def start(
        self, program: Program, x: jax.Array, lr: float, seed: int, clip_norm: float = 10.0
    ) -> None:
        """Fresh SVI state: parameters from one traced call of the guide and model on ``x``.

        Adam with each gradient entry clipped to [-clip_norm, clip_norm] (as Pyro's ClippedAdam).
        """
        self._ensure_x64()
        self._program, self._lr = program, lr
        optim = ClippedAdam(step_size=lr, clip_norm=clip_norm)
        self._svi = SVI(program.model, program.guide, optim, loss=make_elbo(program))
        self._updates, self._inits = {}, {}
        self._state = self._init(random.PRNGKey(seed), init_rows(x))

    def _init(self, rng_key: jax.Array, x: jax.Array, init_params: dict | None = None):
        """``SVI.init`` on this device, with parameters kept in the backend's dtype.

        Under x64 some NumPyro transforms (the simplex's stick-breaking, both ways) return
        float64 for float32 input; casting the state and the constrained values keeps a float32
        program in float32 whatever the process-wide switch says.
        """
        # jit-compiled: run eagerly, a long model (a diffusion chain) compiles op by op
        n = num_rows(x)
        key = (id(self._svi), n)
        init = self._inits.get(key)
        if init is None or init[0] is not self._svi:
            svi, program = self._svi, self._program

            def init_fn(k, data, params):
                args, kwargs = program.inputs(data, n)
                return svi.init(k, *args, init_params=params, **kwargs)

            init = self._inits[key] = (svi, jax.jit(init_fn))
        with jax.default_device(self.device), user_code(self._program, "its first call"):
            state = init[1](rng_key, x, init_params)
        constrain = self._svi.constrain_fn
        self._svi.constrain_fn = lambda params: self._cast(constrain(params))
        return jax.device_put(self._cast(state), self.device)  # committed like step's outputs

    def _cast(self, tree):
        def cast(a):
            return a.astype(self.dtype) if jnp.issubdtype(a.dtype, jnp.floating) else a

        return jax.tree.map(cast, tree)

    def step(self, batch: jax.Array, n_total: int) -> float:
        """One gradient step; returns the loss, an estimate of -ELBO of the whole data set."""
        self._require_started()
        update = self._updates.get(n_total)
        if update is None:
            svi, program = self._svi, self._program

            def update_fn(state, b):
                args, kwargs = program.inputs(b, n_total)
                return svi.update(state, *args, **kwargs)

            update = self._updates[n_total] = jax.jit(update_fn)
        with jax.default_device(self.device), user_code(self._program, "a training step"):
            if self._rows is None:
                self._state, loss = update(self._state, batch)
            else:  # every device holds the state for the step; the fit keeps it on one
                state, loss = update(
                    jax.device_put(self._state, self._replicated), self._split(batch)
                )
                self._state = jax.device_put(state, self.device)
        return float(loss)

    def params(self) -> dict[str, np.ndarray]:
        """Constrained values of every parameter, as NumPy arrays.

        A parameter holding a tree of arrays (a Flax module's ``name$params``) is flattened to
        one entry per leaf, named by its path joined with ``.``: ``encoder$params.Dense_0.kernel``.
        """
        self._require_started()
        return {k: np.array(v) for k, v in _flatten(self._svi.get_params(self._state)).items()}

    def set_params(self, program: Program, x: jax.Array, params: dict[str, np.ndarray]) -> None:
        """Re-initialise the program's parameters at the constrained values ``params``.

        Names the program does not have are ignored, missing ones keep their current values.
        The rng key is kept; Adam's moments restart (as in Pyro, where a new tensor in the
        parameter store gets a fresh optimiser state). Starts SVI first if ``program`` is not the
        one in progress.
        """
        if self._svi is None or program is not self._program:
            self.start(program, x, lr=self._lr, seed=0)
        self._ensure_x64()
        current = self._svi.get_params(self._state)
        flat = {k: jnp.asarray(np.asarray(params.get(k, v))) for k, v in _flatten(current).items()}
        init = self._cast(_unflatten(flat, current))
        rng_key = self._state.rng_key
        self._state = self._init(rng_key, init_rows(x), init_params=init)._replace(rng_key=rng_key)

    def state_dict(self) -> dict:
        """NumPy-only, picklable: unconstrained parameters, Adam's moments, step, rng key."""
        self._require_started()
        step, opt_state = self._state.optim_state
        unconstrained = _flatten(self._svi.optim.get_params(self._state.optim_state))
        names = list(unconstrained)  # in the tree's leaf order, as the optimiser state
        leaves = [np.array(v) for v in jax.tree.leaves(opt_state)]
        if len(leaves) != 3 * len(names) or not all(
            np.array_equal(leaves[3 * i], unconstrained[n]) for i, n in enumerate(names)
        ):
            raise ProbdiffError(
                "unexpected optimiser state layout: expected Adam's (x, m, v) "
                f"per parameter for {names}, got {len(leaves)} arrays"
            )
        return {
            "params": dict(zip(names, leaves[0::3])),
            "optim": {
                "step": np.array(step),
                "exp_avg": dict(zip(names, leaves[1::3])),
                "exp_avg_sq": dict(zip(names, leaves[2::3])),
            },
            "mutable_state": jax.tree.map(np.array, self._state.mutable_state),
            "rng": np.array(self._state.rng_key),
        }

    def load_state_dict(self, state: dict) -> None:
        """Restore :meth:`state_dict` output; call :meth:`start` with the same program first."""
        self._require_started()
        self._ensure_x64()
        old_step, opt_state = self._state.optim_state
        treedef = jax.tree.structure(opt_state)
        names = list(_flatten(self._svi.optim.get_params(self._state.optim_state)))
        if sorted(names) != sorted(state["params"]):
            raise ProbdiffError(
                f"checkpoint has parameters {sorted(state['params'])}, which do "
                "not match the program started here"
            )
        optim = state["optim"]
        leaves = [
            a
            for n in names
            for a in (state["params"][n], optim["exp_avg"][n], optim["exp_avg_sq"][n])
        ]
        if treedef.num_leaves != len(leaves):
            raise ProbdiffError(
                f"checkpoint has parameters {names}, which do not match the program started here"
            )
        put = lambda a: jax.device_put(np.asarray(a), self.device)  # noqa: E731
        self._state = self._state._replace(
            # keeps the counter weakly typed, as SVI makes it (device_put would not): no recompile
            optim_state=(
                old_step * 0 + int(optim["step"]),
                jax.tree.unflatten(treedef, [put(a) for a in leaves]),
            ),
            mutable_state=jax.tree.map(put, state["mutable_state"]),
            rng_key=put(state["rng"]),
        )

    # -- evaluation ---------------------------------------------------------------------
    def elbo(
        self,
        program: Program,
        x: jax.Array,
        *,
        num_particles: int = 1,
        repeats: int = 1,
        seed: int = 0,
        max_rows: int | None = None,
    ) -> tuple[float, float]:
        """ELBO of the whole data ``x`` at the current parameters: (mean, standard error).

        ``repeats`` independent estimates of ``num_particles`` particles each (keys split from
        ``PRNGKey(seed)``) give the standard error; an estimator with no randomness
        (enumeration with point globals) has error 0, and one repeat gives NaN. With
        ``max_rows``, a program that scales its data plate is evaluated on a fresh random
        subset of that many rows per repeat, scaled to all of them.
        """
        self._require_started()
        self._ensure_x64()
        params = self._svi.get_params(self._state)
        n = num_rows(x)
        rows = n if max_rows is None or not program.minibatch else min(n, max_rows)
        # calls per repeat that fit in memory
        groups = particle_groups(num_particles, x, max_rows if program.minibatch else None)
        subsets = [
            row_subset(n, max_rows if program.minibatch else None, derive(seed, i))
            for i in range(repeats * groups)
        ]
        key = (id(program), num_particles // groups, rows, n)
        cached = self._evals.get(key)
        if cached is None or cached[0] is not program:
            loss = make_elbo(program, num_particles // groups)

            def elbo_fn(k, p, data):
                args, kwargs = program.inputs(data, n)
                return -loss.loss(k, p, program.model, program.guide, *args, **kwargs)

            cached = self._evals[key] = (program, jax.jit(elbo_fn))
        with jax.default_device(self.device), user_code(program, "evaluating the ELBO"):
            keys = random.split(random.PRNGKey(seed), repeats * groups)
            values = (
                np.array(
                    [
                        float(cached[1](k, params, x if idx is None else self.take(x, idx)))
                        for k, idx in zip(keys, subsets)
                    ]
                )
                .reshape(repeats, groups)
                .mean(1)
            )
        err = values.std(ddof=1) / math.sqrt(repeats) if repeats > 1 else float("nan")
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
        sites (:func:`probdiff.backends.numpyro_traces.trace_joint`), from ``PRNGKey(seed)``."""
        self._require_started()
        values = {k: jnp.asarray(v) for k, v in fixed.items()} if fixed else None
        with (
            jax.default_device(self.device),
            user_code(program, "a joint trace of model and guide"),
        ):
            out = self._joint(
                program,
                self._svi.get_params(self._state),
                data,
                random.PRNGKey(seed),
                n_total=n_total,
                fixed=values,
                predictive=predictive,
            )
        return tuple(
            None if group is None else [_as_numpy(site) for site in group] for group in out
        )

    def vectorizes(self, program: Program, data: Data, seed: int = 0) -> bool:
        """NumPyro evaluates particles with ``vmap``, which is exact for any program."""
        return True

    def trace_forward(
        self, program: Program, data: Data, *, seed: int, fixed: dict[str, np.ndarray]
    ):
        """The model run forwards with ``fixed`` latent values (observed sites drawn), as
        plain sites (:func:`probdiff.backends.numpyro_traces.trace_forward`)."""
        from probdiff.backends import numpyro_traces as nt

        self._require_started()
        values = {k: jnp.asarray(v) for k, v in fixed.items()}
        with jax.default_device(self.device), user_code(program, "a forward run of the model"):
            return [
                _as_numpy(site)
                for site in nt.trace_forward(
                    program, self._svi.get_params(self._state), data, random.PRNGKey(seed), values
                )
            ]

    def guide_draws(
        self, program: Program, x: jax.Array, *, num_samples: int, seed: int = 0
    ) -> dict[str, np.ndarray]:
        """``num_samples`` draws of every sample site of the guide at the current parameters."""
        self._require_started()
        n = num_rows(x)

        def draw(key, params, data):
            tr = _guide_trace(program, key, params, data, n)
            return {
                name: site["value"]
                for name, site in tr.items()
                if site["type"] == "sample" and not site["is_observed"]
            }

        with jax.default_device(self.device):
            keys = random.split(random.PRNGKey(seed), num_samples)
            draws = jax.jit(jax.vmap(draw, in_axes=(0, None, None)))(
                keys, self._svi.get_params(self._state), x
            )
        return {k: np.asarray(v) for k, v in draws.items()}

    def log_weights(
        self, program: Program, x: jax.Array, *, num_samples: int, seed: int = 0
    ) -> np.ndarray:
        """log p(x, z_s) - log q(z_s | x) for ``num_samples`` draws z_s of the guide, shape (S,).

        Every sample site of the guide is drawn (sites it marks for enumeration too) and held
        fixed in the model; discrete sites that only the model has, and marks ``enumerate``,
        are summed out exactly (funsor), as the ELBO sums them. The mean of these weights is
        the program's ELBO; their Pareto tail gives the PSIS k-hat of the guide
        (docs/equations.md (1.1), (1.4)).
        """
        from numpyro.contrib.funsor import enum  # funsor: lazily
        from numpyro.contrib.funsor import log_density as enum_log_density

        self._require_started()
        n = num_rows(x)
        first_dim = -program.max_plate_nesting - 1

        def weight(key, params, data):
            tr = _guide_trace(program, key, params, data, n)
            drawn = {
                name: site["value"]
                for name, site in tr.items()
                if site["type"] == "sample" and not site["is_observed"]
            }
            values = {**params, **drawn}
            args, kwargs = program.inputs(data, n)
            log_q, _ = log_density(program.guide, args, kwargs, values)
            # the guide's draws are values, not variables to sum over
            model = handlers.infer_config(
                program.model, lambda msg: {"enumerate": None} if msg["name"] in drawn else {}
            )
            log_p, _ = enum_log_density(
                enum(model, first_available_dim=first_dim), args, kwargs, values
            )
            return log_p - log_q

        with jax.default_device(self.device):
            keys = random.split(random.PRNGKey(seed), num_samples)
            values = jax.jit(jax.vmap(weight, in_axes=(0, None, None)))(
                keys, self._svi.get_params(self._state), x
            )
        return np.asarray(values)

    def local_log_weights(
        self, program: Program, x: jax.Array, *, num_samples: int, seed: int = 0
    ) -> np.ndarray:
        """log p(x_n, z_s) - log q(z_s | x_n) per datum, shape (S, N), for models whose every
        sample site lies in the data plate (a VAE). Feeds IWAE_K and per-datum PSIS k-hat
        (docs/equations.md (1.2), (1.4)).

        Each of the ``num_samples`` draws runs the guide once (keys split from
        ``PRNGKey(seed)``); its sample sites (observed ones too, so a guide conditioned on z
        works) are substituted into the model, and the unscaled per-site log densities (the
        plate's ``n_total`` scale is not applied, as in ``PyroBackend``) are summed per datum.
        """
        self._require_started()
        self._ensure_x64()
        n = num_rows(x)

        def per_datum(tr) -> jax.Array:
            total = jnp.zeros(n, dtype=self.dtype)
            for name, site in tr.items():
                if site["type"] != "sample":
                    continue
                lp = site["fn"].log_prob(site["value"])
                if lp.shape != (n,):
                    raise ProbdiffError(
                        f"per-datum weights need site {name!r} inside the data "
                        f"plate; its log-density has shape {tuple(lp.shape)}"
                    )
                total = total + lp
            return total

        def weight(key, params, data):
            guide_tr = _guide_trace(program, key, params, data, n)
            drawn = {
                name: site["value"] for name, site in guide_tr.items() if site["type"] == "sample"
            }
            model = handlers.substitute(handlers.substitute(program.model, data=params), data=drawn)
            args, kwargs = program.inputs(data, n)
            model_tr = handlers.trace(handlers.seed(model, key)).get_trace(*args, **kwargs)
            return per_datum(model_tr) - per_datum(guide_tr)

        with jax.default_device(self.device):
            keys = random.split(random.PRNGKey(seed), num_samples)
            values = jax.jit(jax.vmap(weight, in_axes=(0, None, None)))(
                keys, self._svi.get_params(self._state), x
            )
        return np.asarray(values, dtype=float)

    def _require_started(self) -> None:
        if self._svi is None:
            raise ProbdiffError(
                "the NumPyro backend has no program yet: call start() or set_params() first"
            )


def _as_numpy(site):
    """A site with NumPy value and log density."""
    from dataclasses import replace

    return replace(
        site,
        value=np.asarray(site.value),
        log_prob=None if site.log_prob is None else np.asarray(site.log_prob),
    )


def _guide_trace(program: Program, key, params, data, n_total: int) -> dict:
    """One draw of the guide at ``params``: its trace (no enumeration is active here)."""
    seeded = handlers.seed(handlers.substitute(program.guide, data=params), key)
    args, kwargs = program.inputs(data, n_total)
    return handlers.trace(seeded).get_trace(*args, **kwargs)


def _flatten(params: dict) -> dict:
    """Name -> array, a tree-valued parameter split into its leaves (``name.key.key``), in the
    leaf order of ``jax.tree`` (the order of the optimiser's state)."""
    out = {}
    for path, leaf in jax.tree_util.tree_flatten_with_path(params)[0]:
        out[".".join(str(getattr(k, "key", getattr(k, "idx", k))) for k in path)] = leaf
    return out


def _unflatten(flat: dict, like: dict) -> dict:
    """Inverse of :func:`_flatten` into the structure of ``like``."""
    paths, treedef = jax.tree_util.tree_flatten_with_path(like)
    names = [".".join(str(getattr(k, "key", getattr(k, "idx", k))) for k in p) for p, _ in paths]
    return jax.tree_util.tree_unflatten(treedef, [flat[n] for n in names])
