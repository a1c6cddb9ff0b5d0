"""Benchmark: the overhead of writing the VAE as a probabilistic program.

Time per training step of the Pyro VAE (SVI, TraceMeanField_ELBO: closed-form KL plus a
one-sample reconstruction term) against the same networks trained by a hand-written PyTorch
loss computing the same estimator, on minibatches of scikit-learn's digits, in one run.
Both use Adam at the same learning rate and one intra-op thread; the NumPyro twin (Flax
networks, jit-compiled update, compile time reported apart) runs the same steps. Before timing, the two
losses are evaluated at the same weights (mean of many draws) to show they estimate the
same ELBO.

    python benchmarks/vae_bench.py [--steps 300] [--batch-size 128] [--hidden 128] [--latent-dim 2]
                                   [--net mlp|conv] [--channels 16,32]
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
from timing import seconds_per_step

from probdiff.data import load_dataset
from probdiff.guides.vae import GaussianEncoder, VAEGuide
from probdiff.models.vae.family import VAEFamily
from probdiff.models.vae.model import Decoder, VAEModel
from probdiff.models.vae.networks import decoder_net, encoder_net
from probdiff.request import make_family


def torch_elbo(x, encoder, decoder, n_total):
    """The tutorial's loss by hand: one-sample log N(x | decode(z), s^2) minus closed-form KL."""
    loc, scale = encoder(x)
    z = loc + scale * torch.randn_like(loc)
    mean, s = decoder(z)
    d = x.shape[1]
    rec = (
        (-0.5 * ((x - mean) / s) ** 2).sum(-1) - d * torch.log(s) - 0.5 * d * math.log(2 * math.pi)
    )
    kl = 0.5 * (scale**2 + loc**2 - 1 - 2 * torch.log(scale)).sum(-1)
    return (rec - kl).sum() * n_total / x.shape[0]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--hidden", type=int, default=128)
    p.add_argument("--latent-dim", type=int, default=2)
    p.add_argument("--net", choices=("mlp", "conv"), default="mlp")
    p.add_argument("--channels", default="16,32")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    data = load_dataset("digits")
    family = make_family(
        "vae",
        VAEFamily.default_options(
            latent_dim=args.latent_dim,
            hidden=str(args.hidden),
            net=args.net,
            channels=args.channels,
        ),
        data,
    )
    xs = family.prepare(data)  # pixels scaled to [0, 1], as every method sees them
    x = torch.tensor(xs, dtype=torch.float32)
    n, L = x.shape[0], args.latent_dim
    rng = np.random.default_rng(0)
    batches = [
        torch.as_tensor(rng.choice(n, args.batch_size, replace=False)) for _ in range(args.steps)
    ]

    def nets(seed):
        torch.manual_seed(seed)
        shape = data.event_shape
        return (
            GaussianEncoder(encoder_net(args.net, shape, family.widths, 2 * L), L),
            Decoder(decoder_net(args.net, L, shape, family.widths)),
        )

    # same weights: the two estimators agree in expectation
    enc, dec = nets(0)
    pyro.clear_param_store()
    model, guide = VAEModel(dec, L), VAEGuide(enc)
    with torch.no_grad():
        ppl = np.array([-TraceMeanField_ELBO().loss(model, guide, x) for _ in range(1000)]) / n
        hand = np.array([float(torch_elbo(x, enc, dec, n)) for _ in range(1000)]) / n
    se = lambda v: v.std(ddof=1) / np.sqrt(len(v))  # noqa: E731
    print(
        f"ELBO per datum (pixels in [0, 1]) at the same weights, 1000 draws each: Pyro {ppl.mean():.4f} +- "
        f"{se(ppl):.4f}, by hand {hand.mean():.4f} +- {se(hand):.4f}"
    )

    warm = min(10, args.steps // 10)  # untimed first steps (allocation, caches)

    def timed(step) -> float:
        return seconds_per_step(step, batches, warm)

    rows = {}
    enc, dec = nets(1)
    pyro.clear_param_store()
    svi = SVI(VAEModel(dec, L), VAEGuide(enc), Adam({"lr": 1e-3}), TraceMeanField_ELBO())
    rows["Pyro SVI (TraceMeanField_ELBO)"] = timed(lambda idx: svi.step(x[idx], n_total=n))

    # where the overhead goes: the same Pyro loss with one torch Adam over all parameters
    # (pyro.optim keeps one optimiser per parameter tensor)
    enc, dec = nets(1)
    pyro.clear_param_store()
    model, guide, elbo = VAEModel(dec, L), VAEGuide(enc), TraceMeanField_ELBO()
    with torch.no_grad():
        elbo.loss(model, guide, x[:2], n_total=n)  # creates the parameters
    opt1 = torch.optim.Adam(list(pyro.get_param_store().values()), lr=1e-3)

    def pyro_loss_one_adam(idx):
        opt1.zero_grad()
        elbo.differentiable_loss(model, guide, x[idx], n_total=n).backward()
        opt1.step()

    rows["Pyro loss + one torch Adam"] = timed(pyro_loss_one_adam)

    enc, dec = nets(1)
    opt = torch.optim.Adam(list(enc.parameters()) + list(dec.parameters()), lr=1e-3)

    def hand_step(idx):
        opt.zero_grad()
        (-torch_elbo(x[idx], enc, dec, n)).backward()
        opt.step()

    rows["hand-written PyTorch loss"] = timed(hand_step)

    # NumPyro: the family's twin (Flax networks), jit-compiled update; compile time apart
    from probdiff.backends import get_backend

    backend = get_backend("numpyro")
    program = family.program("numpyro", xs, seed=1)
    arr = backend.array(xs)
    backend.start(program, arr, lr=1e-3, seed=1)
    t0 = time.perf_counter()
    backend.step(backend.take(arr, batches[0].numpy()), n)
    compile_s = time.perf_counter() - t0
    rows[f"NumPyro SVI (jit; compile {compile_s:.1f} s)"] = timed(
        lambda idx: backend.step(backend.take(arr, idx.numpy()), n)
    )

    base = rows["hand-written PyTorch loss"]
    print(f"\n{'method':32s} {'ms/step':>8s} {'x torch':>8s}")
    for name, sec in rows.items():
        print(f"{name:32s} {1000 * sec:8.3f} {sec / base:8.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
