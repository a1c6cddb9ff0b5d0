"""Chapter 4: the SDE view: VP, VE and sub-VP SDEs, reverse-SDE and ODE samplers, exact
likelihood through the probability-flow ODE.

    python examples/score_sde.py --out runs/score_sde                 # full settings
    python examples/score_sde.py --out /tmp/s --steps 30 --quick      # smoke test

1. With the exact score of the 2-D mixture (closed form for every marginal p_t): each solver
   at about 200 network evaluations, sliced Wasserstein distance to exact samples; the ODE
   log-likelihood against the exact log density.
2. A VP score model trained as a Pyro program (``probdiff fit sde``): the report's likelihood
   table and the samples-by-solver figure.
3. A DDPM (chapter 2) read as a VP SDE: its probability-flow ODE log-likelihood beside its
   ELBO bound and the true density.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from probdiff.data import mixture2d_density
from probdiff.diagnostics import sliced_wasserstein
from probdiff.diffusion.mixture_score import GaussianMixture
from probdiff.diffusion.ode_likelihood import ode_log_likelihood
from probdiff.diffusion.sde import make_sde
from probdiff.diffusion.solvers import solve
from probdiff.fitting import fit
from probdiff.models.ddpm.family import DDPMFamily
from probdiff.models.score.sde_family import SDEFamily
from probdiff.request import FitRequest
from probdiff.svi import SVISettings


def equal_nfe(budget: int) -> tuple[str, ...]:
    """Every solver at ``budget`` network evaluations (adaptive RK45 picks its own)."""
    half = budget // 2
    return (
        f"em:{budget}",
        f"reverse_diffusion:{budget}",
        f"pc:{half}",
        f"ode_euler:{budget}",
        f"ode_heun:{half}",
        "ode",
    )


def exact_score_table(n: int, seed: int, budget: int = 200, rows: int = 200) -> None:
    truth = GaussianMixture.of_dataset_density(mixture2d_density())
    ref = truth.sample(n, torch.Generator().manual_seed(seed + 1)).numpy()
    samplers = equal_nfe(budget)
    print(f"{'sde':6s} " + " ".join(f"{s:>22s}" for s in samplers) + "   ODE log-lik error")
    for name in ("vp", "subvp", "ve"):
        sde = make_sde(name, sigma_max=20.0)
        score = truth.marginal_score(sde)
        cells = []
        for sampler in samplers:
            solver, _, steps = sampler.partition(":")
            gen = torch.Generator().manual_seed(seed)
            x = sde.prior_sample((n, 2), gen, dtype=torch.float64)
            x, _, nfe = solve(solver, sde, score, x, int(steps or 100), gen)
            cells.append(f"{sliced_wasserstein(x.numpy(), ref, seed=seed):.3f} ({nfe} NFE)")
        x = truth.sample(rows, torch.Generator().manual_seed(seed + 2))
        one = torch.ones(len(x), dtype=torch.float64)
        ll = ode_log_likelihood(
            sde,
            score,
            x,
            rtol=1e-7,
            atol=1e-7,
            prior_log_prob=lambda y: truth.marginal_log_prob(sde, y, one),
        )
        err = (ll.log_prob - truth.marginal_log_prob(sde, x, 1e-5 * one)).abs().max()
        print(f"{name:6s} " + " ".join(f"{c:>22s}" for c in cells) + f"   {float(err):.2e}")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default="runs/score_sde")
    p.add_argument("--steps", type=int, default=4000, help="training steps of each model")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--quick", action="store_true", help="small networks, no progress bar")
    args = p.parse_args(argv)
    out, q = Path(args.out), args.quick
    settings = SVISettings(
        steps=args.steps, lr=2e-3, batch_size=256, seed=args.seed, progress=not q
    )
    print("== 1. exact scores: sliced Wasserstein to exact samples, at equal NFE")
    exact_score_table(200 if q else 2000, args.seed, 40 if q else 200, 10 if q else 200)
    print("== 2. a VP score model trained as a Pyro program")
    # --quick: no ODE likelihood (an untrained network makes the ODE stiff: thousands of NFE)
    small = {"hidden": "32", "ode_rows": 0} if q else {}
    run = fit(
        FitRequest(
            model="sde",
            data="mixture2d",
            out=str(out / "sde"),
            options=SDEFamily.default_options(**small),
            settings=settings,
        )
    )
    print(run.report())
    print("== 3. a DDPM read as a VP SDE: ODE likelihood beside the ELBO")
    options = DDPMFamily.default_options(T=20 if q else 100, **small)
    run = fit(
        FitRequest(
            model="ddpm",
            data="mixture2d",
            out=str(out / "ddpm"),
            options=options,
            settings=settings,
            posterior_samples=2,
        )
    )
    print(run.report())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
