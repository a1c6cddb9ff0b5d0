"""Benchmark: every sampler at equal network evaluations (NFE), speed and quality, in one run.

    python benchmarks/sde_samplers.py [--steps 4000] [--budgets 50,200,1000] [--n 2000]

Trains three models on mixture2d with the same MLP width (``probdiff fit``): a VP score SDE,
an NCSN and a DDPM (T = 1000, L_simple). Then, for each NFE budget, draws ``--n`` samples
with each sampler and prints samples per second and the sliced Wasserstein distance to the
held-out data, beside the floor (training data against held-out data at the same size) and,
for the SDE solvers, the same solver driven by the exact score (closed form for the mixture:
what is left is discretisation error). Budgets: EM / reverse diffusion / ODE Euler use B steps,
predictor-corrector and Heun B / 2, annealed Langevin 10 levels x B / 10 (+ 1 denoising
step), DDIM B steps,
ancestral only at B = T; RK45 picks its own NFE (reported).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from probdiff.data import load_dataset, train_test_split
from probdiff.diagnostics import sliced_wasserstein
from probdiff.diffusion.mixture_score import GaussianMixture
from probdiff.diffusion.solvers import solve
from probdiff.fitting import fit
from probdiff.request import FitRequest, make_family
from probdiff.runfolder import load_params
from probdiff.svi import SVISettings


def train(model: str, options: dict, out: Path, steps: int, seed: int):
    from probdiff.family import get_family

    opts = get_family(model).default_options(**options)
    run = fit(
        FitRequest(
            model=model,
            data="mixture2d",
            out=str(out / model),
            options=opts,
            posterior_samples=1,
            settings=SVISettings(steps=steps, lr=2e-3, batch_size=256, seed=seed, progress=True),
        )
    )
    data = load_dataset("mixture2d", seed=seed)
    return make_family(model, opts, data), load_params(run)


def timed(draw) -> tuple[np.ndarray, float, int]:
    t0 = time.perf_counter()
    x, nfe = draw()
    return x, time.perf_counter() - t0, nfe


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=4000, help="training steps per model")
    p.add_argument("--budgets", default="50,200,1000", help="NFE budgets")
    p.add_argument("--n", type=int, default=2000, help="samples per sampler")
    p.add_argument("--hidden", default="128,128")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    budgets = [int(b) for b in args.budgets.split(",")]
    # fresh draws of the same density (another seed), so no held-out row was trained on
    data = load_dataset("mixture2d:n=6000", seed=args.seed + 1000)
    train_split, test = train_test_split(data, 0.5, args.seed)
    held = test.flat()[: args.n]
    floor = sliced_wasserstein(train_split.flat()[: args.n], held, seed=args.seed)
    truth = GaussianMixture.of_dataset_density(load_dataset("mixture2d").log_prob)
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        sde_f, sde_p = train(
            "sde", {"hidden": args.hidden, "ode_rows": 0}, out, args.steps, args.seed
        )
        ncsn_f, ncsn_p = train("ncsn", {"hidden": args.hidden}, out, args.steps, args.seed)
        ddpm_f, ddpm_p = train(
            "ddpm",
            {"hidden": args.hidden, "T": 1000, "weighting": "simple", "ode_rows": 0},
            out,
            args.steps,
            args.seed,
        )
        exact = truth.marginal_score(sde_f.sde)
        rows = []
        for b in budgets:
            for name in (
                f"em:{b}",
                f"reverse_diffusion:{b}",
                f"pc:{b // 2}",
                f"ode_euler:{b}",
                f"ode_heun:{b // 2}",
            ):
                x, sec, nfe = timed(lambda: _sde(sde_f, sde_p, name, args))
                ex = _exact(sde_f, exact, name, args)
                rows.append(
                    (b, "sde " + name, nfe, args.n / sec, _sw(x, held, args), _sw(ex, held, args))
                )
            lv = len(ncsn_f.sigmas)
            if b >= lv:
                name = f"annealed_langevin:{b // lv}"
                x, sec, nfe = timed(
                    lambda: (
                        ncsn_f.run_sampler(ncsn_p, args.n, args.seed, name)[0].numpy(),
                        lv * (b // lv) + 1,
                    )
                )  # + the Tweedie step
                rows.append((b, "ncsn " + name, nfe, args.n / sec, _sw(x, held, args), None))
            samplers = [f"ddim:{b}"] + (["ancestral"] if b == ddpm_f.T else [])
            for name in samplers:
                x, sec, nfe = timed(
                    lambda: (ddpm_f.run_sampler(ddpm_p, args.n, args.seed, name)[0].numpy(), b)
                )
                rows.append((b, "ddpm " + name, nfe, args.n / sec, _sw(x, held, args), None))
        x, sec, nfe = timed(lambda: _sde(sde_f, sde_p, "ode", args))
        rows.append(
            (
                "adaptive",
                "sde ode (RK45, tol 1e-5)",
                nfe,
                args.n / sec,
                _sw(x, held, args),
                _sw(_exact(sde_f, exact, "ode", args), held, args),
            )
        )
    print(
        f"\nmixture2d, {args.n} samples per sampler, MLP {args.hidden}, {args.steps} training "
        f"steps; floor (train vs held-out) SW = {floor:.4f}\n"
    )
    print(
        f"{'budget':>8s}  {'sampler':34s} {'NFE':>6s} {'samples/s':>10s} {'SW':>8s} {'SW exact score':>15s}"
    )
    for b, name, nfe, rate, sw, sw_exact in rows:
        ex = f"{sw_exact:15.4f}" if sw_exact is not None else f"{'-':>15s}"
        print(f"{b!s:>8s}  {name:34s} {nfe:6d} {rate:10.0f} {sw:8.4f} {ex}")
    return 0


def _sde(family, params, name, args):
    x, _, nfe = family.run_sampler(params, args.n, args.seed, name)
    return x.numpy(), nfe


def _exact(family, score, name, args) -> np.ndarray:
    solver, _, steps = name.partition(":")
    gen = torch.Generator().manual_seed(args.seed)
    x = family.sde.prior_sample((args.n, 2), gen, dtype=torch.float64)
    with torch.no_grad():
        return solve(solver, family.sde, score, x, int(steps or 100), gen)[0].numpy()


def _sw(x, held, args) -> float:
    return sliced_wasserstein(np.asarray(x).reshape(len(x), -1), held, seed=args.seed)


if __name__ == "__main__":
    raise SystemExit(main())
