"""Factor analysis declared as code: the README's worked example of a user's own model.

    z ~ N(0, I_k),  x | z ~ N(mu + W z, diag(psi))

Fit it with the same runner, run folder and report as the built-in models:

    probdiff fit examples/factor_analysis.py:model --guide examples/factor_analysis.py:guide \\
        --data my_data.npz --out runs/fa --steps 2000 --lr 0.02
"""

import pyro
import pyro.distributions as dist
import torch
from pyro.distributions import constraints

K = 2  # latent factors


def model(x, n_total=None):
    n, d = x.shape
    W = pyro.param("W", lambda: 0.1 * torch.randn(d, K, dtype=x.dtype))
    mu = pyro.param("mu", lambda: x.mean(0))
    psi = pyro.param("psi", lambda: x.var(0), constraint=constraints.positive)
    with pyro.plate("data", n), pyro.poutine.scale(scale=(n_total or n) / n):
        z = pyro.sample("z", dist.Normal(torch.zeros(K, dtype=x.dtype), 1.0).to_event(1))
        pyro.sample("obs", dist.Normal(mu + z @ W.T, psi.sqrt()).to_event(1), obs=x)


def guide(x, n_total=None):
    n, d = x.shape
    A = pyro.param("A", lambda: torch.zeros(K, d, dtype=x.dtype))
    b = pyro.param("b", lambda: torch.zeros(K, dtype=x.dtype))
    s = pyro.param("s", lambda: torch.ones(K, dtype=x.dtype), constraint=constraints.positive)
    with pyro.plate("data", n), pyro.poutine.scale(scale=(n_total or n) / n):
        pyro.sample("z", dist.Normal(x @ A.T + b, s).to_event(1))


def main(argv=None):
    """Make a small factor-analysis data set and fit this file's model to it."""
    import argparse
    import tempfile
    from pathlib import Path

    import numpy as np

    from probdiff.cli import main as probdiff

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default="runs/factor_analysis")
    p.add_argument("--steps", type=int, default=2000)
    p.add_argument("--n", type=int, default=2000)
    args = p.parse_args(argv)
    rng = np.random.default_rng(0)
    w = rng.normal(size=(5, K))
    x = rng.normal(size=(args.n, K)) @ w.T + rng.normal(
        scale=[0.3, 0.5, 0.4, 0.6, 0.2], size=(args.n, 5)
    )
    data = Path(tempfile.mkdtemp()) / "fa.npz"
    np.savez(data, x=x)
    here = Path(__file__)
    return probdiff(
        [
            "fit",
            f"{here}:model",
            "--guide",
            f"{here}:guide",
            "--data",
            str(data),
            "--out",
            args.out,
            "--steps",
            str(args.steps),
            "--lr",
            "0.02",
            "--quiet",
        ]
    )


if __name__ == "__main__":
    raise SystemExit(main())
