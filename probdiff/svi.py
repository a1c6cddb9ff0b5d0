"""The fitting loop: minibatch SVI with restarts, a progress bar, checkpoints and resumption.

Backend-neutral: it talks to a backend (:mod:`probdiff.backends`) through ``array``, ``take``,
``start``, ``step``, ``params``, ``set_params``, ``state_dict``, ``load_state_dict`` and
``elbo``, and to a model family only through a ``make_program(seed)`` factory.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from tqdm.auto import tqdm

from probdiff.data import Minibatches
from probdiff.data.rows import is_rows
from probdiff.errors import ProbdiffError
from probdiff.program import EVAL_ROWS, Data, Program, num_rows
from probdiff.seeds import MAX_SEED, derive

MAX_STEPS = 10**9


@dataclass
class SVISettings:
    """Settings of one fit; ``restarts`` fits from different seeds keep the best final ELBO."""

    steps: int = 1000
    lr: float = 0.05
    batch_size: int | None = None
    seed: int = 0
    restarts: int = 1
    checkpoint_every: int = 250
    eval_particles: int = 16
    progress: bool = True
    # held-out ELBO every this many steps (None: steps // 50, at least 10; and after the last)
    eval_every: int | None = None
    clip_norm: float = 10.0  # ClippedAdam: each gradient entry clipped to [-clip_norm, clip_norm]

    def validate(self) -> None:
        _integer("--steps", self.steps, 0, MAX_STEPS)
        _integer("--seed", self.seed, 0, MAX_SEED)
        _integer("--restarts", self.restarts, 1, 1000)
        _integer("--checkpoint-every", self.checkpoint_every, 0)
        _integer("--eval-particles", self.eval_particles, 1)
        if self.batch_size is not None:
            _integer("--batch-size", self.batch_size, 1)
        if self.eval_every is not None:
            _integer("--eval-every", self.eval_every, 0)
        for flag, value in (("--lr", self.lr), ("--clip-norm", self.clip_norm)):
            if (
                isinstance(value, bool)
                or not isinstance(value, (int, float))
                or not (value > 0 and math.isfinite(value))
            ):
                raise ProbdiffError(f"{flag} must be a positive number, got {value!r}")

    @property
    def test_interval(self) -> int:
        """Steps between held-out ELBO evaluations (0: none): by default at most 50 points,
        never closer than 10 steps (a short fit is not slowed by evaluating every step)."""
        return max(10, self.steps // 50) if self.eval_every is None else self.eval_every


def _integer(flag: str, value, low: int, high: int | None = None) -> None:
    """A one-line error unless ``value`` is an integer in ``low..high``."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise ProbdiffError(f"{flag} must be an integer, got {value!r}")
    if value < low or (high is not None and value > high):
        bound = f">= {low}" if high is None else f"in {low}..{high}"
        raise ProbdiffError(f"{flag} must be {bound}, got {value}")


@dataclass
class SVIResult:
    """The chosen restart's parameters and every restart's per-datum ELBO trace; with held-out
    data, every restart's held-out trace as rows (step, ELBO per datum)."""

    params: dict[str, np.ndarray]
    traces: list[np.ndarray]
    final_elbos: list[float]
    best: int
    seconds: float
    steps: int
    test_traces: list[np.ndarray]


def run_svi(
    backend,
    make_program: Callable[[int], Program],
    x: Data,
    settings: SVISettings,
    save: Callable[[dict], None] | None = None,
    resume: dict | None = None,
    x_test: Data | None = None,
    display_offset: float = 0.0,
    eval_program: Callable[[Program], Program] | None = None,
) -> SVIResult:
    """Fit ``settings.restarts`` times; return the restart with the highest full-data ELBO
    (estimated with ``eval_particles`` particles on up to EVAL_ROWS rows; NaN, and not
    estimated, for a single restart).

    The trace records -loss / N per step: the per-datum ELBO estimate of the whole data set
    (an unbiased minibatch estimate when batching). With ``x_test``, the held-out per-datum
    ELBO (one particle, the same seed each time: common random numbers make the curve smooth)
    is recorded every ``settings.test_interval`` steps and at the end, by ``eval_program(program)``
    when given (an estimator with lower variance sharing the parameters). The progress bar shows
    the ELBO plus ``display_offset`` (a family's log-Jacobian: nats of the data); the traces
    stay in the model's units. ``save`` receives a picklable state every
    ``checkpoint_every`` steps and at the end of each restart; passing that state back as
    ``resume`` continues exactly where it stopped, also with more ``steps`` than before.
    """
    settings.validate()
    n = num_rows(x)
    data = backend.array(x)
    test = backend.array(x_test) if x_test is not None and num_rows(x_test) else None
    state = resume or {"restarts": [], "seconds": 0.0}
    entries: list = state["restarts"]
    for r in range(settings.restarts):
        entry = entries[r] if r < len(entries) else None
        if entry is not None and entry["finished"] and len(entry["trace"]) >= settings.steps:
            continue
        seed = derive(settings.seed, 1000 * r)
        program = make_program(seed)
        if is_rows(x) and not program.minibatch:
            raise ProbdiffError(
                "streamed data trains in minibatches: the model and guide need an n_total "
                "keyword (a subsample plate scaled to the whole data)"
            )

        def checkpoint(inner: dict, r=r) -> None:
            if save:
                entries[r:] = [{**inner, "finished": False}]
                save(state)

        t0 = time.perf_counter()
        inner = _one_restart(
            backend,
            program,
            data,
            n,
            settings,
            seed,
            r,
            entry,
            checkpoint,
            test,
            display_offset,
            eval_program(program) if eval_program else program,
        )
        state["seconds"] += time.perf_counter() - t0
        final = math.nan  # with one restart there is nothing to choose: no extra estimate
        if settings.restarts > 1:
            backend.set_params(program, data, inner["params"])
            final, _ = backend.elbo(
                program, data, num_particles=settings.eval_particles, seed=seed, max_rows=EVAL_ROWS
            )
            final /= n
        entries[r:] = [{**inner, "finished": True, "final": final}]
        if save:
            save(state)
    finals = [e["final"] for e in entries[: settings.restarts]]
    best = int(np.nanargmax(finals)) if np.isfinite(finals).any() else 0
    return SVIResult(
        params=entries[best]["params"],
        traces=[e["trace"] for e in entries],
        final_elbos=finals,
        best=best,
        seconds=state["seconds"],
        steps=settings.steps,
        test_traces=[e.get("test_trace", np.zeros((0, 2))) for e in entries],
    )


def _one_restart(
    backend,
    program,
    data,
    n,
    settings,
    seed,
    restart,
    entry,
    checkpoint,
    test=None,
    display_offset=0.0,
    evaluator=None,
) -> dict:
    batches = Minibatches(n, settings.batch_size, seed)
    backend.start(program, data, settings.lr, seed, clip_norm=settings.clip_norm)
    trace: list[float] = []
    test_trace: list[tuple[int, float]] = []
    if entry is not None:
        backend.set_params(program, data, entry["params"])
        backend.load_state_dict(entry["backend"])
        batches.load_state_dict(entry["batches"])
        trace = list(entry["trace"])
        test_trace = [tuple(row) for row in entry.get("test_trace", [])]
    every = settings.test_interval if test is not None else 0

    def held_out(step: int) -> None:
        """Append the held-out ELBO after ``step`` steps (once per step count)."""
        if test_trace and test_trace[-1][0] == step:
            return
        value, _ = backend.elbo(evaluator or program, test, num_particles=1, seed=derive(seed, 1))
        if not math.isfinite(value):
            bar.close()
            raise _diverged(value, step - 1, restart)
        test_trace.append((step, value / num_rows(test)))

    def snapshot() -> dict:
        params = backend.params()
        bad = sorted(k for k, v in params.items() if not np.isfinite(v).all())
        if bad:  # a checkpoint never holds what it could not resume from
            bar.close()
            raise _diverged(
                math.nan, len(trace), restart, f"parameters {', '.join(bad[:3])} are not finite"
            )
        return {
            "params": params,
            "backend": backend.state_dict(),
            "batches": batches.state_dict(),
            "trace": np.asarray(trace, dtype=float),
            "test_trace": np.asarray(test_trace, dtype=float).reshape(-1, 2),
        }

    bar = tqdm(
        total=settings.steps,
        initial=len(trace),
        disable=not settings.progress,
        desc=f"svi {restart + 1}/{settings.restarts}" if settings.restarts > 1 else "svi",
        unit="step",
        dynamic_ncols=True,
        leave=False,
    )
    for step in range(len(trace), settings.steps):
        idx = batches.next_batch()
        batch = data if batches.full_batch and not is_rows(data) else backend.take(data, idx)
        loss = backend.step(batch, n)  # NaN once parameters are not finite
        if not math.isfinite(loss):
            bar.close()
            raise _diverged(loss, step, restart)
        trace.append(-loss / n)
        if every and (step + 1) % every == 0:
            held_out(step + 1)
        if step % 10 == 0 or step == settings.steps - 1:
            bar.set_postfix_str(
                f"elbo/datum {np.mean(trace[-50:]) + display_offset:.4f}", refresh=False
            )
        bar.update(1)
        if settings.checkpoint_every and (step + 1) % settings.checkpoint_every == 0:
            checkpoint(snapshot())
    bar.close()
    if every and settings.steps:
        held_out(settings.steps)
    return snapshot()


def _diverged(value: float, step: int, restart: int, what: str | None = None) -> ProbdiffError:
    what = what or f"the ELBO became {value}"
    return ProbdiffError(
        f"diverged at step {step} (restart {restart + 1}): {what}. The run keeps "
        "its last checkpoint: continue with --resume and a lower --lr or "
        "--clip-norm, or check the data's scale"
    )
