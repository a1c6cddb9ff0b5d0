"""Benchmark: images and samples per second of DDPM training and sampling, on one device.

    python benchmarks/throughput.py [--device cpu|cuda] [--seconds 3] [--quick]

Rows (each timed for about ``--seconds`` after a warm-up, through probdiff's backends and the
family's own sampler, as ``probdiff fit`` and ``probdiff sample`` run them):

* DDPM training (default estimator, T = 1000) with the default U-Net (32,64) on 8x8 digits,
  28x28 grey and 32x32 RGB uint8 images, batch 128: images per second;
* DDPM sampling of 256 images with ``ddim:50`` on the same shapes (an untrained network: the
  cost does not depend on the weights): images per second;
* the 2-D mixture with the MLP (128,128): training at batches of 256, 4096 and 65 536 rows
  (Pyro, and NumPyro's jitted step) and ancestral sampling (T = 1000) of 10 000 and 100 000
  points: samples per second.

The same script on a GPU (``--device cuda``) gives the column beside the CPU's; JAX runs on
the GPU where its CUDA build is installed.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from probdiff.backends import get_backend
from probdiff.data import as_dataset, load_dataset
from probdiff.request import make_family


def _family(data, device: str):
    from probdiff.models.ddpm.family import DDPMFamily

    family = make_family(
        "ddpm", DDPMFamily.default_options(T=1000), data, runtime={"device": device}
    )
    return family, family.prepare(data)


def _timed(fn, seconds: float, warm: int = 3) -> tuple[float, int]:
    """(seconds, calls) of ``fn`` after ``warm`` calls, called until ``seconds`` pass (at
    least once)."""
    for _ in range(warm):
        fn()
    calls, t0 = 0, time.perf_counter()
    while calls < 1 or time.perf_counter() - t0 < seconds:
        fn()
        calls += 1
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return time.perf_counter() - t0, calls


def train_rate(data, device: str, batch: int, seconds: float, backend_name: str = "pyro"):
    """Rows per second of the default DDPM training step on ``data`` (the family's program)."""
    family, x = _family(data, device)
    backend = get_backend(backend_name, device)
    program = family.program(backend_name, x, 0, "float32", device)
    rows = backend.array(x)
    backend.start(program, rows, lr=family.default_lr, seed=0)
    rng = np.random.default_rng(0)
    batches = [rng.choice(len(x), batch, replace=len(x) < batch) for _ in range(8)]
    taken = [backend.take(rows, idx) for idx in batches]  # on the device already
    state = {"i": 0}

    def step():
        backend.step(taken[state["i"] % len(taken)], len(x))  # float(loss): synchronises
        state["i"] += 1

    s, calls = _timed(step, seconds)
    return calls * batch / s, backend.params(), family


def sample_rate(family, params, n: int, sampler: str, seconds: float) -> float:
    """Samples per second of the family's sampler (drawn on its device)."""
    s, calls = _timed(lambda: family.run_sampler(params, n, 0, sampler), seconds, warm=1)
    return calls * n / s


def images(shape: tuple[int, ...], n: int = 1024):
    """``n`` random uint8 images of ``shape`` (C, H, W) as a data set (integer levels 0..255)."""
    x = np.random.default_rng(0).integers(0, 256, size=(n, *shape), dtype=np.uint8)
    return as_dataset(x)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cpu")
    p.add_argument("--seconds", type=float, default=3.0)
    p.add_argument("--quick", action="store_true", help="the smallest shapes and batches only")
    p.add_argument("--only", choices=("images", "2d"), default=None, help="one half of the rows")
    args = p.parse_args(argv)
    print(f"device: {args.device}; torch {torch.__version__}, {torch.get_num_threads()} threads")
    print(f"{'row':<40s} {'data':<11s} {'rate':>12s}  unit", flush=True)
    table = Table()

    shapes = {"digits 8x8": None, "28x28x1": (1, 28, 28), "32x32x3": (3, 32, 32)}
    for name, shape in shapes.items() if args.only != "2d" else ():
        if args.quick and shape is not None:
            continue
        data = load_dataset("digits") if shape is None else images(shape)
        rate, params, family = train_rate(data, args.device, 128, args.seconds)
        table.append(("DDPM training, U-Net 32,64", name, rate, "images/s (batch 128)"))
        rate = sample_rate(family, params, 256, "ddim:50", args.seconds)
        table.append(("DDPM sampling, ddim:50", name, rate, "images/s (256 at once)"))

    if args.only == "images":
        return 0
    mixture = load_dataset("mixture2d:n=100000")
    for backend_name in ("pyro", "numpyro"):
        for batch in (256,) if args.quick else (256, 4096, 65536):
            rate, params, family = train_rate(
                mixture, args.device, batch, args.seconds, backend_name
            )
            table.append(
                (f"DDPM training, MLP 128,128, {backend_name}", "mixture2d", rate,
                 f"samples/s (batch {batch})")
            )  # fmt: skip
    for n in (10_000,) if args.quick else (10_000, 100_000):
        rate = sample_rate(family, params, n, "ancestral", args.seconds)
        table.append(("DDPM sampling, ancestral T=1000", "mixture2d", rate, f"samples/s ({n})"))

    return 0


class Table(list):
    """Rows printed as they are measured."""

    def append(self, row: tuple[str, str, float, str]) -> None:
        super().append(row)
        name, data_name, rate, unit = row
        print(f"{name:<40s} {data_name:<11s} {rate:12.0f}  {unit}", flush=True)


if __name__ == "__main__":
    raise SystemExit(main())
