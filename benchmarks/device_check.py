"""Every family and sampler end to end on one device: the check to run on a GPU machine.

    python benchmarks/device_check.py --device cuda [--backends pyro,numpyro] [--steps 300]
        [--out DIR]

For each built-in family, on each backend it has: a short ``probdiff fit ... --device D``
(digits for the image models, the 2-D mixture otherwise, on a held-out split), then
``probdiff sample`` with every sampler the family lists (``probdiff.models.SAMPLERS``), each
in its own process. Prints one line per command (status, seconds, the fit's held-out
metric) and exits non-zero if any failed. On the CPU it is the same check, slower.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

FITS = {
    "gmm": ["--data", "mixture2d", "--steps", "300"],
    "vae": ["--data", "digits", "--steps", "300", "--net", "conv"],
    "ddpm": ["--data", "digits", "--steps", "300", "--T", "100", "--ode-rows", "50"],
    "ddpm-2d": ["--data", "mixture2d", "--steps", "300", "--T", "100", "--ode-rows", "50"],
    "ncsn": ["--data", "mixture2d", "--steps", "300"],
    "sde": ["--data", "digits", "--steps", "300", "--ode-rows", "20"],
}
NUMPYRO = {"gmm", "vae-mlp", "ddpm-2d"}  # what the NumPyro backend runs (MLP networks)


def _run(argv: list[str]) -> tuple[bool, float, str]:
    t0 = time.perf_counter()
    out = subprocess.run(
        [sys.executable, "-m", "probdiff", *argv], capture_output=True, text=True, check=False
    )
    tail = (out.stderr.strip().splitlines() or [""])[-1]
    return out.returncode == 0, time.perf_counter() - t0, tail


def main(argv: list[str] | None = None) -> int:
    from probdiff.models import SAMPLERS

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cuda")
    p.add_argument("--backends", default="pyro,numpyro")
    p.add_argument("--steps", default="300", help="training steps of each fit")
    p.add_argument("--out", default=None, help="where the run folders go (default: a temp dir)")
    args = p.parse_args(argv)
    root = Path(args.out or tempfile.mkdtemp(prefix="probdiff-device-"))
    fits = dict(FITS, **{"vae-mlp": ["--data", "digits", "--steps", "300"]})
    failed = 0
    print(f"{'command':<58s} {'status':>6s} {'s':>7s}  metric")
    for backend in args.backends.split(","):
        for name, options in fits.items():
            if backend == "numpyro" and name not in NUMPYRO:
                continue
            family = name.split("-")[0]
            out = root / f"{name}-{backend}"
            if backend == "numpyro" and family == "ddpm":
                options = [*options, "--net", "mlp"]
            options = [args.steps if o == "300" else o for o in options]
            fit = ["fit", family, *options, "--out", str(out), "--quiet"]
            ok, seconds, tail = _run([*fit, "--device", args.device, "--backend", backend])
            metric = ""
            if ok:
                m = json.loads((out / "metrics.json").read_text())
                key = next((k for k in ("test_elbo", "test_loss", "elbo") if k in m), None)
                metric = f"{key} {m[key]:.4f}" if key else ""
            failed += not ok
            print(f"{'fit ' + name + ' ' + backend:<58s} {'ok' if ok else 'FAILED':>6s} "
                  f"{seconds:7.1f}  {metric or tail}")  # fmt: skip
            if not ok:
                continue
            for sampler in SAMPLERS[family] or (None,):
                chosen = sampler.replace("[:STEPS]", "") if sampler else None
                cmd = ["sample", str(out), "-n", "64"] + (["--sampler", chosen] if chosen else [])
                ok, seconds, tail = _run(cmd)
                failed += not ok
                label = f"  sample {name} {backend} {chosen or ''}"
                print(f"{label:<58s} {'ok' if ok else 'FAILED':>6s} {seconds:7.1f}  "
                      f"{'' if ok else tail}")  # fmt: skip
    print(f"run folders in {root}; {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
