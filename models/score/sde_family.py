"""``probdiff fit sde``: a score-based SDE model (docs/equations.md (4.4), (4.6), (4.7), (4.8)) on
the engine.

Training is continuous-time denoising score matching written as a program
(:mod:`probdiff.models.score.sde`: the guide draws t and x_t from the forward SDE). Sampling
integrates the reverse SDE or the probability-flow ODE (:mod:`probdiff.diffusion.solvers`); the
exact likelihood comes from the flow ODE (:mod:`probdiff.diffusion.ode_likelihood`), in nats of the
data and as ``ode_bits_per_dim``.
"""

from __future__ import annotations

import argparse

import numpy as np

from probdiff.data import Dataset
from probdiff.diffusion import SDE_NAMES, SOLVERS
from probdiff.errors import ProbdiffError
from probdiff.family import parse_sampler, register
from probdiff.models.score import WEIGHTINGS
from probdiff.models.score.common import ScoreFamily
from probdiff.models.score.likelihood import (
    add_ode_rows_argument,
    ode_likelihood_metrics,
    ode_rows,
)
from probdiff.models.score.ncsn_family import largest_distance
from probdiff.program import Program

SAMPLE_EPS = 1e-3  # solvers stop at t = eps (Song et al.)
# samplers of the comparison figure, at about 200 network evaluations each
FIGURE_SAMPLERS = ("em:200", "reverse_diffusion:200", "pc:100", "ode_heun:100", "ode")


def _given(value, default: float) -> float:
    return default if value is None else float(value)


@register
class SDEFamily(ScoreFamily):
    name = "sde"
    summary = "score-based SDE (VP, VE, sub-VP): reverse-SDE / ODE samplers, exact ODE likelihood"
    module_name = "sde"
    objective = "-(score matching loss)"
    held_out_objective = "-(score matching loss)"
    held_out_keys = ("ode_bits_per_dim", "ode_bits_per_dim_stderr", "ode_nfe")

    @classmethod
    def add_arguments(cls, parser: argparse.ArgumentParser) -> None:
        g = parser.add_argument_group("sde")
        g.add_argument("--sde", choices=SDE_NAMES, default="vp")
        g.add_argument("--beta-min", type=float, default=None, help="VP / sub-VP beta(0) (0.1)")
        g.add_argument("--beta-max", type=float, default=None, help="VP / sub-VP beta(1) (20)")
        g.add_argument("--sigma-min", type=float, default=None, help="VE sigma(0) (0.01)")
        g.add_argument(
            "--sigma-max",
            type=float,
            default=None,
            help="VE sigma(1) (default: largest distance between data points, from up to 1000)",
        )
        g.add_argument("--eps", type=float, default=1e-5, help="smallest training time")
        g.add_argument(
            "--weighting",
            choices=WEIGHTINGS,
            default="sigma2",
            help="lambda(t) = std(t)^2, or g(t)^2 (likelihood weighting)",
        )
        add_ode_rows_argument(g)
        cls.add_network_arguments(g)

    def __init__(self, options: dict, data: Dataset):
        super().__init__(options, data)
        o = self.options
        ve = o["sde"] == "ve"
        unused = [
            f"--{k.replace('_', '-')}"
            for k in (("beta_min", "beta_max") if ve else ("sigma_min", "sigma_max"))
            if o.get(k) is not None
        ]
        if unused:
            raise ProbdiffError(f"{', '.join(unused)} do not apply to --sde {o['sde']}")
        if ve and o["sigma_max"] is None:
            o["sigma_max"] = largest_distance(self.prepare(data))
        if not 0 < o["eps"] < SAMPLE_EPS:
            raise ProbdiffError(f"--eps must be in (0, {SAMPLE_EPS}), got {o['eps']}")
        ode_rows(o, data)  # a bad --ode-rows fails now, not after training
        from probdiff.diffusion.sde import make_sde

        if ve:
            self.sde = make_sde(
                "ve", sigma_min=_given(o["sigma_min"], 0.01), sigma_max=o["sigma_max"]
            )
        else:
            self.sde = make_sde(o["sde"], _given(o["beta_min"], 0.1), _given(o["beta_max"], 20.0))

    def score_module(self, seed: int = 0, dtype: str = "float32", device: str = "cpu"):
        import torch

        from probdiff.models.score.sde import TimeScore

        torch.manual_seed(seed)
        return TimeScore(self.network(1), self.sde).to(device=device, dtype=getattr(torch, dtype))

    def program(self, backend, x, seed, dtype="float32", device="cpu") -> Program:
        return self.loss_program(self.score_module(seed, dtype, device))

    def loss_program(self, module) -> Program:
        from probdiff.guides.score_matching import SDEGuide
        from probdiff.models.score.sde import ScoreSDEModel

        o = self.options
        return Program(
            ScoreSDEModel(module, o["eps"], o["weighting"]),
            SDEGuide(self.sde, o["eps"]),
            elbo="meanfield",
        )

    def fitted_score(self, params):
        return self.load_module(self.score_module(), params)

    def metrics(self, backend, program, params, train, test, seed):
        """The score-matching loss per datum (with standard errors); on (``--ode-rows``) held-out
        rows the flow ODE's log-likelihood in nats of the data and bits per dimension (integer
        images: a dequantised bound on the mass), beside the true log density where known; for
        vectors the sliced Wasserstein distance of samples (Heun on the flow ODE, 199 NFE; every
        sampler of the figure also gets its own ``sliced_wasserstein_<sampler>``)."""
        import torch

        with self.phase("loss", "score-matching loss"):
            out = self.loss_metrics(params, train, test, seed)
        held = test if test is not None and len(test) else train
        p = "test_" if held is test else ""
        rows = held[: ode_rows(self.options, self.data)]
        if len(rows):
            with torch.no_grad(), self.phase("ode_likelihood", f"ODE likelihood, {len(rows)} rows"):
                out.update(
                    ode_likelihood_metrics(
                        self.sde,
                        self.fitted_score(params),
                        rows,
                        self.dim,
                        self.bin_width,
                        self.data_log_jacobian,
                        seed,
                        p,
                    )
                )
        if self.data.log_prob is not None and self.scaling.identity and len(rows):
            out[p + "true_log_likelihood"] = float(np.mean(self.data.log_prob(rows)))
        if self.data.kind == "vector":
            n = min(len(held), 2000)
            solver_samples = {}
            for name in FIGURE_SAMPLERS:
                with self.phase(f"sample {name}", f"{n} samples, {name}"):
                    x, _, nfe = self.run_sampler(params, n, seed, name)
                solver_samples[name] = x.numpy()
                self.keep(f"samples:{name}", solver_samples[name])
                self.keep(f"nfe:{name}", nfe)
            out.update(self.sample_distance(solver_samples["ode_heun:100"], train, held, seed, p))
            for name, x in solver_samples.items():
                out[f"{p}sliced_wasserstein_{name.replace(':', '_')}"] = self.sample_distance(
                    x, None, held, seed, p
                )[p + "sliced_wasserstein"]
        return out

    # -- sampling ---------------------------------------------------------------------------
    def run_sampler(
        self, params, n: int, seed: int, sampler: str | None = None, progress: bool = False
    ):
        """(x in model units (n, D), {}, nfe) from the named solver."""
        import torch
        from tqdm.auto import tqdm

        from probdiff.diffusion.solvers import solve

        name, steps = parse_sampler(sampler, SOLVERS, "ode_heun", 250)
        if name == "ode" and ":" in (sampler or ""):
            raise ProbdiffError(
                "--sampler ode is adaptive (RK45) and takes no :STEPS; use "
                "ode_euler:N or ode_heun:N for a fixed number of steps"
            )
        score = self.fitted_score(params)
        gen = torch.Generator().manual_seed(seed)
        x = self.sde.prior_sample((n, self.dim), gen)
        with (
            torch.no_grad(),
            tqdm(
                total=steps,
                disable=not progress or name == "ode",
                leave=False,
                desc=f"sample ({name})",
                unit="step",
            ) as bar,
        ):
            x, kept, nfe = solve(name, self.sde, score, x, steps, gen, SAMPLE_EPS, progress=bar)
        return x, kept, nfe

    def sample(self, params, n, seed, sampler: str | None = None):
        """x_0 by ``em|reverse_diffusion|pc|ode|ode_euler|ode_heun[:steps]`` in data units;
        default ode_heun:250 (499 NFE), the best measured on mixture2d (README)."""
        x, _, _ = self.run_sampler(params, n, seed, sampler, progress=n * self.dim > 1e5)
        return self.to_data_units(x.numpy())

    def figures(self, run, idata, params, data, artefacts):
        from probdiff.models.score import plots as score_plots

        samples = {k.split(":", 1)[1]: v for k, v in artefacts.items() if k.startswith("samples:")}
        if data.kind != "vector" or data.dim < 2 or not samples:
            return []
        labels = {k: f"{k} ({int(artefacts.get('nfe:' + k, -1))} NFE)" for k in samples}
        return [
            score_plots.solver_samples_figure(
                run.file("samples_by_solver.png"), self.prepare(data), samples, labels
            )
        ]

    def report_lines(self, idata, metrics: dict) -> list[str]:
        """The likelihood table: the flow ODE's log-likelihood beside the true density."""
        from probdiff.models.score.likelihood import likelihood_table

        return likelihood_table(metrics, bound=False)
