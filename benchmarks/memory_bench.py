"""Benchmark: peak memory against data size, for data in memory and data streamed from disk.

Each fit runs in a child process that reports its peak resident memory (the kernel's
high-water mark, VmHWM) when training ends and when the whole command ends, with the
seconds of each part.

``after`` (the first table): the GMM on 2-D data in memory (minibatches of 10,000 rows,
Pyro); after training come the metrics (ELBOs on at most EVAL_ROWS rows per estimate, exact
log-likelihoods on every row), posterior draws and per-datum values on at most DRAW_ROWS rows,
and the figures.

``stream`` (the second table): the VAE on 8x8 uint8 images, from a ``.npy`` file and from a
folder of PNG files, each size fitted with ``--no-stream`` (every row in memory, as float64,
and again as the backend's float32 tensor) and with ``--stream`` (rows read per minibatch
with positioned reads, PNGs decoded per minibatch; metrics on a random subset of each split),
1% held out (the held-out metrics of a fit in memory read every held-out row).

    python benchmarks/memory_bench.py [--what after,stream] [--rows 500000,2000000]
        [--images 250000,1000000,4000000] [--pngs 20000,80000] [--steps 50]
"""

from __future__ import annotations

import argparse
import json
import shutil
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
    marks = {"start_gib": high_water()}
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


def _child(argv: list[str]) -> dict | None:
    """Run ``probdiff`` with ``argv`` in a child process; its marks, or None (printed why)."""
    out = subprocess.run(
        [sys.executable, "-c", CHILD, *argv], capture_output=True, text=True, check=False
    )
    line = [ln for ln in out.stdout.splitlines() if ln.startswith("MARKS ")]
    if not line or json.loads(line[0][6:])["code"] != 0:
        print(out.stdout[-2000:], out.stderr[-2000:])
        return None
    return json.loads(line[0][6:])


def after_training(args, tmp: Path) -> int:
    rows = []
    for n in (int(r) for r in args.rows.split(",")):
        rng = np.random.default_rng(0)
        z = rng.integers(3, size=n)
        x = np.array([[-2.0, -1.0], [2.0, -1.0], [0.0, 2.5]])[z] + 0.5 * rng.normal(size=(n, 2))
        data = tmp / f"x{n}.npy"
        np.save(data, x)
        marks = _child(
            ["fit", "gmm", "--data", str(data), "--out", str(tmp / f"run{n}")]
            + ["--steps", str(args.steps), "--batch-size", "10000", "--quiet"]
        )
        if marks is None:
            return 1
        rows.append((n, marks))
        data.unlink()
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


def _images(n: int, seed: int = 0) -> np.ndarray:
    """``n`` 8x8 uint8 images: the digits, drawn with replacement, each shifted by a pixel
    at random (values 0..16)."""
    from probdiff.data import load_dataset

    digits = load_dataset("digits").x[:, 0].astype(np.uint8)
    rng = np.random.default_rng(seed)
    x = digits[rng.integers(len(digits), size=n)]
    shift = rng.integers(-1, 2, size=n)
    for s in (-1, 1):
        x[shift == s] = np.roll(x[shift == s], s, axis=2)
    return x


def streaming(args, tmp: Path) -> int:
    from PIL import Image

    cases = [("npy", int(n)) for n in args.images.split(",") if n] + [
        ("png", int(n)) for n in args.pngs.split(",") if n
    ]
    table = []
    for source, n in cases:
        x = _images(n)
        if source == "npy":
            data = tmp / f"images{n}.npy"
            np.save(data, x)
            disk = data.stat().st_size
        else:
            data = tmp / f"png{n}"
            data.mkdir()
            for i, im in enumerate(x):
                Image.fromarray(im).save(data / f"{i:07d}.png")
            disk = sum(p.stat().st_size for p in data.iterdir())
        del x
        for mode in ("--no-stream", "--stream"):
            marks = _child(
                ["fit", "vae", "--data", str(data), mode, "--out", str(tmp / f"{source}{n}{mode}")]
                + ["--steps", str(args.steps), "--batch-size", "128", "--test-fraction", "0.01"]
                + ["--quiet"]
            )
            if marks is None:
                return 1
            table.append((source, n, disk, mode[2:], marks))
            print(f"  {source} {n} {mode}: {json.dumps(marks)}", file=sys.stderr)
    print(
        f"VAE fit on 8x8 uint8 images, {args.steps} steps of 128 rows (Pyro), 1% held out; "
        "peak resident memory (MiB)"
    )
    print(
        f"{'source':>6s} {'rows':>9s} {'on disk':>8s} {'mode':>9s} {'train peak':>11s} "
        f"{'overall peak':>13s} {'train s':>8s} {'total s':>8s}"
    )
    for source, n, disk, mode, m in table:
        print(
            f"{source:>6s} {n:9d} {disk / 2**20:8.1f} {mode:>9s} {m['train_gib'] * 1024:11.0f} "
            f"{m['total_gib'] * 1024:13.0f} {m['train_s']:8.1f} "
            f"{m['train_s'] + m['post_s']:8.1f}"
        )
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--what", default="after,stream", help="after, stream or both")
    p.add_argument("--rows", default="500000,2000000", help="GMM rows (after)")
    p.add_argument("--images", default="250000,1000000,4000000", help=".npy images (stream)")
    p.add_argument("--pngs", default="20000,80000", help="PNG images (stream)")
    p.add_argument("--steps", type=int, default=50)
    args = p.parse_args(argv)
    tmp = Path(tempfile.mkdtemp(prefix="probdiff-memory-"))
    code = 0
    try:
        for what in args.what.split(","):
            code = code or {"after": after_training, "stream": streaming}[what](args, tmp)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return code


if __name__ == "__main__":
    raise SystemExit(main())
