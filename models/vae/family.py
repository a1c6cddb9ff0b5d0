"""``probdiff fit vae``: the variational autoencoder family (docs/equations.md (1.13), (1.15)) on
the engine.

Both backends: Pyro (torch networks) and NumPyro (Flax networks, :mod:`probdiff.models.vae.model_numpyro`,
:mod:`probdiff.guides.vae_numpyro`). A NumPyro run's parameters are converted to the torch
modules' names (:func:`numpyro_to_pyro_params`) for sampling and figures.
"""

from __future__ import annotations

import argparse

import numpy as np

from probdiff.data import Dataset
from probdiff.errors import ProbdiffError
from probdiff.family import Family, parse_widths, register
from probdiff.models.vae import LIKELIHOODS
from probdiff.program import Program
from probdiff.scaling import DataScaling


@register
class VAEFamily(Family):
    name = "vae"
    summary = "variational autoencoder: decoder p(x|z) (model), Gaussian encoder q(z|x) (guide)"
    backends = ("pyro", "numpyro")
    default_lr = 0.005
    default_steps = 3000
    held_out_keys = ("iwae", "iwae_k")

    @classmethod
    def add_arguments(cls, parser: argparse.ArgumentParser) -> None:
        g = parser.add_argument_group("vae")
        g.add_argument("--latent-dim", type=int, default=2, help="size L of z")
        g.add_argument(
            "--net",
            choices=("mlp", "conv"),
            default="mlp",
            help="encoder/decoder networks: MLP (or affine), or small convolutional",
        )
        g.add_argument(
            "--hidden", default="128", help="MLP hidden widths, e.g. 256,128; 'linear' for none"
        )
        g.add_argument(
            "--channels", default="16,32", help="conv widths, one stride-2 layer each (--net conv)"
        )
        g.add_argument(
            "--likelihood",
            choices=LIKELIHOODS,
            default="gaussian",
            help="p(x|z) per pixel: gaussian, bernoulli (images binarised at half "
            "range), discretized Gaussian on the integer levels (images)",
        )
        g.add_argument(
            "--sigma-dec",
            default="learn",
            help="decoder standard deviation (in the model's units): a number, or 'learn'",
        )
        g.add_argument(
            "--kl",
            choices=("closed", "mc"),
            default="closed",
            help="prior-matching term: closed-form Gaussian KL, or Monte Carlo",
        )
        g.add_argument(
            "--iwae-k",
            type=int,
            default=100,
            help="K of the importance-weighted bound IWAE_K reported as iwae",
        )

    def __init__(self, options: dict, data: Dataset):
        super().__init__(options, data)
        o = self.options
        if o["latent_dim"] < 1:
            raise ProbdiffError(f"--latent-dim must be >= 1, got {o['latent_dim']}")
        self.likelihood = o.get("likelihood", "gaussian")
        self.kind = o.get("net", "mlp")
        self.widths = (
            parse_widths(o["hidden"], allow_none=True)
            if self.kind == "mlp"
            else parse_widths(o.get("channels", "16,32"), "--channels")
        )
        if self.kind == "conv":
            from probdiff.models.vae.networks import check_conv_shape

            check_conv_shape(data.event_shape, self.widths)
        if str(o["sigma_dec"]).lower() == "learn":
            self.sigma_dec = None
        else:
            try:
                self.sigma_dec = float(o["sigma_dec"])
            except ValueError:
                raise ProbdiffError(
                    f"--sigma-dec must be a number or 'learn', got {o['sigma_dec']!r}"
                ) from None
            if not self.sigma_dec > 0:
                raise ProbdiffError(f"--sigma-dec must be positive, got {self.sigma_dec}")
            if self.likelihood == "bernoulli":
                raise ProbdiffError("--sigma-dec has no meaning with --likelihood bernoulli")
        if o["iwae_k"] < 1:
            raise ProbdiffError(f"--iwae-k must be >= 1, got {o['iwae_k']}")
        self.scaling = DataScaling.of(data, self.likelihood)
        self.data_log_jacobian = self.scaling.log_jacobian
        self.dim = data.dim
        # one grey scale for data, reconstructions and samples: the integer range, if any
        self.value_range = None if self.scaling.identity else (self.scaling.low, self.scaling.high)

    def prepare(self, data: Dataset) -> np.ndarray:
        """The data in the model's units (see :class:`DataScaling`), checked against the
        likelihood (integer levels of the fitted data for ``discretized``)."""
        return self.scaling.forward(data)

    IWAE_GROUPS = 4  # independent IWAE_K estimates per datum, for a standard error

    def metrics(self, backend, program, params, train, test, seed):
        """ELBO (train, held-out), and on the held-out split (else the training data) IWAE_K
        and the per-datum PSIS k-hat of the encoder, from S = max(4 K, 200) importance weights
        (IWAE_K from the first 4 K; k-hat from all, as Pareto fits need a tail of draws);
        docs/equations.md (1.2), (1.4), (2.18)."""
        from probdiff.diagnostics import iwae_bound, psis_khat

        out = super().metrics(backend, program, params, train, test, seed)
        prefix, x = ("test_", test) if test is not None and len(test) else ("", train)
        k = self.options["iwae_k"]
        data = backend.array(x)
        backend.set_params(program, data, params)
        with self.phase("importance_weights", f"IWAE and PSIS k-hat, {len(x)} rows"):
            lw = backend.local_log_weights(
                program, data, num_samples=max(k * self.IWAE_GROUPS, 200), seed=seed
            )
        bound, err = iwae_bound(lw[: k * self.IWAE_GROUPS], k)
        khat = psis_khat(lw)[1]
        self.keep("psis_khat", khat)
        iwae = float(bound.mean()) + self.data_log_jacobian
        out.update(
            {
                prefix + "iwae": iwae,
                prefix + "iwae_stderr": float(np.sqrt((err**2).sum()) / len(x)),
                "iwae": iwae,  # DESIGN's key: held-out where there is a split
                "iwae_k": k,
                prefix + "psis_khat_median": float(np.median(khat)),
                prefix + "psis_khat_above_0.7": float((khat > 0.7).mean()),
            }
        )
        return out

    def program(self, backend, x, seed, dtype="float32", device="cpu") -> Program:
        elbo = "meanfield" if self.options["kl"] == "closed" else "trace"
        L, shape, levels = (
            self.options["latent_dim"],
            self.data.event_shape,
            self.scaling.model_levels,
        )
        if backend == "numpyro":
            import jax.numpy as jnp

            from probdiff.guides.vae_numpyro import VAEGuide as NumPyroGuide
            from probdiff.models.vae import networks_numpyro as nets
            from probdiff.models.vae.model_numpyro import VAEModel as NumPyroModel

            jdtype = getattr(jnp, dtype)
            # the networks' initial weights come from the backend's key (start(..., seed))
            dec = nets.decoder_net(self.kind, L, shape, self.widths, dtype=jdtype)
            enc = nets.encoder_net(self.kind, shape, self.widths, 2 * L, dtype=jdtype)
            return Program(
                NumPyroModel(dec, L, self.likelihood, self.sigma_dec, levels, jdtype),
                NumPyroGuide(enc, self.dim, L),
                elbo=elbo,
            )
        if backend != "pyro":
            raise ProbdiffError(f"model vae has no {backend} backend")
        import torch

        from probdiff.guides.vae import GaussianEncoder, VAEGuide
        from probdiff.models.vae.model import Decoder, VAEModel
        from probdiff.models.vae.networks import decoder_net, encoder_net

        torch.manual_seed(seed)
        decoder = Decoder(
            decoder_net(self.kind, L, shape, self.widths), self.likelihood, self.sigma_dec, levels
        )
        encoder = GaussianEncoder(encoder_net(self.kind, shape, self.widths, 2 * L), L)
        decoder.to(device=device, dtype=getattr(torch, dtype))
        encoder.to(device=device, dtype=getattr(torch, dtype))
        return Program(VAEModel(decoder, L), VAEGuide(encoder), elbo=elbo)

    # -- fitted networks ------------------------------------------------------------------
    def networks(self, params: dict[str, np.ndarray]):
        """(encoder, decoder) torch modules carrying the fitted ``params`` (of either backend)."""
        from probdiff.backends import get_backend

        params = numpyro_to_pyro_params(params)
        backend = get_backend("pyro")
        x = self.prepare(self.data.subset(slice(0, 1)).loaded())
        program = self.program("pyro", x, seed=0)
        data = backend.array(x)
        backend.start(program, data, lr=1e-3, seed=0)
        backend.set_params(program, data, params)
        program.guide(data)  # pyro.module copies the store's values into the modules
        program.model(data)
        return program.guide.encoder, program.model.decoder

    def sample(self, params, n, seed, sampler: str | None = None):
        """x ~ p(x | z), z ~ N(0, I), in data units: the decoder's mean E[x | z] (``mean``,
        default) or a draw of x (``noisy``)."""
        import torch

        sampler = sampler or "mean"
        if sampler not in ("mean", "noisy"):
            raise ProbdiffError(f"--sampler for vae is mean or noisy, got {sampler!r}")
        _, decoder = self.networks(params)
        with torch.random.fork_rng(), torch.no_grad():
            torch.manual_seed(seed)
            z = torch.randn(n, self.options["latent_dim"])
            x = decoder.distribution(z).sample() if sampler == "noisy" else decoder.mean(z)
        x = self.scaling.inverse(x.numpy().astype(float))
        if sampler == "noisy" and self.scaling.discrete:
            x = np.round(x)  # integer levels, free of float32 rounding
        return x.reshape((n,) + self.data.event_shape)

    def figures(self, run, idata, params, data, artefacts):
        import torch

        from probdiff.models.vae import plots as vae_plots

        x = self.prepare(data)
        encoder, decoder = self.networks(params)
        with torch.no_grad():
            mu, _ = encoder(torch.as_tensor(x, dtype=torch.float32))
            recon = decoder.mean(mu[:12]).numpy().astype(float)
        names = [vae_plots.latent_figure(run.file("latent.png"), mu.numpy(), data.y)]
        shown = "data" if not self.scaling.binarize else "data (binarised)"
        grid = vae_plots.image_rows_figure(
            run.file("reconstructions.png"),
            [
                (shown, self.scaling.inverse(x[:12])),
                ("E[x | z = mu(x)]", self.scaling.inverse(recon)),
            ],
            data.event_shape,
            self.value_range,
        )
        samples = self.sample(params, 24, seed=0).reshape(24, -1)
        grid2 = vae_plots.image_rows_figure(
            run.file("samples.png"),
            [("E[x | z], z ~ N(0, I)", samples[:12]), ("", samples[12:])],
            data.event_shape,
            self.value_range,
        )
        names += [g for g in (grid, grid2) if g]
        khat = artefacts.get("psis_khat")
        if khat is not None and np.isfinite(khat).any():  # inf: too few draws (small K)
            names.append(vae_plots.khat_figure(run.file("psis_khat.png"), khat))
        return names


def numpyro_to_pyro_params(params: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """A NumPyro VAE's parameters under the Pyro program's names (:mod:`probdiff.twins`);
    ``decoder_log_scale`` is ``decoder$$$log_scale``; other dicts unchanged."""
    from probdiff.twins import flax_to_torch

    return flax_to_torch(
        params,
        {"encoder": "encoder$$$net", "decoder": "decoder$$$net"},
        {"decoder_log_scale": "decoder$$$log_scale"},
    )
