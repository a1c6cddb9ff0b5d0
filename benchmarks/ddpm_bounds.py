"""Benchmark: how tight the DDPM's bound is for each variance and timestep choice.

    python benchmarks/ddpm_bounds.py [--steps 8000] [--digits-steps 4000] [--jobs 2]

Fits ``probdiff fit ddpm`` (T = 1000, the defaults otherwise) on mixture2d, whose density is
known (the gap of the held-out bound to the true log-likelihood is printed), and on the 8x8
digits (MLP 256,256, batch 128, lr 1e-3; bits per dimension), once per choice: fixed
sigma_q(t)^2 under the bound and under L_simple, the clipped decoder variance, learned
variances under the bound and under the hybrid objective, and importance-sampled steps.
Prints one table: held-out bound +- its standard error, the probability-flow ODE's
log-likelihood, the sliced Wasserstein distance of samples (vectors) and the seconds of
training.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

CHOICES = {
    "fixed_small, bound": [],
    "fixed_small, L_simple": ["--weighting", "simple"],
    "clipped decoder, bound": ["--decoder-variance", "clipped"],
    "learned, bound": ["--variance", "learned"],
    "learned, hybrid": ["--variance", "learned", "--weighting", "simple"],
    "importance t, bound": ["--timesteps", "importance"],
}
DATA = {
    "mixture2d": [],
    "digits": ["--net", "mlp", "--hidden", "256,256", "--batch-size", "128", "--lr", "1e-3"],
}


def fit(data: str, extra: list[str], steps: int, out: Path) -> dict:
    cmd = [sys.executable, "-m", "probdiff", "fit", "ddpm", "--data", data, "--T", "1000"]
    cmd += ["--steps", str(steps), "--quiet", "--out", str(out), *DATA[data], *extra]
    subprocess.run(cmd, check=True, capture_output=True)
    return json.loads((out / "metrics.json").read_text())


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=8000)
    p.add_argument("--digits-steps", type=int, default=4000)
    p.add_argument("--jobs", type=int, default=2)
    p.add_argument("--json", default=None)
    args = p.parse_args(argv)
    tmp = Path(tempfile.mkdtemp(prefix="ddpm-bounds-"))
    jobs = [
        (data, name, extra, args.steps if data == "mixture2d" else args.digits_steps)
        for data in DATA
        for name, extra in CHOICES.items()
    ]
    with ThreadPoolExecutor(args.jobs) as pool:
        results = list(
            pool.map(lambda j: fit(j[0], j[2], j[3], tmp / f"{j[0]}-{jobs.index(j)}"), jobs)
        )
    rows = []
    print(
        f"{'data':10s} {'choice':24s} {'bound':>9s} {'s.e.':>6s} {'truth/bpd':>10s} "
        f"{'ODE':>9s} {'SW':>7s} {'train s':>8s}"
    )
    for (data, name, _, _), m in zip(jobs, results):
        if data == "mixture2d":
            extra = m["test_true_log_likelihood"] - m["test_elbo"]  # gap to the truth
            sw = m.get("test_sliced_wasserstein", float("nan"))
        else:
            extra, sw = m["test_bits_per_dim"], float("nan")
        rows.append(
            {
                "data": data,
                "choice": name,
                **{
                    k: m.get(k)
                    for k in (
                        "test_elbo",
                        "test_elbo_stderr",
                        "test_true_log_likelihood",
                        "test_bits_per_dim",
                        "test_ode_log_likelihood",
                        "ode_bits_per_dim",
                        "test_sliced_wasserstein",
                        "seconds",
                    )
                },
            }
        )
        print(
            f"{data:10s} {name:24s} {m['test_elbo']:9.3f} {m['test_elbo_stderr']:6.3f} "
            f"{extra:10.3f} {m.get('test_ode_log_likelihood', float('nan')):9.3f} "
            f"{sw:7.3f} {m['seconds']:8.1f}"
        )
    print("truth/bpd: mixture2d, true log-likelihood minus the bound (nats); digits, bits/dim")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
