"""Benchmark: a user's model trained by probdiff against the same model in a plain Pyro loop.

For each model, in one run with interleaved repeats (medians reported): milliseconds per SVI
step of (a) a plain ``pyro.infer.SVI`` loop with ClippedAdam and the same ELBO, as Pyro's
tutorials write it, and (b) ``probdiff.fit`` of the same model and guide (its training loop
only: ``metrics["seconds"] / steps``, which includes checkpoints and the held-out ELBO trace
at their defaults), and (c) the same without the held-out trace (``eval_every=0``). The models are those of the user-model tests: the
coin with a Beta guide, Bayesian regression with AutoNormal (``x @ w``), and Pyro's VAE
example with ``pyro.module`` networks on the digits.

    python benchmarks/usermodel_bench.py [--steps 500] [--repeats 3]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import pyro
import torch
from pyro.infer import SVI, Trace_ELBO
from pyro.infer.autoguide import AutoNormal
from pyro.optim import ClippedAdam

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
import test_usermodel as cases

import probdiff
from probdiff.usermodel import CodeRef


def write_vae(folder: Path) -> CodeRef:
    import textwrap

    path = folder / "vae.py"
    path.write_text(textwrap.dedent(cases.VAE))
    return path


def plain_loop(model, guide, data, steps: int, lr: float) -> float:
    """Milliseconds per step of Pyro's own SVI loop (after 10 untimed steps)."""
    pyro.clear_param_store()
    pyro.set_rng_seed(0)
    svi = SVI(model, guide, ClippedAdam({"lr": lr, "clip_norm": 10.0}), Trace_ELBO())
    args, kwargs = ((data,), {}) if not isinstance(data, dict) else ((), data)
    for _ in range(10):
        svi.step(*args, **kwargs)
    t0 = time.perf_counter()
    for _ in range(steps):
        svi.step(*args, **kwargs)
    return 1000 * (time.perf_counter() - t0) / steps


def probdiff_loop(
    model, guide, data, steps: int, lr: float, out: Path, eval_every: int | None = None
) -> float:
    run = probdiff.fit(
        model,
        guide,
        data=data,
        steps=steps,
        lr=lr,
        out=str(out),
        progress=False,
        posterior_samples=2,
        test_fraction=0.2,
        eval_every=eval_every,
    )
    return 1000 * run.metrics["seconds"] / steps


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=500)
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    tmp = Path(tempfile.mkdtemp(prefix="probdiff-bench-"))
    vae = write_vae(tmp)
    vae_module = CodeRef(vae, "model").load(0)
    digits = probdiff.load_dataset("digits:n=1000").arrays()
    reg = cases.regression_data(n=1000)
    coin = cases.flips(200)
    coin_module = tmp / "coin.py"
    import textwrap

    coin_module.write_text(textwrap.dedent(cases.COIN_PYRO))
    coin_fns = CodeRef(coin_module, "model").load(0)
    coin_guide = sys.modules[coin_fns.__module__].guide
    vae_guide = sys.modules[vae_module.__module__].guide
    rows = [
        # name, plain (model, guide, data on the 80 % training split), probdiff (model, guide, data)
        (
            "coin, Beta guide (160 flips)",
            (coin_fns, coin_guide, torch.tensor(coin[:160])),
            (f"{coin_module}:model", f"{coin_module}:guide", coin),
        ),
        (
            "regression, AutoNormal (800 rows)",
            (
                cases.regression,
                AutoNormal(cases.regression),
                {
                    "x": torch.tensor(reg["x"][:800], dtype=torch.float32),
                    "y": torch.tensor(reg["y"][:800], dtype=torch.float32),
                },
            ),
            (cases.regression, "auto:normal", reg),
        ),
        (
            "VAE, pyro.module (800 digits)",
            (vae_module, vae_guide, torch.tensor(digits[:800], dtype=torch.float32)),
            (f"{vae}:model", f"{vae}:guide", digits),
        ),
    ]
    times: dict[str, dict[str, list[float]]] = {
        name: {"plain": [], "probdiff": [], "loop": []} for name, *_ in rows
    }
    for r in range(args.repeats):
        for i, (name, plain, ours) in enumerate(rows):
            times[name]["plain"].append(plain_loop(*plain, args.steps, 0.01))
            times[name]["probdiff"].append(
                probdiff_loop(*ours, args.steps, 0.01, tmp / f"{r}_{i}_default")
            )
            times[name]["loop"].append(
                probdiff_loop(*ours, args.steps, 0.01, tmp / f"{r}_{i}_loop", eval_every=0)
            )
    print(
        f"{args.steps} steps, median of {args.repeats} interleaved repeats, one torch thread; "
        "ms per step"
    )
    print(
        f"{'model':34s} {'plain Pyro':>10s} {'probdiff':>9s} {'x':>5s} "
        f"{'no held-out trace':>17s} {'x':>5s}"
    )
    for name, t in times.items():
        plain = statistics.median(t["plain"])
        ours, loop = statistics.median(t["probdiff"]), statistics.median(t["loop"])
        print(
            f"{name:34s} {plain:10.3f} {ours:9.3f} {ours / plain:5.2f} {loop:17.3f} "
            f"{loop / plain:5.2f}"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
