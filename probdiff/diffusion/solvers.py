"""Samplers for the reverse of an SDE (:mod:`probdiff.diffusion.sde`), docs/equations.md (4.10),
(4.11), (4.12), (4.13).

All integrate from t = 1 (x ~ prior) down to t = eps on N equal steps of dt = (1 - eps) / N at
t_i = 1 - i dt, i = 0..N-1, with a score s(x, t) ~ grad log p_t(x):

* ``euler_maruyama``: x <- x - [f - g^2 s] dt + g sqrt(dt) z;
* ``reverse_diffusion``: the reverse of the SDE's own discrete chain (DDPM / SMLD step);
* ``predictor_corrector``: a reverse-diffusion predictor, each step preceded by ``corrector``
  Langevin steps x <- x + tau s + sqrt(2 tau) z at fixed t with tau = 2 r (snr ||z|| / ||s||)^2
  (Song et al. 2021, Algorithms 4-5; r = alpha_i of the discrete chain for the VP family:
  VP, sub-VP and the chain's own schedule, here the exact exp(-int beta) over the step, which
  stays in (0, 1) on coarse grids; r = 1 for VE);
* ``probability_flow``: the ODE dx/dt = f - g^2 s / 2, fixed-step Euler or Heun, or adaptive
  RK45 (SciPy) to tolerance.

Stochastic samplers return the last step's mean (no noise on the last step). Each returns
(x at t = eps, {step: x} for the recorded steps, nfe), nfe = network evaluations.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from probdiff.diffusion import SOLVERS
from probdiff.diffusion.sde import SDE, VPSDE, ScoreFn, expand
from probdiff.errors import ProbdiffError


def _grid(n_steps: int, eps: float) -> tuple[list[float], float]:
    if n_steps < 1 or not 0 < eps < 1:
        raise ProbdiffError(f"a solver needs >= 1 steps and 0 < eps < 1, got {n_steps}, {eps}")
    dt = (1.0 - eps) / n_steps
    return [1.0 - i * dt for i in range(n_steps)], dt


def _t(x: torch.Tensor, t: float) -> torch.Tensor:
    return torch.full((len(x),), t, dtype=x.dtype, device=x.device)


def _noise(x, generator):
    return torch.randn(x.shape, generator=generator, dtype=x.dtype, device=x.device)


def euler_maruyama(
    sde: SDE,
    score: ScoreFn,
    x: torch.Tensor,
    n_steps: int,
    generator: torch.Generator | None = None,
    eps: float = 1e-3,
    record: Sequence[int] = (),
    progress=None,
):
    ts, dt = _grid(n_steps, eps)
    kept = {}
    for i, t in enumerate(ts):
        tt = _t(x, t)
        mean = x - sde.reverse_drift(score, x, tt) * dt
        g = sde.diffusion(tt)
        x = mean + expand(g, x) * dt**0.5 * _noise(x, generator) if i < n_steps - 1 else mean
        _keep(kept, record, i + 1, x, progress)
    return x, kept, n_steps


def reverse_diffusion(
    sde: SDE,
    score: ScoreFn,
    x: torch.Tensor,
    n_steps: int,
    generator: torch.Generator | None = None,
    eps: float = 1e-3,
    record: Sequence[int] = (),
    progress=None,
    corrector: int = 0,
    snr: float = 0.16,
):
    """Reverse diffusion; with ``corrector`` > 0, predictor-corrector."""
    ts, dt = _grid(n_steps, eps)
    kept = {}
    for i, t in enumerate(ts):
        tt = _t(x, t)
        for _ in range(corrector):
            x = langevin_corrector(sde, score, x, tt, dt, snr, generator)
        mean, g = sde.reverse_discretize(score, x, tt, dt)
        x = mean + expand(g, x) * _noise(x, generator) if i < n_steps - 1 else mean
        _keep(kept, record, i + 1, x, progress)
    return x, kept, n_steps * (1 + corrector)


def predictor_corrector(
    sde: SDE,
    score: ScoreFn,
    x: torch.Tensor,
    n_steps: int,
    generator: torch.Generator | None = None,
    eps: float = 1e-3,
    record: Sequence[int] = (),
    progress=None,
    corrector: int = 1,
    snr: float = 0.16,
):
    return reverse_diffusion(
        sde, score, x, n_steps, generator, eps, record, progress, corrector=corrector, snr=snr
    )


def langevin_corrector(
    sde: SDE, score: ScoreFn, x: torch.Tensor, t: torch.Tensor, dt: float, snr: float, generator
) -> torch.Tensor:
    """One Langevin step at fixed t, step size from the signal-to-noise ratio ``snr``
    (docs/equations.md (4.12))."""
    grad = score(x, t)
    z = _noise(x, generator)
    flat = len(x), -1
    ratio = z.reshape(flat).norm(dim=1).mean() / grad.reshape(flat).norm(dim=1).mean()
    r = sde.step_alpha(t - dt, dt) if isinstance(sde, VPSDE) else torch.ones_like(t)
    tau = 2 * r * (snr * ratio) ** 2
    return x + expand(tau, x) * grad + expand(torch.sqrt(2 * tau), x) * z


def probability_flow(
    sde: SDE,
    score: ScoreFn,
    x: torch.Tensor,
    n_steps: int = 100,
    generator: torch.Generator | None = None,
    eps: float = 1e-3,
    record: Sequence[int] = (),
    progress=None,
    method: str = "heun",
    rtol: float = 1e-5,
    atol: float = 1e-5,
):
    """The probability-flow ODE from t = 1 to eps: ``euler`` / ``heun`` on n_steps (Heun's
    last step is Euler, so nfe = 2 n - 1), or ``rk45`` (adaptive; n_steps ignored):
    docs/equations.md (4.2), (4.13)."""

    def velocity(y, t):
        return sde.reverse_drift(score, y, _t(y, t), probability_flow=True)

    if method == "rk45":
        y, nfe = integrate(lambda y, t: velocity(y, t), x, 1.0, eps, rtol, atol)
        return y, {}, nfe
    ts, dt = _grid(n_steps, eps)
    kept, nfe = {}, 0
    for i, t in enumerate(ts):
        v = velocity(x, t)
        nfe += 1
        pred = x - v * dt
        if method == "heun" and i < n_steps - 1:
            x = x - 0.5 * (v + velocity(pred, t - dt)) * dt
            nfe += 1
        elif method in ("heun", "euler"):
            x = pred
        else:
            raise ProbdiffError(f"unknown ODE method {method!r}: euler, heun or rk45")
        _keep(kept, record, i + 1, x, progress)
    return x, kept, nfe


def integrate(
    velocity, x: torch.Tensor, t0: float, t1: float, rtol: float, atol: float
) -> tuple[torch.Tensor, int]:
    """Solve dy/dt = velocity(y, t) from t0 to t1 with SciPy's RK45 on the flattened rows;
    returns (y(t1) in x's dtype, number of velocity evaluations)."""
    from scipy.integrate import solve_ivp

    shape, dtype, device = x.shape, x.dtype, x.device

    def rhs(t, y):
        with torch.no_grad():
            yt = torch.as_tensor(y, dtype=dtype, device=device).reshape(shape)
            return velocity(yt, float(t)).reshape(-1).double().cpu().numpy()

    sol = solve_ivp(
        rhs, (t0, t1), x.reshape(-1).double().cpu().numpy(), rtol=rtol, atol=atol, method="RK45"
    )
    if not sol.success:
        raise ProbdiffError(f"the ODE solver failed: {sol.message}")
    return torch.as_tensor(sol.y[:, -1], dtype=dtype, device=device).reshape(shape), int(sol.nfev)


def solve(
    name: str,
    sde: SDE,
    score: ScoreFn,
    x: torch.Tensor,
    n_steps: int,
    generator: torch.Generator | None = None,
    eps: float = 1e-3,
    record: Sequence[int] = (),
    progress=None,
    snr: float = 0.16,
):
    """Dispatch by name: em | reverse_diffusion | pc | ode (rk45) | ode_euler | ode_heun."""
    if name == "em":
        return euler_maruyama(sde, score, x, n_steps, generator, eps, record, progress)
    if name == "reverse_diffusion":
        return reverse_diffusion(sde, score, x, n_steps, generator, eps, record, progress)
    if name == "pc":
        return predictor_corrector(sde, score, x, n_steps, generator, eps, record, progress, 1, snr)
    if name in ("ode", "ode_euler", "ode_heun"):
        method = {"ode": "rk45", "ode_euler": "euler", "ode_heun": "heun"}[name]
        return probability_flow(sde, score, x, n_steps, generator, eps, record, progress, method)
    raise ProbdiffError(f"unknown solver {name!r}: choose {', '.join(SOLVERS)}")


def _keep(kept, record, step, x, progress):
    if step in record:
        kept[step] = x.clone()
    if progress is not None:
        progress.update(1)
