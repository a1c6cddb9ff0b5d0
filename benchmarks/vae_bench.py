"""Benchmark: the overhead of writing the VAE as a probabilistic program.

Time per training step of the Pyro VAE (SVI, TraceMeanField_ELBO: closed-form KL plus a
one-sample reconstruction term) against the same networks trained by a hand-written PyTorch
loss computing the same estimator, on minibatches of scikit-learn's digits, in one run.
Both use Adam at the same learning rate and one intra-op thread; the NumPyro twin (Flax
networks, jit-compiled update, compile time reported apart) runs the same steps. Before timing, the two
losses are evaluated at the same weights (mean of many draws) to show they estimate the
same ELBO.

    python benchmarks/vae_bench.py [--steps 300] [--batch-size 128] [--hidden 128] [--latent-dim 2]
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
from probdiff.guides.vae import GaussianEncoder, VAEGuide
from probdiff.models.vae import GaussianDecoder, VAEModel


def torch_elbo(x, encoder, decoder, n_total):
    """The tutorial's loss by hand: one-sample log N(x | decode(z), s^2) minus closed-form KL."""
    loc, scale = encoder(x)
    z = loc + scale * torch.randn_like(loc)
    mean, s = decoder(z)
    d = x.shape[1]
    rec = (-0.5 * ((x - mean) / s) ** 2).sum(-1) - d * torch.log(s) - 0.5 * d * math.log(2 * math.pi)
    kl = 0.5 * (scale ** 2 + loc ** 2 - 1 - 2 * torch.log(scale)).sum(-1)
    return (rec - kl).sum() * n_total / x.shape[0]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--hidden", type=int, default=128)
    p.add_argument("--latent-dim", type=int, default=2)
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    x = torch.tensor(load_dataset("digits").flat(), dtype=torch.float32)
    n, d, L = x.shape[0], x.shape[1], args.latent_dim
    rng = np.random.default_rng(0)
    batches = [torch.as_tensor(rng.choice(n, args.batch_size, replace=False))
               for _ in range(args.steps)]

    def nets(seed):
        torch.manual_seed(seed)
        return GaussianEncoder(d, L, [args.hidden]), GaussianDecoder(L, d, [args.hidden])

    # same weights: the two estimators agree in expectation
    enc, dec = nets(0)
    pyro.clear_param_store()
    model, guide = VAEModel(dec, L), VAEGuide(enc)
    with torch.no_grad():
        ppl = np.array([-TraceMeanField_ELBO().loss(model, guide, x) for _ in range(1000)]) / n
        hand = np.array([float(torch_elbo(x, enc, dec, n)) for _ in range(1000)]) / n
    se = lambda v: v.std(ddof=1) / np.sqrt(len(v))  # noqa: E731
    print(f"ELBO per datum at the same weights (1000 draws each): Pyro {ppl.mean():.4f} +- "
          f"{se(ppl):.4f}, by hand {hand.mean():.4f} +- {se(hand):.4f}")

    rows = {}
    enc, dec = nets(1)
    pyro.clear_param_store()
    svi = SVI(VAEModel(dec, L), VAEGuide(enc), Adam({"lr": 1e-3}), TraceMeanField_ELBO())
    t0 = time.perf_counter()
    for idx in batches:
        svi.step(x[idx], n_total=n)
    rows["Pyro SVI (TraceMeanField_ELBO)"] = (time.perf_counter() - t0) / args.steps

    enc, dec = nets(1)
    opt = torch.optim.Adam(list(enc.parameters()) + list(dec.parameters()), lr=1e-3)
    t0 = time.perf_counter()
    for idx in batches:
        opt.zero_grad()
        (-torch_elbo(x[idx], enc, dec, n)).backward()
        opt.step()
    rows["hand-written PyTorch loss"] = (time.perf_counter() - t0) / args.steps

    # NumPyro: the family's twin (Flax networks), jit-compiled update; compile time apart
    from probdiff.backends import get_backend
    from probdiff.fitting import make_family
    from probdiff.models.vae_family import VAEFamily
    data = load_dataset("digits")
    family = make_family("vae", VAEFamily.default_options(latent_dim=L, hidden=str(args.hidden)),
                         data)
    backend = get_backend("numpyro")
    xs = data.flat()
    program = family.program("numpyro", xs, seed=1)
    arr = backend.array(xs)
    backend.start(program, arr, lr=1e-3, seed=1)
    t0 = time.perf_counter()
    backend.step(backend.take(arr, batches[0].numpy()), n)
    compile_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    for idx in batches:
        backend.step(backend.take(arr, idx.numpy()), n)
    rows[f"NumPyro SVI (jit; compile {compile_s:.1f} s)"] = (time.perf_counter() - t0) / args.steps

    base = rows["hand-written PyTorch loss"]
    print(f"\n{'method':32s} {'ms/step':>8s} {'x torch':>8s}")
    for name, sec in rows.items():
        print(f"{name:32s} {1000 * sec:8.3f} {sec / base:8.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
