"""Benchmark: memory and time of the work after training, against training, on large data.

For each data size, one child process fits the GMM (``probdiff fit gmm``, minibatches of
10,000 rows, Pyro) and reports its peak resident memory (the kernel's high-water mark,
VmHWM) when training ends and when the whole command ends, with the seconds of each part.
After training come the metrics (ELBOs on at most EVAL_ROWS rows per estimate, exact
log-likelihoods on every row), posterior draws and per-datum values on at most DRAW_ROWS rows,
and the figures.

    python benchmarks/memory_bench.py [--rows 500000,2000000] [--steps 50]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

import numpy as np

CHILD = textwrap.dedent("""
    import json, sys, time
    import probdiff.fitting as fitting
    from probdiff.cli import main

    def high_water():
        for line in open("/proc/self/status"):
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024**2  # GiB
    marks = {}
    train = fitting.run_svi
    def timed(*args, **kwargs):
        t0 = time.perf_counter()
        out = train(*args, **kwargs)
        marks["train_s"] = time.perf_counter() - t0
        marks["train_gib"] = high_water()
        marks["after_train"] = time.perf_counter()
        return out
    fitting.run_svi = timed
    t0 = time.perf_counter()
    code = main(sys.argv[1:])
    marks["post_s"] = time.perf_counter() - marks["after_train"]
    marks["total_gib"] = high_water()
    marks["code"] = code
    print("MARKS " + json.dumps(marks))
""")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rows", default="500000,2000000")
    p.add_argument("--steps", type=int, default=50)
    args = p.parse_args(argv)
    tmp = Path(tempfile.mkdtemp(prefix="probdiff-memory-"))
    rows = []
    for n in (int(r) for r in args.rows.split(",")):
        rng = np.random.default_rng(0)
        z = rng.integers(3, size=n)
        x = np.array([[-2.0, -1.0], [2.0, -1.0], [0.0, 2.5]])[z] + 0.5 * rng.normal(size=(n, 2))
        data = tmp / f"x{n}.npy"
        np.save(data, x)
        out = subprocess.run(
            [
                sys.executable,
                "-c",
                CHILD,
                "fit",
                "gmm",
                "--data",
                str(data),
                "--out",
                str(tmp / f"run{n}"),
                "--steps",
                str(args.steps),
                "--batch-size",
                "10000",
                "--quiet",
            ],
            capture_output=True,
            text=True,
            check=False,
        )
        line = [ln for ln in out.stdout.splitlines() if ln.startswith("MARKS ")]
        if not line:
            print(out.stdout[-2000:], out.stderr[-2000:])
            return 1
        marks = json.loads(line[0][6:])
        rows.append((n, marks))
    print(f"GMM fit, {args.steps} steps of 10,000-row batches; peak resident memory (GiB)")
    print(
        f"{'rows':>10s} {'train s':>8s} {'train peak':>11s} {'after s':>8s} {'overall peak':>13s} "
        f"{'x train':>8s}"
    )
    for n, m in rows:
        print(
            f"{n:10d} {m['train_s']:8.1f} {m['train_gib']:11.2f} {m['post_s']:8.1f} "
            f"{m['total_gib']:13.2f} {m['total_gib'] / m['train_gib']:8.2f}"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
