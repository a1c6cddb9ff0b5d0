"""``probdiff fit ncsn``: noise-conditional score networks and annealed Langevin
(docs/equations.md (3.8), (3.9), (3.10)).

The model is the NCSN loss written as a program (:mod:`probdiff.models.score.ncsn`) whose guide is
the noising process; sampling is annealed Langevin dynamics down the noise levels
(:func:`probdiff.diffusion.langevin.annealed_langevin`). Song and Ermon (2020)'s choices are the
defaults: sigma_max = the largest distance between data points, geometric levels, output
scaled by 1 / sigma, and a final denoising step.
"""

from __future__ import annotations

import argparse

import numpy as np

from probdiff.data import Dataset
from probdiff.errors import ProbdiffError
from probdiff.family import parse_sampler, register
from probdiff.models.score.common import ScoreFamily
from probdiff.program import Program


def largest_distance(x: np.ndarray, rows: int = 1000, seed: int = 0) -> float:
    """max ||x_i - x_j|| over (up to ``rows`` of) the rows of x."""
    rng = np.random.default_rng(seed)
    if len(x) > rows:
        x = x[rng.choice(len(x), rows, replace=False)]
    sq = (x * x).sum(1)
    d2 = sq[:, None] + sq[None, :] - 2 * x @ x.T
    return float(np.sqrt(max(d2.max(), 0.0)))


@register
class NCSNFamily(ScoreFamily):
    name = "ncsn"
    summary = "noise-conditional score network (NCSN loss), annealed Langevin sampling"
    module_name = "ncsn"

    @classmethod
    def add_arguments(cls, parser: argparse.ArgumentParser) -> None:
        g = parser.add_argument_group("ncsn")
        g.add_argument("--levels", type=int, default=10, help="noise levels L")
        g.add_argument(
            "--sigma-max",
            type=float,
            default=None,
            help="largest sigma (default: largest distance between data points, from up to 1000)",
        )
        g.add_argument("--sigma-min", type=float, default=0.01, help="smallest sigma")
        g.add_argument(
            "--subsample",
            type=int,
            default=None,
            help="levels per batch (default: all for vectors, 4 for images)",
        )
        g.add_argument("--steps-per-level", type=int, default=100, help="Langevin steps per level")
        g.add_argument(
            "--langevin-eps",
            type=float,
            default=0.05,
            help="Langevin step at level i: tau_i = eps * sigma_i^2 in x + tau s + sqrt(2 tau) z "
            "(Song and Ermon's epsilon, with alpha_i = 2 tau_i, is 2 eps sigma_L^2)",
        )
        cls.add_network_arguments(g)

    def __init__(self, options: dict, data: Dataset):
        super().__init__(options, data)
        o = self.options
        if o["levels"] < 2:
            raise ProbdiffError(f"--levels must be >= 2, got {o['levels']}")
        if o["sigma_max"] is None:
            o["sigma_max"] = largest_distance(self.prepare(data))
        if not 0 < o["sigma_min"] < o["sigma_max"]:
            raise ProbdiffError(
                f"need 0 < --sigma-min < --sigma-max, got {o['sigma_min']}, {o['sigma_max']}"
            )
        if o["subsample"] is None:
            o["subsample"] = o["levels"] if data.kind == "vector" else min(4, o["levels"])
        if not 1 <= o["subsample"] <= o["levels"]:
            raise ProbdiffError(f"--subsample must be in 1..{o['levels']}, got {o['subsample']}")
        if o["steps_per_level"] < 1 or not o["langevin_eps"] > 0:
            raise ProbdiffError(
                f"--steps-per-level must be >= 1 and --langevin-eps > 0, got "
                f"{o['steps_per_level']} and {o['langevin_eps']}"
            )
        from probdiff.diffusion.langevin import geometric_sigmas

        self.sigmas = geometric_sigmas(o["sigma_max"], o["sigma_min"], o["levels"])
        self.levels_kept: list | None = None

    objective = "-(NCSN loss)"
    held_out_objective = "-(NCSN loss)"

    def score_module(self, seed: int = 0, dtype: str = "float32", device: str = "cpu"):
        import torch

        from probdiff.models.score.ncsn import NoiseConditionalScore

        torch.manual_seed(seed)
        module = NoiseConditionalScore(self.network(len(self.sigmas)), self.sigmas)
        return module.to(device=device, dtype=getattr(torch, dtype))

    def program(self, backend, x, seed, dtype="float32", device="cpu") -> Program:
        return self._program(self.score_module(seed, dtype, device), self.options["subsample"])

    def _program(self, module, subsample):
        from probdiff.guides.score_matching import NoiseLevelGuide
        from probdiff.models.score.ncsn import NCSNModel

        k = None if subsample == len(self.sigmas) else subsample
        return Program(
            NCSNModel(module, k),
            NoiseLevelGuide(self.sigmas, k),
            elbo="meanfield",
            max_plate_nesting=2,
        )

    def evaluation_program(self, program: Program) -> Program:
        return self._program(program.model.score, None)

    def loss_program(self, module) -> Program:
        return self._program(module, None)

    def metrics(self, backend, program, params, train, test, seed):
        """The NCSN loss (all levels) per datum on the data, with standard errors; for a known
        density the explicit loss against the true blurred scores; for vectors the sliced
        Wasserstein distance of annealed-Langevin samples to the held-out data."""
        with self.phase("loss", "NCSN loss"):
            out = self.loss_metrics(params, train, test, seed)
        held = test if test is not None and len(test) else train
        p = "test_" if held is test else ""
        if self.scaling.identity and "locs" in self.data.meta:  # a known mixture (mixture2d)
            with self.phase("explicit_loss", "explicit loss against the true scores"):
                out[p + "explicit_loss"] = self.explicit_loss(params, held, seed)
        if self.data.kind == "vector":
            n = min(len(held), 2000)
            with self.phase("sample", f"{n} samples, annealed Langevin"):
                samples = self.run_sampler(params, n, seed)[0].numpy()
            self.keep("samples", samples)
            out.update(self.sample_distance(samples, train, held, seed, p))
        return out

    def explicit_loss(self, params, x: np.ndarray, seed: int) -> float:
        """(1/L) sum_i 0.5 sigma_i^2 E||s_theta(x~, i) - grad log q_sigma_i(x~)||^2 with the true
        blurred mixture's score (the NCSN loss minus its constant); docs/equations.md (3.4),
        (3.11)."""
        import torch

        from probdiff.data import SphericalGaussianMixture
        from probdiff.diffusion.mixture_score import GaussianMixture

        meta = self.data.meta
        truth = GaussianMixture.of_dataset_density(
            SphericalGaussianMixture(meta["weights"], meta["locs"], meta["scales"])
        )
        module = self.load_module(self.score_module(), params)
        gen = torch.Generator().manual_seed(seed)
        x0 = torch.as_tensor(x, dtype=torch.float64)
        total = 0.0
        with torch.no_grad():
            for i, sigma in enumerate(self.sigmas.tolist()):
                xn = x0 + sigma * torch.randn(x0.shape, generator=gen, dtype=torch.float64)
                s = module(xn.float(), i).double()
                diff = s - truth.noisy_score(sigma)(xn)
                total += float(0.5 * sigma**2 * diff.pow(2).sum(1).mean())
        return total / len(self.sigmas)

    # -- sampling ---------------------------------------------------------------------------
    def run_sampler(
        self,
        params,
        n: int,
        seed: int,
        sampler: str | None = None,
        record: bool = False,
        progress: bool = False,
    ):
        """(x in model units (n, D), [x after each level]) by annealed Langevin."""
        import torch
        from tqdm.auto import tqdm

        from probdiff.diffusion.langevin import annealed_langevin

        _, steps = parse_sampler(
            sampler, ("annealed_langevin",), "annealed_langevin", self.options["steps_per_level"]
        )
        module = self.load_module(self.score_module(), params)
        gen = torch.Generator().manual_seed(seed)
        sig = self.sigmas
        x = float(sig[0]) * torch.randn(n, self.dim, generator=gen)
        tau_last = self.options["langevin_eps"] * float(sig[-1]) ** 2
        with (
            torch.no_grad(),
            tqdm(
                total=steps * len(sig),
                disable=not progress,
                leave=False,
                desc="annealed Langevin",
                unit="step",
            ) as bar,
        ):
            x, levels = annealed_langevin(
                lambda y, i: module(y, i),
                sig,
                x,
                tau_last,
                steps,
                gen,
                denoise=True,
                record_levels=record,
                progress=bar,
            )
        return x, levels

    def sample(self, params, n, seed, sampler: str | None = None):
        x, _ = self.run_sampler(params, n, seed, sampler, progress=n * self.dim > 1e5)
        return self.to_data_units(x.numpy())

    def figures(self, run, idata, params, data, artefacts):
        from probdiff.models.ddpm import plots as ddpm_plots
        from probdiff.models.score import plots as score_plots

        x = self.prepare(data)
        names = []
        if data.kind == "vector" and data.dim >= 2:
            _, levels = self.run_sampler(params, min(len(x), 1000), seed=0, record=True)
            names.append(
                score_plots.langevin_levels_figure(
                    run.file("langevin_trajectories.png"), x, levels, self.sigmas.tolist()
                )
            )
        if "samples" in artefacts:
            names.append(
                ddpm_plots.samples_vs_data_figure(
                    run.file("samples_vs_data.png"), artefacts["samples"], x
                )
            )
        return [n for n in names if n]
