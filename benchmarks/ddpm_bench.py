"""Benchmark: the DDPM as a probabilistic program against hand-written loops, in one run.

    python benchmarks/ddpm_bench.py [--steps 200] [--batch-size 256] [--hidden 128,128]

1. Time per training step on mixture2d, same network (time-conditioned MLP), Adam, L_simple
   weighting, for (i) T = 1000 with k = 8 timesteps per batch and (ii) T = 100 with every
   term: Pyro SVI (TraceMeanField_ELBO on the term-by-term model), a hand-written PyTorch loop
   computing the same weighted loss sum ||eps - eps_theta||^2 on the same kind of draws,
   and the NumPyro twin (jit; compile time apart). First 10 steps untimed.
2. Sampling time, T = 1000 ancestral steps for 1000 points with the same network: probdiff's
   sampler against a loop over diffusers' DDPMScheduler.step, from the same generator (the
   two draw identical noise, so their samples must agree up to float32 rounding).
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import pyro
import torch
from pyro.infer import SVI, TraceMeanField_ELBO
from pyro.optim import Adam
from timing import seconds_per_step

from probdiff.data import load_dataset
from probdiff.models.ddpm.family import DDPMFamily
from probdiff.request import make_family


def timed(step, batches) -> float:
    return seconds_per_step(step, batches, warm=10)


def hand_written_loss(chain, x0, k, T, abar):
    """sum over the batch of ||eps - eps_theta(x_t, t)||^2 at t = 1 and at k of the steps
    2..T (scaled by (T-1)/k): the loss the Pyro program computes with unit weights, up to
    its constants."""
    n = x0.shape[0]
    t = torch.randperm(T - 1)[:k] + 2 if k < T - 1 else torch.arange(2, T + 1)
    a = abar[t][:, None, None]
    eps = torch.randn(len(t), n, x0.shape[1])
    xt = a.sqrt() * x0 + (1 - a).sqrt() * eps
    err = ((eps - chain.eps(xt, t[:, None].expand(len(t), n))) ** 2).sum() * (T - 1) / len(t)
    eps1 = torch.randn_like(x0)
    x1 = abar[1].sqrt() * x0 + (1 - abar[1]).sqrt() * eps1
    return err + ((eps1 - chain.eps(x1, 1)) ** 2).sum()


def training_rows(x, T, k, args, batches):
    data = load_dataset("mixture2d")
    estimator = "subsampled" if k < T - 1 else "closed"
    family = make_family(
        "ddpm",
        DDPMFamily.default_options(
            T=T, estimator=estimator, subsample=k, weighting="simple", hidden=args.hidden
        ),
        data,
    )
    rows = {}
    pyro.clear_param_store()
    program = family.program("pyro", x.numpy(), seed=1)
    svi = SVI(
        program.model, program.guide, Adam({"lr": 1e-3}), TraceMeanField_ELBO(max_plate_nesting=2)
    )
    rows["Pyro SVI (TraceMeanField_ELBO)"] = timed(lambda idx: svi.step(x[idx]), batches)

    chain = family.chain(1)
    abar = torch.as_tensor(family.schedule.abar, dtype=torch.float32)
    opt = torch.optim.Adam(chain.parameters(), lr=1e-3)

    def hand(idx):
        opt.zero_grad()
        hand_written_loss(chain, x[idx], k, T, abar).backward()
        opt.step()

    rows["hand-written PyTorch loop"] = timed(hand, batches)

    from probdiff.backends import get_backend

    backend = get_backend("numpyro")
    jprog = family.program("numpyro", x.numpy(), seed=1)
    arr = backend.array(x.numpy())
    backend.start(jprog, arr, lr=1e-3, seed=1)
    t0 = time.perf_counter()
    backend.step(backend.take(arr, batches[0].numpy()), len(x))
    compile_s = time.perf_counter() - t0
    rows[f"NumPyro SVI (jit; compile {compile_s:.1f} s)"] = timed(
        lambda idx: backend.step(backend.take(arr, idx.numpy()), len(x)), batches
    )
    return rows


def print_rows(title, rows, base):
    print(f"\n{title:40s} {'ms/step':>8s} {'x hand':>7s}")
    for name, sec in rows.items():
        print(f"{name:40s} {1000 * sec:8.2f} {sec / rows[base]:7.2f}")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=200)
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--hidden", default="128,128")
    p.add_argument("--samples", type=int, default=1000)
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    x = torch.tensor(load_dataset("mixture2d").flat(), dtype=torch.float32)
    rng = np.random.default_rng(0)
    batches = [
        torch.as_tensor(rng.choice(len(x), args.batch_size, replace=False))
        for _ in range(args.steps)
    ]
    for T, k in ((1000, 8), (100, 99)):
        rows = training_rows(x, T, k, args, batches)
        label = f"T={T}, " + (f"{k} steps per batch" if k < T - 1 else "every term")
        print_rows(label, rows, "hand-written PyTorch loop")

    # sampling: the same network, 1000 ancestral steps
    from diffusers import DDPMScheduler

    from probdiff.models.ddpm.sampling import ancestral

    data = load_dataset("mixture2d")
    family = make_family("ddpm", DDPMFamily.default_options(T=1000, hidden=args.hidden), data)
    chain = family.chain(0).eval()
    s = family.schedule
    n = args.samples
    rows = {}
    t0 = time.perf_counter()
    ours, _ = ancestral(chain.eps, s, n, 2, torch.Generator().manual_seed(0))
    rows["probdiff ancestral sampler"] = time.perf_counter() - t0
    sched = DDPMScheduler(
        num_train_timesteps=1000,
        trained_betas=s.betas[1:].tolist(),
        variance_type="fixed_small",
        clip_sample=False,
    )
    gen = torch.Generator().manual_seed(0)
    t0 = time.perf_counter()
    with torch.no_grad():
        xs = torch.randn(n, 2, generator=gen)
        for k in sched.timesteps.tolist():
            xs = sched.step(chain.eps(xs, k + 1), k, xs, generator=gen).prev_sample
    rows["diffusers DDPMScheduler loop"] = time.perf_counter() - t0
    print(f"\n{'sampling: 1000 steps, ' + str(n) + ' points':40s} {'s':>8s} {'x diffusers':>11s}")
    for name, sec in rows.items():
        print(f"{name:40s} {sec:8.3f} {sec / rows['diffusers DDPMScheduler loop']:11.2f}")
    gap = float((ours - xs).abs().max())
    print(
        f"both draw the same noise in the same order: max |difference| of the {n} samples "
        f"{gap:.2e} (diffusers keeps its coefficients in float32)"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
