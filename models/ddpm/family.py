"""``probdiff fit ddpm``: the diffusion chain (docs/equations.md (2.6)) on the engine.

The reverse chain is the model, the forward process the guide (:mod:`probdiff.models.ddpm.chain`,
:mod:`probdiff.guides.ddpm`); ``--estimator`` picks how SVI estimates the ELBO:

* ``per_datum`` (default): one step t per datum, uniform over 1..T and weighted by T, Ho et
  al.'s Algorithm 1 as an unbiased ELBO at one network evaluation per datum,
  docs/equations.md (2.22);
* ``trace``: the full chain under plain ``Trace_ELBO`` with the guide written forwards (a),
  docs/equations.md (2.7);
* ``closed``: every term of the rewritten ELBO with closed-form KLs (b), docs/equations.md (2.8);
* ``subsampled``: the same with ``--subsample`` of the T - 1 steps per batch, scaled (c),
  docs/equations.md (2.14).

``--weighting simple`` turns (b)/(c) into L_simple (docs/equations.md (2.13)). Integer images are
scaled to [-1, 1] and decoded by the discretised Gaussian (Ho et al.), so ``bits_per_dim``
(docs/equations.md (2.19)) compares with published tables; continuous data are modelled as
they are (Gaussian decoder).
"""

from __future__ import annotations

import argparse
import math

import numpy as np

from probdiff.data import Dataset
from probdiff.diffusion.schedules import SCHEDULES, Schedule
from probdiff.errors import ProbdiffError
from probdiff.family import Family, parse_sampler, parse_widths, register
from probdiff.models.score.likelihood import add_ode_rows_argument, ode_rows
from probdiff.program import Program
from probdiff.scaling import DataScaling

ESTIMATORS = ("per_datum", "subsampled", "closed", "trace")
ODE_EPS = 1e-5  # the ODE sampler's end time, as the ODE likelihood's
EVAL_DRAWS = 2  # draws of the x_t per datum for the full bound (its Monte Carlo error)
TRAIN_EVAL_ROWS = 500  # elbo on the training data: a random subset of at most this many rows
# network rows (rows x draws x T) the full bound may use per split by default: about the
# work of a default training run, so evaluation never costs more than training
BOUND_BUDGET = {"vector": 1_000_000, "image": 200_000}


@register
class DDPMFamily(Family):
    name = "ddpm"
    summary = "denoising diffusion: reverse chain (model), forward process (guide)"
    backends = ("pyro", "numpyro")
    default_lr = 2e-3
    default_steps = 3000
    default_batch_size = 256
    auxiliary_sites = ("steps",)  # the plate's subsampled indices, not a latent
    held_out_keys = (
        "bits_per_dim",
        "bits_per_dim_stderr",
        "ode_bits_per_dim",
        "ode_bits_per_dim_stderr",
        "ode_nfe",
    )

    @classmethod
    def add_arguments(cls, parser: argparse.ArgumentParser) -> None:
        g = parser.add_argument_group("ddpm")
        g.add_argument("--T", type=int, default=1000, help="steps of the chain")
        g.add_argument("--schedule", choices=SCHEDULES, default="linear")
        g.add_argument(
            "--beta-start",
            type=float,
            default=None,
            help="first beta (linear: 1e-4 x 1000/T; scaled_linear: 0.00085)",
        )
        g.add_argument(
            "--beta-end",
            type=float,
            default=None,
            help="last beta (linear: 0.02 x 1000/T; scaled_linear: 0.012)",
        )
        g.add_argument("--parameterisation", choices=("eps", "x0", "score"), default="eps")
        g.add_argument(
            "--variance",
            choices=("fixed_small", "fixed_large", "learned"),
            default="fixed_small",
            help="reverse-step variance: sigma_q(t)^2, beta_t, or learned between them per "
            "coordinate (Nichol and Dhariwal; with --weighting simple their hybrid objective)",
        )
        g.add_argument(
            "--decoder-variance",
            choices=("beta1", "clipped"),
            default="beta1",
            help="fixed variances: the decoder p(x_0|x_1)'s variance, beta_1 or sigma_q(2)^2 "
            "(the published code's clipped log-variance)",
        )
        g.add_argument(
            "--hybrid-lambda",
            type=float,
            default=None,
            help="--variance learned with --weighting simple: lambda of L_simple + lambda "
            "L_vlb (default T / (1000 ln 2), Nichol and Dhariwal's 0.001 in these units)",
        )
        g.add_argument(
            "--estimator",
            choices=ESTIMATORS,
            default="per_datum",
            help="ELBO estimator for training: per_datum draws one step per datum (Ho et "
            "al.'s Algorithm 1); README: measured variances and speed",
        )
        g.add_argument(
            "--timesteps",
            choices=("uniform", "importance"),
            default="uniform",
            help="per_datum: each datum's step uniform (Algorithm 1), or importance-sampled "
            "with pi_t ~ sqrt(E[L_t^2]) over each term's last 10 values (Nichol and Dhariwal)",
        )
        g.add_argument(
            "--subsample",
            type=int,
            default=None,
            help="timesteps per batch for --estimator subsampled (default min(8, T-1))",
        )
        g.add_argument(
            "--weighting",
            choices=("elbo", "simple"),
            default="elbo",
            help="elbo: the variational bound; simple: Ho et al.'s L_simple",
        )
        g.add_argument(
            "--net",
            choices=("auto", "mlp", "unet"),
            default="auto",
            help="network: auto = unet for images, mlp for vectors",
        )
        g.add_argument("--hidden", default="128,128", help="widths of the time-conditioned MLP")
        g.add_argument(
            "--channels",
            default="32,64",
            help="U-Net widths per level (height and width divisible by 2^(levels-1))",
        )
        g.add_argument(
            "--decoder",
            choices=("auto", "gaussian", "discretized"),
            default="auto",
            help="p(x_0|x_1): auto = discretized for integer images, else gaussian",
        )
        g.add_argument(
            "--bound-rows",
            type=int,
            default=None,
            help="rows of each split for the full bound after training (default: as many as "
            "1e6 network evaluations allow for vectors, 2e5 for images, at least 100; "
            "0: all)",
        )
        add_ode_rows_argument(g)

    def __init__(self, options: dict, data: Dataset):
        super().__init__(options, data)
        o = self.options
        self.T = int(o["T"])
        if self.T < 2:
            raise ProbdiffError(f"--T must be >= 2, got {self.T}")
        kw = {}
        # Ho et al.'s range for T = 1000, rescaled to other T (docs/equations.md (2.2))
        if o["schedule"] == "linear":
            kw = {"beta_start": 1e-4 * 1000 / self.T, "beta_end": min(0.02 * 1000 / self.T, 0.999)}
        for key in ("beta_start", "beta_end"):
            if o.get(key) is not None:
                kw[key] = float(o[key])
        if o["schedule"] == "cosine" and any(
            o.get(k) is not None for k in ("beta_start", "beta_end")
        ):
            raise ProbdiffError("--beta-start/--beta-end do not apply to --schedule cosine")
        self.schedule = Schedule.make(o["schedule"], self.T, **kw)
        self.hidden = parse_widths(o["hidden"])
        self.net = o.get("net", "auto")
        if self.net == "auto":
            self.net = "unet" if data.kind == "image" else "mlp"
        if self.net == "unet":
            from probdiff.models.ddpm.networks import unet_widths

            self.channels = unet_widths(data.event_shape, o.get("channels", "32,64"))
        if o.get("subsample") is None:
            o["subsample"] = min(8, self.T - 1)
        if o["estimator"] == "subsampled" and not 1 <= o["subsample"] <= self.T - 1:
            raise ProbdiffError(
                f"--subsample must be in 1..T-1 = {self.T - 1}, got {o['subsample']}"
            )
        if o.get("timesteps", "uniform") != "uniform" and o["estimator"] != "per_datum":
            raise ProbdiffError("--timesteps importance needs --estimator per_datum")
        if o["variance"] == "learned" and o["estimator"] == "trace":
            raise ProbdiffError(
                "--variance learned needs --estimator per_datum, closed or subsampled"
            )
        if (
            o["variance"] == "learned"
            and o["weighting"] == "simple"
            and o["estimator"] != "per_datum"
        ):
            raise ProbdiffError(
                "--variance learned with --weighting simple (the hybrid objective) needs "
                "--estimator per_datum"
            )
        lam = o.get("hybrid_lambda")
        if lam is not None and not (lam >= 0 and math.isfinite(lam)):
            raise ProbdiffError(f"--hybrid-lambda must be a number >= 0, got {lam}")
        if o["estimator"] == "trace" and o["weighting"] != "elbo":
            raise ProbdiffError("--weighting simple needs --estimator closed or subsampled")
        integer = bool(data.meta.get("integer"))
        self.decoder = (
            o["decoder"]
            if o["decoder"] != "auto"
            else ("discretized" if integer and data.kind == "image" else "gaussian")
        )
        self.scaling = DataScaling.of(data, self.decoder, target=(-1.0, 1.0))
        self.data_log_jacobian = self.scaling.log_jacobian
        self.dim = data.dim
        ode_rows(o, data)  # a bad --ode-rows fails now, not after training
        if (o.get("bound_rows") or 0) < 0:
            raise ProbdiffError(f"--bound-rows must be >= 0, got {o['bound_rows']}")

    @property
    def objective(self) -> str:
        return "-(L_simple loss)" if self.options["weighting"] == "simple" else "ELBO"

    def prepare(self, data: Dataset) -> np.ndarray:
        return self.scaling.forward(data)

    # -- programs ---------------------------------------------------------------------------
    def chain(self, seed: int = 0, dtype: str = "float32", device: str = "cpu"):
        """A fresh reverse chain (network, schedule, parameterisation, decoder)."""
        import torch

        from probdiff.models.ddpm.chain import ReverseChain
        from probdiff.models.ddpm.networks import TimeMLP, UNet

        torch.manual_seed(seed)
        outputs = 2 if self.options["variance"] == "learned" else 1  # eps and v
        net = (
            UNet(self.data.event_shape, self.channels, self.T, outputs=outputs)
            if self.net == "unet"
            else TimeMLP(self.dim, self.hidden, self.T, outputs=outputs)
        )
        chain = ReverseChain(
            net,
            self.schedule,
            self.options["parameterisation"],
            self.options["variance"],
            self.decoder,
            self.scaling.model_levels,
            self.options.get("decoder_variance", "beta1"),
        )
        return chain.to(device=device, dtype=getattr(torch, dtype))

    def validate_request(self, inference, backend, settings, n_train, dtype) -> None:
        if backend == "numpyro" and self.options["estimator"] == "trace":
            raise ProbdiffError(
                "--estimator trace runs on Pyro only; NumPyro has the closed "
                "and subsampled estimators"
            )
        if backend == "numpyro" and self.options.get("decoder_variance", "beta1") != "beta1":
            raise ProbdiffError("--decoder-variance clipped runs on Pyro only")
        if backend == "numpyro" and self.options["variance"] == "learned":
            raise ProbdiffError("--variance learned runs on Pyro only")
        if backend == "numpyro" and self.options.get("timesteps", "uniform") != "uniform":
            raise ProbdiffError("--timesteps importance runs on Pyro only")
        if backend == "numpyro" and self.net == "unet":
            raise ProbdiffError("the U-Net runs on Pyro only; use --net mlp with --backend numpyro")

    def program(self, backend, x, seed, dtype="float32", device="cpu") -> Program:
        if backend == "numpyro":
            import jax.numpy as jnp

            # the network's initial weights come from the backend's key (start(..., seed))
            return self._numpyro_program(
                self.options["estimator"], self.options["weighting"], getattr(jnp, dtype)
            )
        if backend != "pyro":
            raise ProbdiffError(f"model ddpm has no {backend} backend")
        return self._program(
            self.options["estimator"], self.chain(seed, dtype, device), self.options["weighting"]
        )

    def _numpyro_program(self, estimator: str, weighting: str, dtype) -> Program:
        from probdiff.models.ddpm import chain_numpyro as dn
        from probdiff.models.ddpm.chain import simple_weights

        o = self.options
        scales = np.sqrt(self.schedule.reverse_variance(o["variance"]))
        weights = simple_weights(self.schedule, scales) if weighting == "simple" else None
        k = o["subsample"] if estimator == "subsampled" else None
        module = dn.TimeMLP(self.dim, tuple(self.hidden), self.T, dtype=dtype)
        if estimator == "per_datum":
            from probdiff.guides.ddpm_numpyro import PerDatumGuide
            from probdiff.models.ddpm.chain import per_datum_proposal

            proposal = per_datum_proposal(self.schedule, scales, weighting)
            model = dn.DDPMPerDatumModel(
                module,
                self.schedule,
                proposal,
                o["parameterisation"],
                o["variance"],
                self.decoder,
                self.scaling.model_levels,
            )
            model.dtype = dtype
            return Program(
                model,
                PerDatumGuide(self.schedule, proposal),
                elbo="meanfield",
                max_plate_nesting=1,
                vectorize_particles=False,
            )
        model = dn.DDPMTermsModel(
            module,
            self.schedule,
            o["parameterisation"],
            o["variance"],
            self.decoder,
            self.scaling.model_levels,
            k,
            weights,
        )
        model.dtype = dtype
        from probdiff.guides.ddpm_numpyro import MarginalGuide

        return Program(
            model, MarginalGuide(self.schedule, k, weights), elbo="meanfield", max_plate_nesting=2
        )

    def _program(self, estimator: str, chain, weighting: str = "elbo") -> Program:
        from probdiff.guides.ddpm import ForwardGuide, MarginalGuide, PerDatumGuide
        from probdiff.models.ddpm.chain import DDPMModel, DDPMPerDatumModel, DDPMTermsModel

        if estimator == "trace":
            return Program(DDPMModel(chain), ForwardGuide(self.schedule), elbo="trace")
        if estimator == "per_datum":
            model = DDPMPerDatumModel(
                chain,
                weighting,
                timesteps=self.options.get("timesteps", "uniform"),
                hybrid_lambda=self.options.get("hybrid_lambda"),
            )
            return Program(
                model,
                PerDatumGuide(self.schedule, model.proposal, model.hybrid),
                elbo="meanfield",
                max_plate_nesting=1,
                vectorize_particles=False,  # one step per row: rows are (N, D)
            )
        k = self.options["subsample"] if estimator == "subsampled" else None
        model = DDPMTermsModel(chain, k, weighting)
        return Program(
            model,
            MarginalGuide(self.schedule, k, model.step_weights),
            elbo="meanfield",
            max_plate_nesting=2,
        )

    # -- evaluation ---------------------------------------------------------------------------
    def trace_rows(self, n_test: int) -> int:
        """The held-out trace evaluates all T - 1 terms per row: at most 20 000 / T rows (the
        same rows each time, so the curve is smooth; the final bound uses more)."""
        return min(n_test, max(1, 20_000 // self.T))

    def evaluation_program(self, program: Program) -> Program:
        """The held-out trace uses the full bound (all T - 1 KLs, closed form) on the same
        network: a subsampled estimate with common random numbers would repeat one draw of t."""
        chain = getattr(program.model, "chain", None)
        if chain is not None:
            return self._program("closed", chain)
        return self._numpyro_program("closed", "elbo", program.model.dtype)

    def variational_bound(self, params, x: np.ndarray, seed: int, chunk: int | None = None) -> dict:
        """The full bound on the rows of ``x`` (model units), term by term: prior matching
        KL(q(x_T|x_0) || N(0, I)), the T - 1 KLs against q(x_{t-1}|x_t,x_0) in closed form (each
        x_t from q(x_t|x_0)), the decoder log p(x_0|x_1); ``EVAL_DRAWS`` draws per datum, by the
        torch chain (NumPyro runs are converted: the twins agree to 1e-10).

        Returns per datum: ``elbo`` (mean), ``stderr`` (standard error of the mean over the
        rows: their spread and the draws), ``mc_stderr`` (the Monte Carlo part alone, given
        the rows), ``rows`` (each row's bound, averaged over its draws), ``prior``,
        ``decoder``, ``kl`` (sums), and ``kl_per_step`` (T - 1,) for t = 2..T, each averaged
        over rows and draws. docs/equations.md (2.8), (2.9)."""
        import pyro
        import torch

        from probdiff.models.ddpm.chain import SITE_PREV, elbo_terms, numpyro_to_pyro_params, site

        chain = self.fitted_chain(numpyro_to_pyro_params(params))
        program = self._program("closed", chain)
        chunk = chunk or max(1, 2_000_000 // (self.T * self.dim))
        totals, var, prior, decoder, kl = [], 0.0, 0.0, 0.0, np.zeros(self.T - 1)
        # a scope of its own: the global store may hold the training run's (CUDA) tensors,
        # which pyro.module would copy into this CPU chain
        with torch.random.fork_rng(), torch.no_grad(), pyro.get_param_store().scope():
            pyro.set_rng_seed(seed)
            for start in range(0, len(x), chunk):
                part = torch.as_tensor(x[start : start + chunk], dtype=torch.float32)
                draws = []
                for _ in range(EVAL_DRAWS):
                    terms = elbo_terms(program.model, program.guide, part)
                    p_, d_, k_ = terms[site(self.T)], terms["x_0"], terms[SITE_PREV]
                    draws.append((p_ + d_ + k_.sum(0)).double().numpy())
                    prior += float(p_.sum()) / EVAL_DRAWS
                    decoder += float(d_.sum()) / EVAL_DRAWS
                    kl += -k_.sum(1).double().numpy() / EVAL_DRAWS
                draws = np.array(draws)  # (draws, rows)
                totals.append(draws.mean(0))
                var += float((draws.var(0, ddof=1) / EVAL_DRAWS).sum())
        n = len(x)
        rows = np.concatenate(totals)
        return {
            "elbo": float(rows.mean()),
            "stderr": float(rows.std(ddof=1) / math.sqrt(n)) if n > 1 else math.nan,
            "mc_stderr": math.sqrt(var) / n,
            "rows": rows,
            "prior": prior / n,
            "decoder": decoder / n,
            "kl": float(kl.sum()) / n,
            "kl_per_step": kl / n,
        }

    def metrics(self, backend, program, params, train, test, seed):
        """ELBO per datum on (up to 500 of) the training data and the held-out split, in data
        units; bits_per_dim = -ELBO / (D ln 2) (docs/equations.md (2.18), (2.19)) on held-out
        data (else training data); for data
        with a known density the true log-likelihood and true - ELBO (>= 0 up to Monte Carlo
        error); for vectors the sliced Wasserstein distance of samples to held-out data beside
        that of the training data to the held-out data (the floor at this sample size)."""
        from probdiff.diagnostics import sliced_wasserstein

        out: dict = {}
        used: dict[str, np.ndarray] = {}
        rng = np.random.default_rng(seed)
        cap = self.bound_rows()
        for key, x in (("elbo", train), ("test_elbo", test)):
            if x is None or len(x) == 0:
                continue
            if key == "elbo" and len(x) > min(TRAIN_EVAL_ROWS, cap):
                x = x[np.sort(rng.choice(len(x), min(TRAIN_EVAL_ROWS, cap), replace=False))]
            elif len(x) > cap:
                x = x[:cap]  # the held-out split is already in random order
            used[key] = x
            out[key + "_rows"] = len(x)
            with self.phase(key + "_bound", f"{key.replace('_', ' ')} bound, {len(x)} rows"):
                bound = self.variational_bound(params, x, seed)
            out[key] = bound["elbo"] + self.data_log_jacobian
            out[key + "_stderr"] = bound["stderr"]
            out[key + "_mc_stderr"] = bound["mc_stderr"]
            prefix = key[: -len("elbo")]
            out[prefix + "bound_prior"] = bound["prior"]
            out[prefix + "bound_decoder"] = bound["decoder"] + self.data_log_jacobian
            out[prefix + "bound_kl"] = -bound["kl"]
            self.keep("kl_per_step", bound["kl_per_step"])
            for k in ("decoder", "kl", "prior"):
                self.keep("bound_" + k, out[prefix + "bound_" + k])
        ref = "test_elbo" if "test_elbo" in out else "elbo"
        bits = self.dim * math.log(2)
        out["bits_per_dim"], out["bits_per_dim_stderr"] = (
            -out[ref] / bits,
            out[ref + "_stderr"] / bits,
        )
        p = "test_" if ref == "test_elbo" else ""
        out[p + "bits_per_dim"] = out["bits_per_dim"]
        held = test if p else train
        if self.data.log_prob is not None and self.scaling.identity:
            if "elbo" in used:  # on the same rows as elbo
                out["true_log_likelihood"] = float(np.mean(self.data.log_prob(used["elbo"])))
            out[p + "true_log_likelihood"] = float(np.mean(self.data.log_prob(used[ref])))
            out[p + "true_minus_elbo"] = out[p + "true_log_likelihood"] - out[ref]
        if ode_rows(self.options, self.data) > 0:
            with self.phase("ode_likelihood", "ODE likelihood"):
                out.update(self.ode_likelihood(params, held, seed, p))
        if self.data.kind == "vector":
            n = min(len(held), 2000)
            with self.phase("sample", f"{n} samples"):
                samples = self.sample(params, n, seed).reshape(n, -1)
            self.keep("samples", samples)
            out[p + "sliced_wasserstein"] = sliced_wasserstein(samples, held, seed=seed)
            if p and train is not None and len(train):
                out["sliced_wasserstein_train_test"] = sliced_wasserstein(
                    train[: len(test)], test, seed=seed
                )
        return out

    def bound_rows(self) -> int:
        """Rows per split for the full bound: ``--bound-rows``, or what the budget allows."""
        n = self.options.get("bound_rows")
        if n is not None:
            return n if n > 0 else 2**62
        budget = BOUND_BUDGET.get(self.data.kind, BOUND_BUDGET["vector"])
        return max(100, budget // (EVAL_DRAWS * self.T))

    def continuous_score(self, chain):
        """(sde, score(x, t)): the VP SDE whose marginals equal the chain's at t = i / T
        (:class:`probdiff.diffusion.sde.ScheduleSDE`) and the chain's network read as a score at
        continuous time, s = -eps_theta(x, t T) / std(t) (eps from any parameterisation);
        docs/equations.md (4.5), (4.9)."""
        from probdiff.diffusion.sde import ScheduleSDE

        sde = ScheduleSDE(self.schedule.abar)
        param = self.options["parameterisation"]

        def score(x, t):
            a, std = (v.to(x.dtype)[:, None] for v in sde.marginal(t))
            out = chain.split(chain.net(x, t * self.T))[0]
            eps = {"eps": out, "x0": (x - a * out) / std, "score": -std * out}[param]
            return -eps / std

        return sde, score

    def ode_likelihood(self, params, x: np.ndarray, seed: int, prefix: str = "test_") -> dict:
        """The probability-flow ODE's log-likelihood of the fitted chain on (up to
        ``--ode-rows``) rows of ``x``, beside the bound: for the discretised decoder
        a dequantised lower bound on the mass of each datum's bin (comparable with the ELBO);
        docs/equations.md (4.14), (4.15)."""
        import torch

        from probdiff.models.ddpm.chain import numpyro_to_pyro_params
        from probdiff.models.score.likelihood import ode_likelihood_metrics

        rows = x[: ode_rows(self.options, self.data)]
        sde, score = self.continuous_score(self.fitted_chain(numpyro_to_pyro_params(params)))
        width = None
        if self.decoder == "discretized":
            width = 2.0 / (self.scaling.model_levels - 1)
        with torch.no_grad():
            return ode_likelihood_metrics(
                sde, score, rows, self.dim, width, self.data_log_jacobian, seed, prefix
            )

    def report_lines(self, idata, metrics: dict) -> list[str]:
        """The likelihood table: the ELBO bound beside the probability-flow ODE and the true density."""
        from probdiff.models.score.likelihood import likelihood_table

        return likelihood_table(metrics, bound=True)

    # -- sampling ---------------------------------------------------------------------------
    def fitted_chain(self, params: dict[str, np.ndarray]):
        import torch

        from probdiff.models.ddpm.chain import numpyro_to_pyro_params

        params = numpyro_to_pyro_params(params)
        chain = self.chain(0)
        prefix = "ddpm$$$"
        state = {
            k[len(prefix) :]: torch.as_tensor(np.asarray(v), dtype=torch.float32)
            for k, v in params.items()
            if k.startswith(prefix)
        }
        chain.load_state_dict(state)
        return chain.eval()

    def run_sampler(
        self,
        params,
        n: int,
        seed: int,
        sampler: str | None = None,
        record: list[int] | None = None,
        progress: bool = False,
    ):
        """(x_0 in model units (n, D), {t: x_t}; on the CPU, drawn on the fit's device) from
        the fitted chain: ``ancestral``,
        ``ddim[:steps]`` (docs/equations.md (2.15), (2.16)) or ``ode_heun[:steps]``, the
        probability-flow ODE of :meth:`continuous_score` by Heun's method from t = 1 to
        ODE_EPS (docs/equations.md (4.13)); the ODE records no chain steps."""
        import torch
        from tqdm.auto import tqdm

        from probdiff.models.ddpm.sampling import ancestral, ddim

        name, steps = parse_sampler(
            sampler, ("ancestral", "ddim", "ode_heun"), "ancestral", 50, stepless=("ancestral",)
        )
        chain = self.fitted_chain(params).to(self.device)  # on the fit's device
        gen = torch.Generator(self.device).manual_seed(seed)
        if name == "ode_heun":
            from probdiff.diffusion.solvers import probability_flow

            sde, score = self.continuous_score(chain)
            x = torch.randn(n, self.dim, generator=gen, device=self.device)
            with (
                torch.inference_mode(),
                tqdm(total=steps, disable=not progress, desc="sample (ode_heun)") as bar,
            ):
                x, _, _ = probability_flow(sde, score, x, steps, gen, ODE_EPS, progress=bar)
            return x.cpu(), {}
        total = self.T if name == "ancestral" else min(steps, self.T)
        with tqdm(
            total=total, disable=not progress, desc=f"sample ({name})", unit="step", leave=False
        ) as bar:
            if name == "ancestral":
                x, kept = ancestral(
                    chain.eps,
                    self.schedule,
                    n,
                    self.dim,
                    gen,
                    self.options["variance"],
                    record,
                    progress=bar,
                    mean_and_scale=chain.mean_and_scale,  # one network call per step
                )
            else:
                x, kept = ddim(
                    chain.eps, self.schedule, n, self.dim, gen, steps, 0.0, record, progress=bar
                )
        return x.cpu(), {t: v.cpu() for t, v in kept.items()}

    def posterior(self, backend, program, params, x, num_samples, seed):
        """The guide is the fixed forward process q(x_1:T | x_0), not a fitted posterior, and
        its draws (x_t at randomly chosen steps) summarise nothing: none are kept."""
        return {}

    def sample(self, params, n, seed, sampler: str | None = None):
        """x_0 from the reverse chain (``ancestral``, ``ddim[:steps]`` or ``ode_heun[:steps]``),
        in data units;
        integer images are clipped to the range and rounded to their levels."""
        x, _ = self.run_sampler(params, n, seed, sampler, progress=n * self.T > 1e6)
        x = x.numpy().astype(float)
        if not self.scaling.identity:
            x = np.round(self.scaling.inverse(np.clip(x, -1.0, 1.0)))
        return x.reshape((n,) + self.data.event_shape)

    def figures(self, run, idata, params, data, artefacts):
        from probdiff.models.ddpm import plots as ddpm_plots

        names = []
        x = self.prepare(data)
        ts = sorted(
            {self.T, int(self.T * 0.5), int(self.T * 0.2), int(self.T * 0.05), 1, 0}, reverse=True
        )
        n = 8 if data.kind == "image" else min(len(x), 1000)  # image rows show four samples
        _, kept = self.run_sampler(params, n, seed=0, record=ts)
        names.append(
            ddpm_plots.trajectories_figure(
                run.file("trajectories.png"), self.schedule, x, kept, data.event_shape, self.scaling
            )
        )
        if "kl_per_step" in artefacts:
            parts = {k: float(artefacts["bound_" + k]) for k in ("decoder", "kl", "prior")}
            names.append(
                ddpm_plots.kl_profile_figure(
                    run.file("bound_terms.png"), artefacts["kl_per_step"], parts
                )
            )
        if data.kind == "vector" and "samples" in artefacts:
            names.append(
                ddpm_plots.samples_vs_data_figure(
                    run.file("samples_vs_data.png"), artefacts["samples"], x
                )
            )
        return [name for name in names if name]
