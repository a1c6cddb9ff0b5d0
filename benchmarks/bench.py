"""``make bench``: probdiff against hand-written loops and peer libraries, one table, one run.

    python benchmarks/bench.py [--quick] [--json bench.json] [--seconds 15] [--seeds 2]

Each timing row runs probdiff and its reference interleaved (``--repeats`` rounds, one
intra-op thread), and reports the median ratio with its range over the rounds. Rows:

* DDPM training step, 2-D mixture, T = 1000, MLP 128,128, batch 256: the Pyro program of the
  default estimator (one step per datum, docs/equations.md (2.22)) through probdiff's backend,
  against a hand-written PyTorch loop of Ho et al.'s Algorithm 1 on the same network;
* DDPM quality at equal wall time: both loops train for ``--seconds`` from the same
  initial weights, then the full bound (2.8) on the same held-out rows and the sliced
  Wasserstein distance of 2000 ancestral samples, per seed;
* VAE training step on digits (MLP 128, batch 128): probdiff's backend against the same
  networks trained by a hand-written loss (the same estimator);
* ancestral sampling, T = 1000, 10 000 points: probdiff's sampler against the network's own
  time (the same 1000 calls with no sampler around them): the loop's overhead;
* GMM EM on ``blobs``: probdiff's EM against scikit-learn's GaussianMixture to the same
  tolerance, and the log-likelihood each reaches;
* start-up: ``probdiff fit --help`` and a 1-step ``probdiff fit gmm`` in fresh processes.

Targets (the performance issue's) are printed beside each row, with met or not.
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from probdiff.backends import get_backend
from probdiff.data import load_dataset, train_test_split
from probdiff.diagnostics import sliced_wasserstein
from probdiff.request import make_family

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def interleaved(fns: dict, rounds: int, steps: int, batches) -> dict[str, list[float]]:
    """ms per step of each function, measured in alternating rounds (after a warm-up)."""
    for f in fns.values():
        for b in batches[:10]:
            f(b)
    out: dict[str, list[float]] = {k: [] for k in fns}
    for r in range(rounds):
        for name, f in fns.items():
            chunk = batches[(r * steps) % len(batches) :][:steps]
            t0 = time.perf_counter()
            for b in chunk:
                f(b)
            out[name].append(1000 * (time.perf_counter() - t0) / len(chunk))
    return out


def ratio_row(label, times, ours, ref, target=None, unit="ms/step") -> dict:
    r = np.array(times[ours]) / np.array(times[ref])
    row = {
        "row": label,
        "probdiff": float(np.median(times[ours])),
        "reference": float(np.median(times[ref])),
        "unit": unit,
        "ratio": float(np.median(r)),
        "ratio_range": [float(r.min()), float(r.max())],
    }
    if target is not None:
        row["target"] = f"<= {target}x"
        row["met"] = bool(row["ratio"] <= target)
    return row


# -- DDPM ---------------------------------------------------------------------------------
def ddpm_setup(seed: int):
    from probdiff.models.ddpm.family import DDPMFamily

    data = load_dataset("mixture2d")
    family = make_family("ddpm", DDPMFamily.default_options(T=1000), data)
    train, test = train_test_split(data, 0.2, 0)
    return family, family.prepare(train), family.prepare(test)


def hand_algorithm_1(chain, abar):
    """Ho et al.'s Algorithm 1 on ``chain.net``: t ~ U{1..T}, one noise per datum, MSE."""
    opt = torch.optim.Adam(chain.parameters(), lr=2e-3)
    T = len(abar) - 1

    def step(x0):
        t = torch.randint(1, T + 1, (x0.shape[0],))
        eps = torch.randn_like(x0)
        a = abar[t][:, None]
        loss = ((eps - chain.net(a.sqrt() * x0 + (1 - a).sqrt() * eps, t)) ** 2).sum(1).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()

    return step


def probdiff_ddpm(family, x, seed, backend_name="pyro"):
    backend = get_backend(backend_name)
    program = family.program(backend_name, x, seed)
    data = backend.array(x)
    backend.start(program, data, lr=family.default_lr, seed=seed)
    n = len(x)
    return backend, (lambda idx: backend.step(backend.take(data, idx), n))


def ddpm_rows(args) -> list[dict]:
    family, x, test = ddpm_setup(0)
    rng = np.random.default_rng(0)
    batches = [rng.choice(len(x), 256, replace=False) for _ in range(400)]
    xt = torch.tensor(x, dtype=torch.float32)
    abar = torch.as_tensor(family.schedule.abar, dtype=torch.float32)
    hand = hand_algorithm_1(family.chain(1), abar)
    _, ours = probdiff_ddpm(family, x, 1)
    _, jitted = probdiff_ddpm(family, x, 1, "numpyro")
    times = interleaved(
        {"probdiff": ours, "numpyro": jitted, "hand": lambda idx: hand(xt[idx])},
        args.repeats,
        args.steps,
        batches,
    )
    rows = [
        ratio_row(
            "DDPM step, 2-D, T=1000, batch 256 (vs Algorithm 1 by hand)",
            times,
            "probdiff",
            "hand",
            1.3,
        ),
        ratio_row("  the same, NumPyro backend (jit)", times, "numpyro", "hand"),
    ]
    # quality at equal wall time
    held = test[:500]
    for seed in range(args.seeds):
        result = {}
        for who in ("hand", "probdiff"):
            torch.manual_seed(seed)
            if who == "hand":
                chain = family.chain(seed)
                step = hand_algorithm_1(chain, abar)
                run = lambda idx: step(xt[idx])  # noqa: E731
            else:
                backend, run = probdiff_ddpm(family, x, seed)
            rs = np.random.default_rng(seed)
            t0, steps = time.perf_counter(), 0
            while time.perf_counter() - t0 < args.seconds:
                run(rs.choice(len(x), 256, replace=False))
                steps += 1
            if who == "hand":
                params = {f"ddpm$$${k}": v.detach().numpy() for k, v in chain.state_dict().items()}
            else:
                params = backend.params()
            bound = family.variational_bound(params, held, seed=seed)
            samples = family.sample(params, 2000, seed)
            sw = sliced_wasserstein(samples.reshape(2000, -1), test, seed=seed)
            result[who] = (steps, bound["elbo"], bound["stderr"], sw)
        (hs, hb, he, hw), (ps, pb, pe, pw) = result["hand"], result["probdiff"]
        rows.append(
            {
                "row": f"DDPM after {args.seconds:g} s, seed {seed}: held-out bound (nats)",
                "probdiff": pb,
                "reference": hb,
                "unit": f"nats (+- {max(pe, he):.2f}); steps {ps} vs {hs}",
                "difference": pb - hb,
                "target": ">= hand - 2 s.e.",
                "met": bool(pb >= hb - 2 * math.hypot(pe, he)),
            }
        )
        rows.append(
            {
                "row": f"DDPM after {args.seconds:g} s, seed {seed}: sliced Wasserstein",
                "probdiff": pw,
                "reference": hw,
                "unit": "SW to held-out",
                "ratio": pw / hw,
            }
        )
    # samplers of the last probdiff chain trained above: samples per second and quality
    for sampler in ("ancestral", "ddim:200", "ddim:50", "ode_heun:50") if args.seeds else ():
        t0 = time.perf_counter()
        samples = family.sample(params, 2000, 0, sampler)
        seconds = time.perf_counter() - t0
        sw = sliced_wasserstein(samples.reshape(2000, -1), test, seed=0)
        rows.append(
            {
                "row": f"DDPM sampler {sampler}: 2000 samples per second",
                "probdiff": 2000 / seconds,
                "unit": f"samples/s; SW to held-out {sw:.3f}",
            }
        )
    return rows


def ddpm_digits_rows(args) -> list[dict]:
    """The DDPM step on the 8x8 digits with the default U-Net (32,64), batch 128: the
    network's share of the step is larger than with the 2-D MLP."""
    from probdiff.models.ddpm.family import DDPMFamily

    data = load_dataset("digits")
    family = make_family("ddpm", DDPMFamily.default_options(T=1000), data)
    x = family.prepare(data)
    xt = torch.tensor(x, dtype=torch.float32)
    abar = torch.as_tensor(family.schedule.abar, dtype=torch.float32)
    hand = hand_algorithm_1(family.chain(1), abar)
    _, ours = probdiff_ddpm(family, x, 1)
    rng = np.random.default_rng(0)
    batches = [rng.choice(len(x), 128, replace=False) for _ in range(200)]
    times = interleaved(
        {"probdiff": ours, "hand": lambda idx: hand(xt[idx])},
        args.repeats,
        max(10, args.steps // 4),
        batches,
    )
    return [
        ratio_row(
            "DDPM step, digits 8x8, U-Net 32,64, batch 128 (vs Algorithm 1)",
            times,
            "probdiff",
            "hand",
            1.3,
        )
    ]


# -- VAE ----------------------------------------------------------------------------------
def vae_rows(args) -> list[dict]:
    from vae_bench import torch_elbo

    from probdiff.guides.vae import GaussianEncoder
    from probdiff.models.vae.family import VAEFamily
    from probdiff.models.vae.model import Decoder
    from probdiff.models.vae.networks import decoder_net, encoder_net

    data = load_dataset("digits")
    family = make_family("vae", VAEFamily.default_options(hidden="128"), data)
    x = family.prepare(data)
    xt = torch.tensor(x, dtype=torch.float32)
    n, L = len(x), family.options["latent_dim"]
    torch.manual_seed(0)
    enc = GaussianEncoder(encoder_net("mlp", data.event_shape, family.widths, 2 * L), L)
    dec = Decoder(decoder_net("mlp", L, data.event_shape, family.widths))
    opt = torch.optim.Adam([*enc.parameters(), *dec.parameters()], lr=1e-3)

    def hand(idx):
        loss = -torch_elbo(xt[idx], enc, dec, n)
        opt.zero_grad()
        loss.backward()
        opt.step()

    steps = {"hand": hand}
    for name in ("pyro", "numpyro"):
        backend = get_backend(name)
        program = family.program(name, x, 0)
        arr = backend.array(x)
        backend.start(program, arr, lr=1e-3, seed=0)
        steps[name] = lambda idx, b=backend, a=arr: b.step(b.take(a, idx), n)
    rng = np.random.default_rng(0)
    batches = [rng.choice(n, 128, replace=False) for _ in range(400)]
    times = interleaved(steps, args.repeats, args.steps, batches)
    return [
        ratio_row("VAE step, digits, MLP 128, batch 128", times, "pyro", "hand", 1.3),
        ratio_row("  the same, NumPyro backend (jit)", times, "numpyro", "hand"),
    ]


# -- sampling -----------------------------------------------------------------------------
def sampling_rows(args) -> list[dict]:
    from probdiff.models.ddpm.sampling import ancestral

    family, _, _ = ddpm_setup(0)
    chain = family.chain(0).eval()
    n = args.samples
    times: dict[str, list[float]] = {"probdiff": [], "network": []}
    xs = torch.randn(n, 2)
    for _ in range(args.repeats):
        t0 = time.perf_counter()
        ancestral(
            chain.eps,
            family.schedule,
            n,
            2,
            torch.Generator().manual_seed(0),
            mean_and_scale=chain.mean_and_scale,  # as the family samples
        )
        times["probdiff"].append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        with torch.inference_mode():
            for t in range(family.T, 0, -1):
                chain.net(xs, t)
        times["network"].append(time.perf_counter() - t0)
    return [
        ratio_row(
            f"ancestral sampling, T=1000, {n} points (vs the network alone)",
            times,
            "probdiff",
            "network",
            1.05,
            unit="s",
        )
    ]


# -- GMM EM -------------------------------------------------------------------------------
def gmm_rows(args) -> list[dict]:
    from sklearn.mixture import GaussianMixture

    from probdiff.models.gmm.family import GMMFamily
    from probdiff.svi import SVISettings

    data = load_dataset("blobs")
    x = data.flat()
    family = make_family("gmm", GMMFamily.default_options(), data)
    times: dict[str, list[float]] = {"probdiff": [], "sklearn": []}
    ll = {}
    for r in range(args.repeats):
        t0 = time.perf_counter()
        params, _, extra = family.run_other(
            "em", x, SVISettings(steps=1000, seed=r, progress=False), "pyro"
        )
        times["probdiff"].append(time.perf_counter() - t0)
        ll["probdiff"] = float(np.asarray(extra.get("trace", [np.nan]))[-1])
        t0 = time.perf_counter()
        sk = GaussianMixture(
            family.options["components"], random_state=r, tol=1e-6, max_iter=1000
        ).fit(x)
        times["sklearn"].append(time.perf_counter() - t0)
        ll["sklearn"] = float(sk.score(x))
    row = ratio_row("GMM EM on blobs (vs scikit-learn)", times, "probdiff", "sklearn", 2.0, "s")
    row["unit"] = f"s; log-lik/datum {ll['probdiff']:.4f} vs {ll['sklearn']:.4f}"
    rows = [row]
    # SVI (z enumerated, full batch) to within 0.5% of scikit-learn's optimum
    from gmm_bench import svi_time_to_target

    target = ll["sklearn"] - 0.005 * abs(ll["sklearn"])
    for name in ("pyro", "numpyro"):
        runs = [
            svi_time_to_target(name, family, x, target, 0.05, 3000, 10, seed)
            for seed in range(args.repeats)
        ]
        seconds = [r["seconds"] for r in runs]
        rows.append(
            {
                "row": f"GMM SVI ({name}) to within 0.5% of scikit-learn's optimum",
                "probdiff": float(np.median(seconds)),
                "reference": float(np.median(times["sklearn"])),
                "ratio": float(np.median(seconds) / np.median(times["sklearn"])),
                "unit": f"s (median of {len(runs)} seeds; {sum(r['reached'] for r in runs)} "
                f"reached; first step {np.median([r['first_step'] for r in runs]):.2f} s)",
            }
        )
    return rows


# -- start-up -----------------------------------------------------------------------------
def startup_rows(args) -> list[dict]:
    rows = []
    for label, argv, target in (
        ("probdiff fit gmm --help", ["fit", "gmm", "--help"], 1.0),
        ("probdiff fit gmm --data blobs --steps 1", ["fit", "gmm", "--data", "blobs"], 5.0),
    ):
        best = math.inf
        for _ in range(args.repeats):
            with tempfile.TemporaryDirectory() as tmp:
                extra = ["--steps", "1", "--quiet", "--out", f"{tmp}/r"] if "--data" in argv else []
                t0 = time.perf_counter()
                subprocess.run(
                    [str(BIN / "probdiff"), *argv, *extra], check=True, capture_output=True
                )
                best = min(best, time.perf_counter() - t0)
        rows.append(
            {
                "row": f"start-up: {label}",
                "probdiff": best,
                "unit": "s (best of rounds)",
                "target": f"< {target} s",
                "met": best < target,
            }
        )
    return rows


def show(rows: list[dict]) -> None:
    print(f"\n{'':62s} {'probdiff':>9s} {'reference':>9s} {'ratio':>6s} {'range':>11s}  target")
    for r in rows:
        ref = f"{r['reference']:9.4g}" if "reference" in r else " " * 9
        ratio = f"{r['ratio']:6.2f}" if "ratio" in r else " " * 6
        span = "{:5.2f}-{:<5.2f}".format(*r["ratio_range"]) if "ratio_range" in r else " " * 11
        met = "" if "met" not in r else (" met" if r["met"] else " NOT met")
        print(
            f"{r['row'][:62]:62s} {r['probdiff']:9.4g} {ref} {ratio} {span}  "
            f"{r.get('target', '')}{met}"
        )
        print(f"{'':62s} ({r['unit']})")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="fewer rounds and seconds")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--steps", type=int, default=100, help="steps per timing round")
    p.add_argument("--seconds", type=float, default=15.0, help="training time per loop")
    p.add_argument("--seeds", type=int, default=2)
    p.add_argument("--samples", type=int, default=10_000)
    p.add_argument("--json", default="bench.json")
    args = p.parse_args(argv)
    if args.quick:
        args.repeats, args.steps, args.seconds, args.seeds = 3, 50, 5.0, 1
        args.samples = 2000
    torch.set_num_threads(1)
    rows: list[dict] = []
    for part in (startup_rows, ddpm_rows, ddpm_digits_rows, vae_rows, sampling_rows, gmm_rows):
        rows += part(args)
        print(f"{part.__name__[:-5]} done", flush=True)
    show(rows)
    Path(args.json).write_text(json.dumps({"rows": rows, "args": vars(args)}, indent=1))
    print(f"\nwrote {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
