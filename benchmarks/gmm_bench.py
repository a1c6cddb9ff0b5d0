"""Benchmark: time to reach scikit-learn's log-likelihood on a Gaussian mixture.

Pyro SVI, NumPyro SVI (z enumerated, full batch, the same initialisation and learning rate),
probdiff's NumPy EM and scikit-learn's EM, on the same data, in one run. The target is
scikit-learn's best-of-3 log-likelihood per datum minus ``--tolerance`` times its magnitude
(default 0.5%, the tolerance of the tests). SVI clocks count optimisation steps only; the log-likelihood checks every
``--check-every`` steps are outside the clock. Compilation (NumPyro's first jitted step) is
reported separately.

    python benchmarks/gmm_bench.py [--n 5000] [--dim 2] [--components 3] [--repeats 3]
                                   [--tolerance 0.005]
"""

from __future__ import annotations

import argparse
import time

import numpy as np


def svi_time_to_target(
    backend_name: str,
    family,
    x: np.ndarray,
    target: float,
    lr: float,
    max_steps: int,
    check_every: int,
    seed: int,
) -> dict:
    from probdiff.backends import get_backend
    from probdiff.models.gmm import em as gmm_em

    backend = get_backend(backend_name, threads=1)
    program = family.program(backend_name, x, seed)
    data = backend.array(x)
    backend.start(program, data, lr, seed)
    t0 = time.perf_counter()
    backend.step(data, len(x))  # first step: parameter creation / jit compilation
    first = time.perf_counter() - t0
    clock, steps, ll = 0.0, 1, -np.inf
    while steps < max_steps:
        t0 = time.perf_counter()
        for _ in range(check_every):
            backend.step(data, len(x))
        clock += time.perf_counter() - t0
        steps += check_every
        ll = gmm_em.log_likelihood(
            x, family.point_estimate({k: np.asarray(v, float) for k, v in backend.params().items()})
        ).mean()
        if ll >= target:
            break
    return {
        "seconds": clock + first,
        "first_step": first,
        "steps": steps,
        "ll": ll,
        "reached": ll >= target,
    }


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=5000)
    p.add_argument("--dim", type=int, default=2)
    p.add_argument("--components", type=int, default=3)
    p.add_argument("--lr", type=float, default=0.05)
    p.add_argument("--max-steps", type=int, default=3000)
    p.add_argument("--check-every", type=int, default=10)
    p.add_argument("--repeats", type=int, default=3, help="seeds per method (median reported)")
    p.add_argument(
        "--tolerance",
        type=float,
        default=0.005,
        help="target = sklearn log-likelihood minus this fraction of its magnitude",
    )
    args = p.parse_args(argv)

    from sklearn.mixture import GaussianMixture

    from probdiff.data import load_dataset
    from probdiff.models.gmm import em as gmm_em
    from probdiff.models.gmm.family import GMMFamily
    from probdiff.request import make_family

    spec = f"blobs:n={args.n},dim={args.dim},centers={args.components}"
    data = load_dataset(spec, seed=0)
    x = data.flat()
    family = make_family("gmm", GMMFamily.default_options(components=args.components), data)
    sk_best = (
        GaussianMixture(
            args.components,
            covariance_type="spherical",
            n_init=3,
            random_state=0,
            tol=1e-8,
            max_iter=1000,
        )
        .fit(x)
        .score(x)
    )
    target = sk_best - args.tolerance * abs(sk_best)
    print(f"data {spec}: scikit-learn best-of-3 log-likelihood {sk_best:.5f}, target {target:.5f}")

    rows = {}
    for seed in range(args.repeats):
        t0 = time.perf_counter()
        sk = GaussianMixture(
            args.components, covariance_type="spherical", random_state=seed, tol=1e-8, max_iter=1000
        ).fit(x)
        rows.setdefault("scikit-learn EM", []).append(
            {
                "seconds": time.perf_counter() - t0,
                "steps": sk.n_iter_,
                "ll": sk.score(x),
                "first_step": 0.0,
                "reached": sk.score(x) >= target,
            }
        )
        t0 = time.perf_counter()
        init = gmm_em.kmeans_pp_init(x, args.components, np.random.default_rng(seed))
        fitted, trace = gmm_em.em_fit(x, init)
        rows.setdefault("probdiff EM (NumPy)", []).append(
            {
                "seconds": time.perf_counter() - t0,
                "steps": len(trace) - 1,
                "ll": trace[-1],
                "first_step": 0.0,
                "reached": trace[-1] >= target,
            }
        )
        for backend in ("pyro", "numpyro"):
            rows.setdefault(f"SVI {backend}", []).append(
                svi_time_to_target(
                    backend, family, x, target, args.lr, args.max_steps, args.check_every, seed
                )
            )

    base = np.median([r["seconds"] for r in rows["scikit-learn EM"]])
    print(
        f"\n{'method':22s} {'median s':>9s} {'x sklearn':>9s} {'steps':>6s} {'1st step s':>10s} "
        f"{'log-lik':>9s} {'reached':>8s}"
    )
    for name, rs in rows.items():
        sec = np.median([r["seconds"] for r in rs])
        print(
            f"{name:22s} {sec:9.3f} {sec / base:9.1f} {int(np.median([r['steps'] for r in rs])):6d} "
            f"{np.median([r['first_step'] for r in rs]):10.3f} "
            f"{np.median([r['ll'] for r in rs]):9.4f} {sum(r['reached'] for r in rs)}/{len(rs):<6d}"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
