"""Your own model, declared in Python: Bayesian linear regression fitted by probdiff.fit.

    python examples/your_model.py --out runs/your_model          # full settings
    python examples/your_model.py --out /tmp/ym --steps 50       # smoke test

    w ~ N(0, I),  y_n | x_n, w ~ N(x_n . w, sigma^2)

The model is written as Pyro's tutorials write it, ``model(x, y=None)``; the data is a dict
of two arrays, so it arrives as ``model(x=..., y=...)``; the guide is Pyro's AutoNormal.
The script fits it, prints what the run holds (parameters, metrics, an ArviZ summary,
PSIS-LOO) next to the exact conjugate posterior, predicts at new covariates, and reopens the
run folder as another session would.
"""

from __future__ import annotations

import argparse

import numpy as np
import pyro
import pyro.distributions as dist
import torch

import probdiff

SIGMA = 0.5


def model(x, y=None):
    w = pyro.sample("w", dist.Normal(torch.zeros(x.shape[1]), 1.0).to_event(1))
    with pyro.plate("data", x.shape[0]):
        pyro.sample("y", dist.Normal(x @ w, SIGMA), obs=y)


def main(argv: list[str] | None = None) -> int:
    import arviz as az

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default="runs/your_model")
    p.add_argument("--steps", type=int, default=3000)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)

    rng = np.random.default_rng(args.seed)
    x = rng.normal(size=(300, 3))
    y = x @ np.array([1.0, -2.0, 0.5]) + SIGMA * rng.normal(size=300)

    run = probdiff.fit(
        model,
        "auto:normal",
        data={"x": x, "y": y},
        steps=args.steps,
        lr=0.01,
        seed=args.seed,
        out=args.out,
        progress=False,
    )
    print(run)
    print("metrics:", {k: round(v, 4) for k, v in run.metrics.items() if isinstance(v, float)})
    print(az.summary(run.idata, var_names=["w"], kind="stats"))

    train, _ = run.split()
    xt, yt = train.arrays()["x"], train.arrays()["y"]
    cov = np.linalg.inv(np.eye(3) + xt.T @ xt / SIGMA**2)
    print(
        "exact posterior mean",
        np.round(cov @ xt.T @ yt / SIGMA**2, 4),
        "sd",
        np.round(np.sqrt(np.diag(cov)), 4),
    )
    print(az.loo(run.idata))

    pred = run.predictive(data={"x": np.array([[1.0, 1.0, 1.0]])}, num_samples=1000)["y"]
    print(f"prediction at x = (1, 1, 1): {pred.mean():.3f} +- {pred.std():.3f}")

    again = probdiff.open_run(args.out)  # what a later session sees: files only, no code run
    print(again.report())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
