"""``probdiff fit vae``: the variational autoencoder family (MATH.md 1b) on the engine.

Both backends: Pyro (torch networks) and NumPyro (Flax networks, :mod:`probdiff.models.vae_numpyro`,
:mod:`probdiff.guides.vae_numpyro`). A NumPyro run's parameters are converted to the torch
modules' names (:func:`numpyro_to_pyro_params`) for sampling and figures.
"""

from __future__ import annotations

import argparse

import numpy as np

from probdiff.data import Dataset
from probdiff.errors import ProbdiffError
from probdiff.family import Family, register
from probdiff.program import Program


def parse_hidden(text: str) -> list[int]:
    """'128,64' -> [128, 64]; '' or 'linear' -> [] (an affine encoder and decoder)."""
    if text.strip().lower() in ("", "linear", "none"):
        return []
    try:
        sizes = [int(t) for t in text.split(",")]
    except ValueError:
        raise ProbdiffError(f"--hidden must be comma-separated widths like 128,64, got {text!r}") from None
    if any(s < 1 for s in sizes):
        raise ProbdiffError(f"--hidden widths must be >= 1, got {text!r}")
    return sizes


@register
class VAEFamily(Family):
    name = "vae"
    summary = "variational autoencoder: Gaussian decoder (model), Gaussian encoder (guide)"
    backends = ("pyro", "numpyro")
    default_lr = 0.005
    default_steps = 3000

    @classmethod
    def add_arguments(cls, parser: argparse.ArgumentParser) -> None:
        g = parser.add_argument_group("vae")
        g.add_argument("--latent-dim", type=int, default=2, help="size L of z")
        g.add_argument("--hidden", default="128", help="hidden widths, e.g. 256,128; 'linear' for none")
        g.add_argument("--sigma-dec", default="learn",
                       help="decoder standard deviation: a number, or 'learn'")
        g.add_argument("--kl", choices=("closed", "mc"), default="closed",
                       help="prior-matching term: closed-form Gaussian KL, or Monte Carlo")
        g.add_argument("--iwae-k", type=int, default=100,
                       help="K of the importance-weighted bound IWAE_K reported as iwae")

    def __init__(self, options: dict, data: Dataset):
        super().__init__(options, data)
        o = self.options
        if o["latent_dim"] < 1:
            raise ProbdiffError(f"--latent-dim must be >= 1, got {o['latent_dim']}")
        self.hidden = parse_hidden(o["hidden"])
        if str(o["sigma_dec"]).lower() == "learn":
            self.sigma_dec = None
        else:
            try:
                self.sigma_dec = float(o["sigma_dec"])
            except ValueError:
                raise ProbdiffError(f"--sigma-dec must be a number or 'learn', got {o['sigma_dec']!r}") from None
            if not self.sigma_dec > 0:
                raise ProbdiffError(f"--sigma-dec must be positive, got {self.sigma_dec}")
        if o["iwae_k"] < 1:
            raise ProbdiffError(f"--iwae-k must be >= 1, got {o['iwae_k']}")
        self.dim = data.dim
        self.khat: np.ndarray | None = None

    IWAE_GROUPS = 4  # independent IWAE_K estimates per datum, for a standard error

    def metrics(self, backend, program, params, train, test, seed):
        """ELBO (train, held-out), and on the held-out split (else the training data) IWAE_K
        and the per-datum PSIS k-hat of the encoder, from S = max(4 K, 200) importance weights
        (IWAE_K from the first 4 K; k-hat from all, as Pareto fits need a tail of draws)."""
        from probdiff.diagnostics import iwae_bound, psis_khat
        out = super().metrics(backend, program, params, train, test, seed)
        prefix, x = ("test_", test) if test is not None and len(test) else ("", train)
        k = self.options["iwae_k"]
        data = backend.array(x)
        backend.set_params(program, data, params)
        lw = backend.local_log_weights(program, data, num_samples=max(k * self.IWAE_GROUPS, 200),
                                       seed=seed)
        bound, err = iwae_bound(lw[:k * self.IWAE_GROUPS], k)
        self.khat = psis_khat(lw)[1]
        out.update({prefix + "iwae": float(bound.mean()),
                    prefix + "iwae_stderr": float(np.sqrt((err ** 2).sum()) / len(x)),
                    "iwae": float(bound.mean()),  # DESIGN's key: held-out where there is a split
                    "iwae_k": k, prefix + "psis_khat_median": float(np.median(self.khat)),
                    prefix + "psis_khat_above_0.7": float((self.khat > 0.7).mean())})
        return out

    def program(self, backend, x, seed, dtype="float32", device="cpu") -> Program:
        elbo = "meanfield" if self.options["kl"] == "closed" else "trace"
        L = self.options["latent_dim"]
        if backend == "numpyro":
            import jax.numpy as jnp

            from probdiff.guides.vae_numpyro import VAEGuide as NumPyroGuide
            from probdiff.models.vae_numpyro import VAEModel as NumPyroModel
            jdtype = getattr(jnp, dtype)
            # the networks' initial weights come from the backend's key (start(..., seed))
            return Program(NumPyroModel(L, self.dim, self.hidden, self.sigma_dec, dtype=jdtype),
                           NumPyroGuide(self.dim, L, self.hidden, dtype=jdtype), elbo=elbo)
        if backend != "pyro":
            raise ProbdiffError(f"model vae has no {backend} backend")
        import torch

        from probdiff.guides.vae import GaussianEncoder, VAEGuide
        from probdiff.models.vae import GaussianDecoder, VAEModel
        torch.manual_seed(seed)
        decoder = GaussianDecoder(L, self.dim, self.hidden, self.sigma_dec)
        encoder = GaussianEncoder(self.dim, L, self.hidden)
        decoder.to(device=device, dtype=getattr(torch, dtype))
        encoder.to(device=device, dtype=getattr(torch, dtype))
        return Program(VAEModel(decoder, L), VAEGuide(encoder), elbo=elbo)

    # -- fitted networks ------------------------------------------------------------------
    def networks(self, params: dict[str, np.ndarray], x: np.ndarray):
        """(encoder, decoder) torch modules carrying the fitted ``params`` (of either backend)."""
        from probdiff.backends import get_backend
        params = numpyro_to_pyro_params(params)
        backend = get_backend("pyro")
        program = self.program("pyro", x, seed=0)
        data = backend.array(x)
        backend.start(program, data, lr=1e-3, seed=0)
        backend.set_params(program, data, params)
        program.guide(data[:1])  # pyro.module copies the store's values into the modules
        program.model(data[:1])
        return program.guide.encoder, program.model.decoder

    def sample(self, params, n, seed, sampler: str | None = None):
        """x = decode(z), z ~ N(0, I): the decoder mean (``mean``, default) or with its noise
        (``noisy``)."""
        import torch
        sampler = sampler or "mean"
        if sampler not in ("mean", "noisy"):
            raise ProbdiffError(f"--sampler for vae is mean or noisy, got {sampler!r}")
        _, decoder = self.networks(params, self.data.flat()[:2])
        gen = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            z = torch.randn(n, self.options["latent_dim"], generator=gen)
            loc, scale = decoder(z)
            x = loc + scale * torch.randn(loc.shape, generator=gen) if sampler == "noisy" else loc
        return x.numpy().astype(float).reshape((n,) + self.data.event_shape)

    def figures(self, run, idata, params, data):
        import torch
        from probdiff.models import vae_plots
        x = data.flat()
        encoder, decoder = self.networks(params, x[:2])
        with torch.no_grad():
            mu, _ = encoder(torch.as_tensor(x, dtype=torch.float32))
            recon, _ = decoder(mu[:12])
        names = [vae_plots.latent_figure(run.file("latent.png"), mu.numpy(), data.y)]
        grid = vae_plots.image_rows_figure(run.file("reconstructions.png"),
                                           [("data", x[:12]), ("decode(mu(x))", recon.numpy())],
                                           data.event_shape)
        samples = self.sample(params, 24, seed=0).reshape(24, -1)
        grid2 = vae_plots.image_rows_figure(run.file("samples.png"),
                                            [("decode(z), z ~ N(0, I)", samples[:12]),
                                             ("", samples[12:])], data.event_shape)
        names += [g for g in (grid, grid2) if g]
        if self.khat is not None and np.isfinite(self.khat).any():  # inf: too few draws (small K)
            names.append(vae_plots.khat_figure(run.file("psis_khat.png"), self.khat))
        return names



def numpyro_to_pyro_params(params: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """A NumPyro VAE's parameters under the Pyro program's names; other dicts unchanged.

    Flax ``{encoder,decoder}$params.Dense_i.kernel`` (in, out) is the transpose of torch's
    ``{encoder,decoder}$$$net.{2i}.weight`` (the tanh layers sit at the odd indices);
    ``decoder_log_scale`` is ``decoder$$$log_scale``.
    """
    if not any(k.startswith(("encoder$params.", "decoder$params.")) for k in params):
        return params
    out = {}
    for name, value in params.items():
        value = np.asarray(value)
        if name == "decoder_log_scale":
            out["decoder$$$log_scale"] = value
            continue
        module, layer, leaf = name.split(".")
        i = int(layer.split("_")[1])
        prefix = f"{module.split('$')[0]}$$$net.{2 * i}"
        out[prefix + (".weight" if leaf == "kernel" else ".bias")] = (
            value.T if leaf == "kernel" else value)
    return out
