"""The DDPM's ELBO estimators side by side: mean, variance in total and per term, cost.

    python benchmarks/ddpm_estimators.py [--T 10] [--n 200] [--draws 200] [--train-steps 300]

On mixture2d with a time-conditioned MLP (eps parameterisation, linear schedule), before and
after training on the closed-form bound, each estimator is drawn ``--draws`` times per datum:

  (a) fwd   Trace_ELBO, guide forwards       (a) bwd  Trace_ELBO, guide backwards
  (b)       closed-form KLs, guide backwards (b) all  the same terms, each x_t drawn from
                                                      q(x_t|x_0) independently, vectorised
  (c)       closed-form KLs, k of T - 1 steps, x (T-1)/k

Per term: (a) log p(site) - log q(site) per latent x_t, (b) -KL at x_{t-1} given the sampled
x_t; the decoder log p(x_0 | x_1) and the prior term x_T. "sd/datum" is the standard
deviation of one draw of the per-datum estimate (averaged over data in quadrature).
"""

from __future__ import annotations

import argparse
import math
import time

import numpy as np
import pyro
import torch
from pyro.infer import SVI, TraceMeanField_ELBO
from pyro.optim import Adam

from probdiff.data import load_dataset
from probdiff.diffusion.schedules import Schedule
from probdiff.guides.ddpm import BackwardGuide, ForwardGuide, MarginalGuide
from probdiff.models.ddpm.chain import (
    DDPMModel,
    DDPMTermsModel,
    ReverseChain,
    elbo_terms,
)
from probdiff.models.ddpm.networks import TimeMLP


def per_term(model, guide, x, closed: bool) -> dict[str, torch.Tensor]:
    """One draw of each term per datum: {name: (N,)}; their sum is the ELBO estimate."""
    terms = elbo_terms(model, guide, x, closed)
    out = {
        ("decoder" if k == "x_0" else k): (v.sum(0) if v.dim() == 2 else v)
        for k, v in terms.items()
    }
    return out


def measure(name, model, guide, x, draws, closed):
    t0 = time.perf_counter()
    with torch.no_grad():
        rows = [per_term(model, guide, x, closed) for _ in range(draws)]
    seconds = (time.perf_counter() - t0) / draws
    terms = {k: torch.stack([r[k] for r in rows]).numpy() for k in rows[0]}  # (draws, N)
    total = sum(terms.values())
    sd = lambda v: float(np.sqrt(np.mean(v.var(0, ddof=1))))  # noqa: E731
    se = float(total.mean(1).std(ddof=1) / math.sqrt(draws))
    return {
        "name": name,
        "mean": float(total.mean()),
        "se": se,
        "sd": sd(total),
        "terms": {k: sd(v) for k, v in terms.items()},
        "ms": 1000 * seconds,
    }


def table(results, title):
    print(f"\n{title}")
    print(f"{'estimator':18s} {'ELBO/datum':>11s} {'+- s.e.':>8s} {'sd/datum':>9s} {'ms/draw':>8s}")
    for r in results:
        print(f"{r['name']:18s} {r['mean']:11.4f} {r['se']:8.4f} {r['sd']:9.3f} {r['ms']:8.1f}")
    names = sorted(
        {k for r in results for k in r["terms"]},
        key=lambda k: (
            k != "decoder",
            -int(k.split("_")[1]) if k.startswith("x_") and k[2:].isdigit() else 0,
            k,
        ),
    )
    print("sd/datum per term:")
    print(f"{'term':10s} " + " ".join(f"{r['name'][:10]:>10s}" for r in results))
    for k in names:
        cells = " ".join(
            f"{r['terms'][k]:10.3f}" if k in r["terms"] else f"{'-':>10s}" for r in results
        )
        print(f"{k:10s} {cells}")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--T", type=int, default=10)
    p.add_argument("--n", type=int, default=200)
    p.add_argument("--draws", type=int, default=200)
    p.add_argument("--subsample", type=int, default=3)
    p.add_argument("--train-steps", type=int, default=300)
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    torch.set_default_dtype(torch.float64)
    x = torch.tensor(load_dataset(f"mixture2d:n={args.n}").flat())
    T = args.T
    s = Schedule.make("linear", T, beta_start=1e-4 * 1000 / T, beta_end=min(0.02 * 1000 / T, 0.5))
    torch.manual_seed(0)
    chain = ReverseChain(TimeMLP(2, [64], T), s, "eps")
    model, terms = DDPMModel(chain), DDPMTermsModel(chain, args.subsample)
    every = DDPMTermsModel(chain, None)
    pyro.set_rng_seed(0)

    def run(title):
        table(
            [
                measure("(a) fwd", model, ForwardGuide(s), x, args.draws, False),
                measure("(a) bwd", model, BackwardGuide(s), x, args.draws, False),
                measure("(b) closed", model, BackwardGuide(s), x, args.draws, True),
                measure("(b) all", every, MarginalGuide(s, None), x, args.draws, True),
                measure(
                    f"(c) k={args.subsample}",
                    terms,
                    MarginalGuide(s, args.subsample),
                    x,
                    args.draws,
                    True,
                ),
            ],
            title,
        )

    run(f"T={T}, untrained network")
    svi = SVI(model, BackwardGuide(s), Adam({"lr": 0.01}), TraceMeanField_ELBO())
    for _ in range(args.train_steps):
        svi.step(x)
    run(f"T={T}, after {args.train_steps} SVI steps on (b)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
