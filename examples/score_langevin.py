"""Chapter 3: score matching and Langevin dynamics, as samplers and as an MCMC kernel.

    python examples/score_langevin.py --out runs/score_langevin            # full settings
    python examples/score_langevin.py --out /tmp/s --steps 30 --quick      # smoke test

1. Langevin with the exact score of the 2-D mixture, plain and annealed over noise levels:
   plain Langevin mixes within a mode but not between modes (wrong weights); annealing fixes
   it. Figure: langevin_exact.png.
2. Langevin as a Pyro MCMC kernel (MALA) on a Bayesian logistic regression, 4 chains, beside
   NUTS on the same model: posterior means, R-hat and bulk ESS from ArviZ.
3. An NCSN (noise-conditional score network) trained by the NCSN loss as a Pyro program,
   sampled by annealed Langevin (``probdiff fit ncsn``): loss, explicit loss against the true
   blurred scores, sliced Wasserstein distance to held-out data.
"""

from __future__ import annotations

import argparse
import time
import warnings
from pathlib import Path

import numpy as np
import torch

from probdiff.data import mixture2d_density
from probdiff.diffusion.langevin import annealed_langevin, geometric_sigmas, langevin
from probdiff.diffusion.mixture_score import GaussianMixture
from probdiff.fitting import fit
from probdiff.models.score.ncsn_family import NCSNFamily
from probdiff.plots import plt, save
from probdiff.request import FitRequest
from probdiff.svi import SVISettings


def component_weights(x: torch.Tensor, truth: GaussianMixture) -> np.ndarray:
    """Share of samples nearest to each component mean."""
    k = torch.cdist(x, truth.locs).argmin(1).numpy()
    return np.bincount(k, minlength=len(truth.weights)) / len(x)


def exact_score_langevin(out: Path, n: int, steps: int, seed: int) -> None:
    truth = GaussianMixture.of_dataset_density(mixture2d_density())
    gen = torch.Generator().manual_seed(seed)
    start = 8.0 * torch.randn(n, 2, generator=gen, dtype=torch.float64)
    plain, _ = langevin(truth.score, start, 0.01, steps * 10, gen)
    sigmas = geometric_sigmas(10.0, 0.01, 10)
    annealed, _ = annealed_langevin(
        lambda y, i: truth.noisy_score(float(sigmas[i]))(y),
        sigmas,
        start,
        0.05 * 0.01**2,
        steps,
        gen,
    )
    print("component weights (nearest mean):")
    print(f"  true             {np.round(truth.weights.numpy(), 3)}")
    print(
        f"  plain Langevin   {np.round(component_weights(plain, truth), 3)}   "
        f"({steps * 10} steps, tau = 0.01)"
    )
    print(
        f"  annealed         {np.round(component_weights(annealed, truth), 3)}   "
        f"({len(sigmas)} levels x {steps} steps)"
    )
    fig, axes = plt.subplots(1, 2, figsize=(7, 3.3))
    ref = truth.sample(n, gen).numpy()
    for ax, (name, x) in zip(axes, (("plain Langevin", plain), ("annealed Langevin", annealed))):
        ax.scatter(ref[:, 0], ref[:, 1], s=2, c="0.75", linewidths=0)
        ax.scatter(x[:, 0], x[:, 1], s=2, c="C3", alpha=0.6, linewidths=0)
        ax.set_title(name, fontsize=9)
        ax.set_xlim(-6, 6)
        ax.set_ylim(-6, 6)
    print(f"figure: {out / save(fig, out / 'langevin_exact.png')}")


def logistic_model(x, y):
    import pyro
    import pyro.distributions as dist

    b0 = pyro.sample("b0", dist.Normal(0.0, 2.0))
    w = pyro.sample("w", dist.Normal(torch.zeros(x.shape[1]), 2.0).to_event(1))
    with pyro.plate("data", len(x)):
        pyro.sample("y", dist.Bernoulli(logits=b0 + x @ w), obs=y)


def mcmc_comparison(samples: int, warmup: int, seed: int) -> None:
    import arviz as az
    import pyro
    from pyro.infer import MCMC, NUTS

    from probdiff.diffusion.langevin_kernel import Langevin, to_inference_data

    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(200, 2, generator=gen)
    y = torch.bernoulli(torch.sigmoid(0.5 + x @ torch.tensor([1.5, -1.0])), generator=gen)
    rows = []
    nuts = NUTS(logistic_model, jit_compile=True, ignore_jit_warnings=True)
    for name, kernel in (("MALA (Langevin)", Langevin(logistic_model)), ("NUTS", nuts)):
        pyro.set_rng_seed(seed)
        t0 = time.perf_counter()
        with warnings.catch_warnings():
            # chains drawn sequentially on 2 cores; torch.jit's deprecation notice
            warnings.simplefilter("ignore", UserWarning)
            warnings.simplefilter("ignore", DeprecationWarning)
            mcmc = MCMC(
                kernel, num_samples=samples, warmup_steps=warmup, num_chains=4, disable_progbar=True
            )
            mcmc.run(x, y)
        seconds = time.perf_counter() - t0
        idata = (
            to_inference_data(mcmc, log_likelihood=False)
            if name.startswith("MALA")
            else az.from_pyro(mcmc, log_likelihood=False)
        )
        s = az.summary(idata, var_names=["b0", "w"], kind="all")
        rows.append(
            (
                name,
                s["mean"].to_numpy(),
                float(s["r_hat"].max()),
                float(s["ess_bulk"].min()),
                seconds,
            )
        )
    print("Bayesian logistic regression, 4 chains (posterior means of b0, w1, w2):")
    for name, mean, rhat, ess, seconds in rows:
        print(
            f"  {name:16s} mean {np.round(mean, 3)}  max R-hat {rhat:.3f}  min bulk ESS "
            f"{ess:7.0f}  {seconds:5.1f} s  ({ess / seconds:7.1f} ESS/s)"
        )


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default="runs/score_langevin")
    p.add_argument("--steps", type=int, default=3000, help="NCSN training steps")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--quick", action="store_true", help="few samples and steps, no progress bar")
    args = p.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    q = args.quick
    print("== 1. Langevin with the exact score")
    exact_score_langevin(out, 500 if q else 4000, 20 if q else 100, args.seed)
    print("== 2. Langevin as a Pyro MCMC kernel beside NUTS")
    mcmc_comparison(20 if q else 1000, 20 if q else 500, args.seed)
    print("== 3. NCSN: the NCSN loss as a program, annealed Langevin sampling")
    options = NCSNFamily.default_options(
        **({"hidden": "32", "steps_per_level": 10, "levels": 5} if q else {})
    )
    run = fit(
        FitRequest(
            model="ncsn",
            data="mixture2d",
            out=str(out / "ncsn"),
            options=options,
            settings=SVISettings(
                steps=args.steps, lr=2e-3, batch_size=256, seed=args.seed, progress=not q
            ),
        )
    )
    print(run.report())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
