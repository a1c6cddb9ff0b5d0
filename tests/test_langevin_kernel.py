"""Langevin MCMC kernel: MALA reproduces closed-form posteriors and NUTS; ULA's O(tau) bias.

Every tolerance is a multiple (4) of a Monte Carlo standard error se = sd / sqrt(ESS), with the
ESS from ArviZ (``method="mean"``, the ESS that governs the error of a mean). The variance of a
draw is checked as the mean of the squared deviations (x - xbar)^2, with its own sd and ESS.
Mixing gates: max R-hat < 1.01 and bulk ESS > 400 for every scalar, the Vehtari et al. (2021)
recommendation (ESS > 100 per chain with 4 chains) for R-hat and MCSE to be trustworthy.
"""

import math
import pickle
import warnings

import arviz as az
import numpy as np
import pyro
import pyro.distributions as dist
import pytest
import torch
import torch.multiprocessing as mp
from pyro.infer import MCMC, NUTS

from probdiff.diffusion.langevin_kernel import Langevin, to_inference_data

RHAT_MAX = 1.01
ESS_MIN = 400
Z = 4.0  # standard errors allowed


# --------------------------------------------------------------------------- statistics helpers


def draws(samples: torch.Tensor) -> np.ndarray:
    """(chain, draw, *shape) tensor -> (chain, draw, k) array of scalar components."""
    x = samples.detach().double().numpy()
    return x.reshape(x.shape[0], x.shape[1], -1)


def se_of_mean(x: np.ndarray) -> float:
    """Monte Carlo standard error of the mean of (chain, draw) draws: sd / sqrt(ESS)."""
    return float(x.std() / math.sqrt(az.ess(x, method="mean")))


def check_mixing(x: np.ndarray) -> None:
    for k in range(x.shape[-1]):
        assert az.rhat(x[..., k]) < RHAT_MAX
        assert az.ess(x[..., k], method="bulk") > ESS_MIN


def assert_moments(x: np.ndarray, mean: float, var: float) -> None:
    """(chain, draw) draws have the given mean and variance within Z standard errors."""
    assert abs(x.mean() - mean) < Z * se_of_mean(x)
    sq_dev = (x - x.mean()) ** 2
    assert abs(sq_dev.mean() - var) < Z * se_of_mean(sq_dev)


def run(kernel, num_samples: int, warmup: int, *args, chains: int = 4, **mcmc_kwargs) -> MCMC:
    """MCMC with ``chains`` chains (drawn sequentially on a machine with few cores)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "num_chains=.*drawn sequentially", UserWarning)
        mcmc = MCMC(
            kernel, num_samples, warmup, num_chains=chains, disable_progbar=True, **mcmc_kwargs
        )
    mcmc.run(*args)
    return mcmc


# --------------------------------------------------------------------------- models

Y_NORMAL = torch.tensor(
    [
        1.9,
        0.3,
        1.2,
        2.4,
        0.8,
        1.1,
        1.7,
        0.2,
        1.5,
        0.9,
        1.3,
        2.1,
        0.6,
        1.0,
        1.8,
        0.4,
        1.4,
        2.2,
        0.7,
        1.6,
    ]
)
PRIOR_SD, NOISE_SD = 3.0, 1.0


def normal_model(y):
    mu = pyro.sample("mu", dist.Normal(0.0, PRIOR_SD))
    with pyro.plate("data", len(y)):
        pyro.sample("y", dist.Normal(mu, NOISE_SD), obs=y)


Y_COUNTS = torch.tensor([3.0, 1.0, 4.0, 1.0, 5.0, 2.0, 6.0, 2.0, 3.0, 5.0])
GAMMA_A, GAMMA_B = 2.0, 1.0


def poisson_model(y):
    rate = pyro.sample("rate", dist.Gamma(GAMMA_A, GAMMA_B))
    with pyro.plate("data", len(y)):
        pyro.sample("y", dist.Poisson(rate), obs=y)


def logistic_data():
    g = torch.Generator().manual_seed(1)
    x = torch.randn(50, 2, generator=g)
    logits = 0.3 + x @ torch.tensor([1.0, -0.5])
    y = (torch.rand(50, generator=g) < torch.sigmoid(logits)).float()
    return x, y


def logistic_model(x, y):
    b0 = pyro.sample("b0", dist.Normal(0.0, 2.0))
    w = pyro.sample("w", dist.Normal(torch.zeros(2), 2.0).to_event(1))
    with pyro.plate("data", len(y)):
        pyro.sample("y", dist.Bernoulli(logits=b0 + x @ w), obs=y)


GAUSS_MEAN = torch.tensor([1.0, -2.0])
GAUSS_COV = torch.tensor([[1.0, 0.6], [0.6, 1.0]])
GAUSS_PREC = torch.linalg.inv(GAUSS_COV)


def gaussian_potential(params):
    d = params["x"] - GAUSS_MEAN
    return 0.5 * d @ GAUSS_PREC @ d


def standard_normal_potential(params):
    return 0.5 * (params["x"] ** 2).sum()


# --------------------------------------------------------------------------- tests


def test_mala_normal_mean_matches_conjugate_posterior_and_from_pyro_works():
    pyro.set_rng_seed(0)
    mcmc = run(Langevin(normal_model), 1000, 500, Y_NORMAL)
    idata = az.from_pyro(mcmc)  # works: the kernel reports the `divergences` from_pyro reads
    x = idata.posterior["mu"].values
    assert x.shape == (4, 1000) and not idata.sample_stats["diverging"].values.any()
    post_var = 1.0 / (1.0 / PRIOR_SD**2 + len(Y_NORMAL) / NOISE_SD**2)
    post_mean = post_var * float(Y_NORMAL.sum()) / NOISE_SD**2
    check_mixing(x[..., None])
    assert_moments(x, post_mean, post_var)


def test_mala_correlated_gaussian_potential_fn():
    """2-D N(m, S) with correlation 0.6 given only by its potential; the variance of x0 + x1
    (1 + 1 + 2 * 0.6) checks the correlation."""
    pyro.set_rng_seed(0)
    init = {"x": 3.0 * torch.randn(4, 2)}  # over-dispersed starts for R-hat
    mcmc = run(Langevin(potential_fn=gaussian_potential), 3000, 1000, initial_params=init)
    x = draws(mcmc.get_samples(group_by_chain=True)["x"])
    check_mixing(x)
    for k in range(2):
        assert_moments(x[..., k], float(GAUSS_MEAN[k]), float(GAUSS_COV[k, k]))
    assert_moments(x.sum(-1), float(GAUSS_MEAN.sum()), float(GAUSS_COV.sum()))
    idata = to_inference_data(mcmc)
    assert idata.sample_stats["accept_prob"].shape == (4, 3000)


def test_mala_constrained_site_gamma_poisson():
    """rate ~ Gamma(a, b), y_i ~ Poisson(rate): posterior Gamma(a + sum y, b + n). Sampling log(rate)
    needs the log-Jacobian; without it the posterior would be Gamma(a - 1 + sum y, b + n), whose
    mean differs by 1 / (b + n), more than the tolerance (asserted, so the test has that power)."""
    pyro.set_rng_seed(0)
    mcmc = run(Langevin(poisson_model), 1000, 500, Y_COUNTS)
    x = mcmc.get_samples(group_by_chain=True)["rate"].double().numpy()
    assert (x > 0).all()  # constrained values, as for NUTS
    check_mixing(x[..., None])
    shape, rate = GAMMA_A + float(Y_COUNTS.sum()), GAMMA_B + len(Y_COUNTS)
    assert_moments(x, shape / rate, shape / rate**2)
    assert 1.0 / rate > Z * se_of_mean(x)


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore:`torch.jit.trace` is deprecated:DeprecationWarning")
def test_mala_agrees_with_nuts_on_logistic_regression():
    x_data, y_data = logistic_data()
    pyro.set_rng_seed(0)
    mala = run(Langevin(logistic_model), 1500, 500, x_data, y_data)
    pyro.set_rng_seed(0)
    nuts = run(
        NUTS(logistic_model, jit_compile=True, ignore_jit_warnings=True), 400, 200, x_data, y_data
    )
    for site in ("b0", "w"):
        a = draws(mala.get_samples(group_by_chain=True)[site])
        b = draws(nuts.get_samples(group_by_chain=True)[site])
        check_mixing(a)
        check_mixing(b)
        for k in range(a.shape[-1]):
            se = math.hypot(se_of_mean(a[..., k]), se_of_mean(b[..., k]))
            assert abs(a[..., k].mean() - b[..., k].mean()) < Z * se


def test_ula_stationary_variance_has_order_tau_bias():
    """For U = x^2 / 2, ULA is x' = (1 - tau) x + sqrt(2 tau) z, an AR(1) with stationary variance
    2 tau / (1 - (1 - tau)^2) = 1 / (1 - tau / 2) = 4/3 at tau = 0.5; MALA at the same tau keeps
    the exact variance 1. The bias 1/3 is far outside the error bars."""
    tau = 0.5
    init = {"x": torch.tensor([[-3.0], [-1.0], [1.0], [3.0]])}
    results = {}
    for adjust in (False, True):
        pyro.set_rng_seed(0)
        kernel = Langevin(
            potential_fn=standard_normal_potential,
            step_size=tau,
            adjust=adjust,
            adapt_step_size=False,
        )
        mcmc = run(kernel, 2000, 200, initial_params=init)
        x = draws(mcmc.get_samples(group_by_chain=True)["x"])[..., 0]
        check_mixing(x[..., None])
        assert mcmc.diagnostics()["step size"]["chain 0"] == tau  # not adapted
        results[adjust] = x
    ula_var = 1.0 / (1.0 - tau / 2)
    assert_moments(results[False], 0.0, ula_var)
    sq_dev = (results[False] - results[False].mean()) ** 2
    assert ula_var - 1.0 > Z * se_of_mean(sq_dev)  # the bias is resolved by the test
    assert_moments(results[True], 0.0, 1.0)


@pytest.mark.slow
def test_kernel_pickles_and_runs_in_worker_processes(monkeypatch):
    """pyro.infer.MCMC uses multiprocessing when cores allow; pretend they do (2 short chains).
    Spawned, not forked: the test process has imported JAX, whose threads a fork can deadlock."""
    pyro.set_rng_seed(0)
    kernel = pickle.loads(pickle.dumps(Langevin(normal_model)))
    monkeypatch.setattr(mp, "cpu_count", lambda: 8)
    mcmc = run(kernel, 100, 50, Y_NORMAL, chains=2, mp_context="spawn")
    assert type(mcmc.sampler).__name__ == "_MultiSampler"
    idata = to_inference_data(mcmc)
    assert idata.posterior["mu"].shape == (2, 100)
    assert np.isfinite(idata.posterior["mu"].values).all()
    assert set(mcmc.diagnostics()["acceptance rate"]) == {"chain 0", "chain 1"}
    pickle.dumps(kernel)  # also after a run (derived potential is dropped)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({}, "exactly one of `model`.*neither"),
        ({"model": normal_model, "potential_fn": standard_normal_potential}, "exactly one.*both"),
        ({"model": normal_model, "step_size": 0.0}, "step_size must be a positive"),
        ({"model": normal_model, "step_size": -0.1}, "step_size must be a positive"),
        ({"model": normal_model, "step_size": float("nan")}, "step_size must be a positive"),
        ({"model": normal_model, "target_accept_prob": 1.0}, "target_accept_prob"),
    ],
)
def test_bad_arguments_raise(kwargs, match):
    pyro.set_rng_seed(0)
    with pytest.raises(ValueError, match=match):
        Langevin(**kwargs)


def test_potential_fn_without_initial_params_raises():
    pyro.set_rng_seed(0)
    mcmc = MCMC(Langevin(potential_fn=standard_normal_potential), 10, 10, disable_progbar=True)
    with pytest.raises(ValueError, match="initial_params"):
        mcmc.run()
