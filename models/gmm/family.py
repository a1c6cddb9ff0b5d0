"""``probdiff fit gmm``: the Gaussian mixture family (docs/equations.md (1.6)) on the engine.

Inference: ``svi`` (Pyro or NumPyro; the assignment enumerated in the model or amortised by an
encoder guide; globals by maximum likelihood, MAP or mean field), ``em`` (the closed-form EM,
docs/equations.md (1.9), of :mod:`probdiff.models.gmm.em`) and ``nuts`` (NumPyro NUTS on the
collapsed Bayesian model).
"""

from __future__ import annotations

import argparse

import numpy as np

from probdiff.data import Dataset
from probdiff.errors import ProbdiffError
from probdiff.family import Family, register
from probdiff.models.gmm import em as gmm_em
from probdiff.models.gmm.em import MixtureParams
from probdiff.program import Program
from probdiff.seeds import derive


@register
class GMMFamily(Family):
    name = "gmm"
    summary = "isotropic Gaussian mixture: enumerated or encoder guide, EM, NUTS"
    inferences = ("svi", "em", "nuts")
    default_lr = 0.05
    default_steps = 1000
    auxiliary_sites = ("locs_first", "locs_rest")

    @classmethod
    def add_arguments(cls, parser: argparse.ArgumentParser) -> None:
        g = parser.add_argument_group("gmm")
        g.add_argument("--components", "-K", type=int, default=3, help="number of components K")
        g.add_argument(
            "--prior",
            action="store_true",
            help="Bayesian variant: Dirichlet/Normal/LogNormal priors on the globals",
        )
        g.add_argument(
            "--globals",
            dest="globals_guide",
            choices=("none", "map", "meanfield"),
            default=None,
            help="guide of the globals (default: none, or map with --prior)",
        )
        g.add_argument(
            "--assignment",
            dest="local_guide",
            choices=("enum", "encoder"),
            default="enum",
            help="enumerate z in the model, or amortise q(z|x) by an encoder",
        )
        g.add_argument(
            "--encoder-hidden",
            type=int,
            default=0,
            help="hidden tanh units of the encoder (0: affine in (x, |x|^2), exact)",
        )
        g.add_argument(
            "--ordered",
            action="store_true",
            help="order the means by their first coordinate (removes label switching)",
        )
        g.add_argument("--num-chains", type=int, default=4, help="NUTS chains")
        g.add_argument("--num-warmup", type=int, default=500, help="NUTS warm-up draws per chain")
        g.add_argument("--num-samples", type=int, default=500, help="NUTS draws per chain")

    def __init__(self, options: dict, data: Dataset):
        super().__init__(options, data)
        o = self.options
        k, n = o["components"], data.n
        if k < 1:
            raise ProbdiffError(f"--components must be >= 1, got {k}")
        if k > n:
            raise ProbdiffError(f"--components {k} is larger than the data ({n} points)")
        if o["encoder_hidden"] < 0:
            raise ProbdiffError(f"--encoder-hidden must be >= 0, got {o['encoder_hidden']}")
        if o["globals_guide"] is None:
            o["globals_guide"] = "map" if o["prior"] else "none"
        if o["globals_guide"] != "none" and not o["prior"]:
            raise ProbdiffError(
                f"--globals {o['globals_guide']} needs --prior (maximum likelihood "
                "has no latent globals to guide)"
            )
        if o["prior"] and o["globals_guide"] == "none":
            raise ProbdiffError("--prior needs --globals map or meanfield")
        if o["ordered"] and o["globals_guide"] == "meanfield":
            raise ProbdiffError(
                "--ordered works with --globals map or --inference nuts, "
                "not with the mean-field guide"
            )
        x = data.flat()
        self.dim = x.shape[1]
        self.prior_loc = x.mean(0)
        spread = float(np.sqrt(x.var(0).mean())) or 1.0
        # the hyper-parameters of docs/equations.md (1.10)
        self.prior_scale, self.prior_sigma = 2.0 * spread, spread / 2.0

    def validate_request(self, inference, backend, settings, n_train, dtype):
        o = self.options
        if backend == "numpyro" and inference == "svi" and o["components"] == 1:
            raise ProbdiffError(
                "--components 1 on --backend numpyro: NumPyro's enumeration "
                "loses a one-category site; use --backend pyro or --inference em"
            )
        if o["components"] > n_train:
            raise ProbdiffError(
                f"--components {o['components']} is larger than the training split "
                f"({n_train} points)"
            )
        if inference in ("em", "nuts"):
            if o["local_guide"] != "enum":
                raise ProbdiffError(
                    f"--assignment {o['local_guide']} is an SVI guide; "
                    f"--inference {inference} sums z out exactly"
                )
            if settings.batch_size is not None:
                raise ProbdiffError(f"--batch-size is for SVI, not --inference {inference}")
        if inference == "em" and (o["prior"] or o["ordered"]):
            raise ProbdiffError("--inference em is maximum likelihood: drop --prior/--ordered")
        if inference == "nuts":
            if backend != "numpyro":
                raise ProbdiffError("--inference nuts runs on --backend numpyro")
            if dtype != "float32":
                raise ProbdiffError("--inference nuts runs in float32")
            if o["num_chains"] < 1 or o["num_warmup"] < 0 or o["num_samples"] < 1:
                raise ProbdiffError(
                    "NUTS needs --num-chains >= 1, --num-warmup >= 0, "
                    f"--num-samples >= 1; got {o['num_chains']}, "
                    f"{o['num_warmup']}, {o['num_samples']}"
                )
        elif o["ordered"] and not o["prior"]:
            raise ProbdiffError(
                "--ordered orders the means under a prior: add --prior (or use --inference nuts)"
            )

    _mcmc_draws: list[MixtureParams] | None = None

    def restore(self, idata) -> None:
        """Keep the MCMC draws of a NUTS fit: its metrics and samples use all of them."""
        if (
            idata is None
            or "posterior" not in idata.groups()
            or idata.posterior.attrs.get("inference_library") == "probdiff"
        ):
            return
        post = idata.posterior
        flat = {
            k: post[k].values.reshape((-1,) + post[k].shape[2:]).astype(float)
            for k in ("weights", "locs", "scales")
        }
        self._mcmc_draws = [
            MixtureParams(w, m, s) for w, m, s in zip(flat["weights"], flat["locs"], flat["scales"])
        ]

    def _predictive(self, x: np.ndarray) -> float:
        """Posterior predictive log density per datum, mean_n log (1/S) sum_s p(x_n | theta_s):
        invariant to the labelling of each draw, unlike the likelihood at the posterior mean
        (docs/equations.md (1.5))."""
        from scipy.special import logsumexp

        lp = np.stack([gmm_em.log_likelihood(x, p) for p in self._mcmc_draws])
        return float((logsumexp(lp, axis=0) - np.log(len(lp))).mean())

    # -- programs -----------------------------------------------------------------------
    def init_values(self, x: np.ndarray, seed: int) -> dict[str, np.ndarray]:
        from probdiff.data.rows import is_rows, spread_rows
        from probdiff.guides.gmm import encoder_init
        from probdiff.program import INIT_ROWS

        if is_rows(x):  # streamed data: k-means++ on rows spread over the file
            x = x[spread_rows(len(x), INIT_ROWS)]
        init = gmm_em.kmeans_pp_init(x, self.options["components"], np.random.default_rng(seed))
        return {
            **init.as_dict(),
            **encoder_init(
                self.dim, self.options["components"], self.options["encoder_hidden"], seed
            ),
        }

    def program(
        self, backend: str, x: np.ndarray, seed: int, dtype: str = "float32", device: str = "cpu"
    ) -> Program:
        o, init = self.options, self.init_values(x, seed)
        if backend == "pyro":
            import torch

            from probdiff.guides.gmm import MixtureGuide

            kw = {"dtype": getattr(torch, dtype), "device": device}
        else:
            import jax.numpy as jnp

            from probdiff.guides.gmm_numpyro import MixtureGuide

            kw = {"dtype": getattr(jnp, dtype)}
        from probdiff.models.gmm.model import GaussianMixture, MixturePrior

        prior = (
            MixturePrior(self.prior_loc, self.prior_scale, self.prior_sigma) if o["prior"] else None
        )
        model = GaussianMixture(
            o["components"], self.dim, init, prior=prior, ordered=o["ordered"], ppl=backend, **kw
        )
        guide = MixtureGuide(
            o["components"],
            init,
            globals_guide=o["globals_guide"],
            local_guide=o["local_guide"],
            ordered=o["ordered"],
            **kw,
        )
        return Program(model, guide, elbo="enum", max_plate_nesting=1)

    # -- results ------------------------------------------------------------------------
    def point_estimate(self, params: dict[str, np.ndarray]) -> MixtureParams:
        """pi, mu, sigma from fitted parameters: the MLE, the MAP point or the guide's mean
        (docs/equations.md (1.12))."""
        p = params
        if "weights" in p:
            return MixtureParams(p["weights"], p["locs"], p["scales"])
        if "weights_map" in p:
            if "locs_map" in p:
                locs = p["locs_map"]
            else:
                first = p["locs_first_map"][:, None]
                locs = (
                    np.concatenate([first, p["locs_rest_map"]], 1)
                    if "locs_rest_map" in p
                    else first
                )
            return MixtureParams(p["weights_map"], locs, p["scales_map"])
        conc = p["weights_concentration"]
        return MixtureParams(
            conc / conc.sum(), p["locs_loc"], np.exp(p["scales_loc"] + 0.5 * p["scales_scale"] ** 2)
        )

    def metrics(self, backend, program, params, train, test, seed):
        # Bayesian fits: the ELBO of held-out data alone would count KL(q(globals) || prior)
        # a second time, so the held-out split is scored by the predictive log-likelihood only
        elbo_test = None if self.options["prior"] else test
        out = super().metrics(backend, program, params, train, elbo_test, seed) if program else {}
        point = self.point_estimate({k: np.asarray(v, float) for k, v in params.items()})
        score = (
            self._predictive
            if self._mcmc_draws is not None
            else lambda x: gmm_em.log_likelihood(x, point).mean()
        )
        for prefix, x in (("", train), ("test_", test)):
            if x is not None and len(x):
                out[prefix + "log_likelihood"] = float(score(x))
                if self.data.log_prob is not None:
                    out[prefix + "true_log_likelihood"] = float(np.mean(self.data.log_prob(x)))
        if (
            train is not None
            and program is not None
            and self.options["globals_guide"] == "meanfield"
            and hasattr(backend, "log_weights")
        ):
            from probdiff.diagnostics import psis_khat

            data = backend.array(train)
            backend.set_params(program, data, params)
            lw = backend.log_weights(program, data, num_samples=200, seed=seed)
            out["psis_khat"] = float(psis_khat(lw[:, None])[1][0])
        return out

    def posterior(self, backend, program, params, x, num_samples, seed):
        draws = super().posterior(backend, program, params, x, num_samples, seed)
        if not self.options["prior"]:
            # maximum likelihood: the fitted globals are a point mass
            draws.update(
                {
                    k: np.broadcast_to(np.asarray(params[k]), (num_samples,) + np.shape(params[k]))
                    for k in ("weights", "locs", "scales")
                }
            )
        if "locs_first" in draws:  # ordered: the means are (locs_first, locs_rest)
            first = draws.pop("locs_first")[..., None]
            rest = draws.pop("locs_rest", first[..., :0])
            draws["locs"] = np.concatenate([first, rest], -1)
        if "assignment" in draws:  # the encoder's q(z | x)
            return draws
        # enumerated in the model: draws from the exact posterior p(z | x) at the point globals
        # (docs/equations.md (1.7))
        point = self.point_estimate({k: np.asarray(v, float) for k, v in params.items()})
        rng = np.random.default_rng(seed)
        resp = gmm_em.responsibilities(np.asarray(x, float), point)
        cum = resp.cumsum(1)
        u = rng.random((num_samples, len(x), 1))
        draws["assignment"] = (u > cum[None]).sum(-1).clip(max=resp.shape[1] - 1)
        return draws

    def inference_groups(self, backend, program, params, x, num_samples, seed):
        """The default groups, plus ``log_likelihood`` (log p(x_n | pi, mu, sigma) with z summed
        out, per draw of the globals; one draw at a point estimate) and ``posterior_predictive``
        (a data set of N rows per draw), both in closed form."""
        groups = super().inference_groups(backend, program, params, x, num_samples, seed)
        x = np.asarray(x, float)
        draws = self._global_draws(groups, params)
        rng = np.random.default_rng(derive(seed, 1))
        groups.log_likelihood["obs"] = np.stack([gmm_em.log_likelihood(x, p) for p in draws])
        groups.posterior_predictive["obs"] = np.stack(
            [gmm_em.sample(len(x), p, rng)[0] for p in draws]
        )
        if len(draws) == 1 and num_samples > 1:  # a point estimate: one draw, stated as such
            groups.notes.append(
                "log_likelihood and posterior_predictive at the point estimate "
                "(one draw): PSIS-LOO needs posterior draws (--prior with "
                "--globals meanfield, or --inference nuts)"
            )
        return groups

    def _global_draws(self, groups, params) -> list[MixtureParams]:
        """pi, mu, sigma per posterior draw where the globals vary, else the point estimate."""
        post = groups.posterior
        if all(k in post for k in ("weights", "locs", "scales")):
            return [
                MixtureParams(w, m, s)
                for w, m, s in zip(post["weights"], post["locs"], post["scales"])
            ]
        return [self.point_estimate({k: np.asarray(v, float) for k, v in params.items()})]

    def sample(self, params, n, seed):
        """Decoder draws at the fitted point, or from the posterior predictive of a NUTS fit
        (each sample under its own posterior draw, so label switching cannot blur them)."""
        rng = np.random.default_rng(seed)
        if self._mcmc_draws is not None:
            which = rng.integers(len(self._mcmc_draws), size=n)
            x = np.concatenate([gmm_em.sample(1, self._mcmc_draws[i], rng)[0] for i in which])
        else:
            point = self.point_estimate({k: np.asarray(v, float) for k, v in params.items()})
            x, _ = gmm_em.sample(n, point, rng)
        return x.reshape((n,) + self.data.event_shape)

    def run_other(self, inference, x, settings, backend_name):
        o = self.options
        if inference == "em":
            best = None
            for r in range(settings.restarts):
                init = gmm_em.kmeans_pp_init(
                    x, o["components"], np.random.default_rng(derive(settings.seed, 1000 * r))
                )
                p, trace = gmm_em.em_fit(x, init, max_iter=max(settings.steps, 1))
                if best is None or trace[-1] > best[1][-1]:
                    best = (p, trace)
            return best[0].as_dict(), None, {"steps": len(best[1]) - 1, "trace": best[1]}
        if inference == "nuts":
            return self._nuts(x, settings, backend_name)
        return super().run_other(inference, x, settings, backend_name)

    def _nuts(self, x, settings, backend_name):
        import jax.numpy as jnp

        from probdiff.backends.numpyro_mcmc import run_nuts
        from probdiff.models.gmm.model import GaussianMixture, MixturePrior

        o = self.options
        prior = MixturePrior(self.prior_loc, self.prior_scale, self.prior_sigma)
        model = GaussianMixture(
            o["components"],
            self.dim,
            {},
            prior=prior,
            ordered=o["ordered"],
            dtype=jnp.float32,
            ppl="numpyro",
        )
        # data-informed starts (best of several k-means++ seedings per chain): random starts
        # leave chains in local modes where one component covers two clusters
        inits = model.init_values(x, o["num_chains"], seed=settings.seed)
        idata = run_nuts(
            model,
            jnp.asarray(x, jnp.float32),
            num_chains=o["num_chains"],
            num_warmup=o["num_warmup"],
            num_samples=o["num_samples"],
            seed=settings.seed,
            progress=settings.progress,
            init_values=inits,
        )
        self.restore(idata)
        post = idata.posterior
        params = {
            "weights": post["weights"].mean(("chain", "draw")).values,
            "locs": post["locs"].mean(("chain", "draw")).values,
            "scales": post["scales"].mean(("chain", "draw")).values,
        }
        return (
            params,
            idata,
            {
                "steps": o["num_samples"],
                "num_chains": o["num_chains"],
                "num_warmup": o["num_warmup"],
            },
        )

    def figures(self, run, idata, params, data, artefacts):
        from probdiff.models.gmm import plots as gmm_plots

        point = self.point_estimate({k: np.asarray(v, float) for k, v in params.items()})
        names = [gmm_plots.mixture_figure(run.file("mixture.png"), data, point)]
        if (
            self.options["prior"]
            and idata is not None
            and "posterior" in idata.groups()
            and "locs" in idata.posterior
        ):
            names.append(gmm_plots.means_posterior_figure(run.file("posterior_locs.png"), idata))
        return names

    def report_lines(self, idata, metrics):
        from probdiff.diagnostics import label_switching

        if idata is None or "posterior" not in idata.groups() or idata.posterior.sizes["chain"] < 2:
            return []
        return label_switching(idata.posterior, "locs", component_dim=0)
