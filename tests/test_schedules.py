"""Schedules and the reverse step against diffusers' DDPMScheduler and a plain NumPy loop."""

import math

import numpy as np
import pytest
import torch

from probdiff.diffusion.schedules import Schedule
from probdiff.errors import ProbdiffError

DIFFUSERS_NAME = {
    "linear": "linear",
    "scaled_linear": "scaled_linear",
    "cosine": "squaredcos_cap_v2",
}


def diffusers_scheduler(name, T, variance):
    from diffusers import DDPMScheduler

    kw = {"beta_start": 0.00085, "beta_end": 0.012} if name == "scaled_linear" else {}
    return DDPMScheduler(
        num_train_timesteps=T,
        beta_schedule=DIFFUSERS_NAME[name],
        variance_type=variance,
        clip_sample=False,
        prediction_type="epsilon",
        **kw,
    )


def loop_coefficients(betas):
    """docs/equations.md section 2 term by term, with explicit loops (no cumprod, no vectorisation)."""
    T = len(betas)
    abar, prod = [], 1.0
    for b in betas:
        prod *= 1 - b
        abar.append(prod)
    c0, ct, var = [], [], []
    for t in range(T):  # 0-based: chain step t + 1
        prev = abar[t - 1] if t > 0 else 1.0
        alpha = 1 - betas[t]
        c0.append((1 - alpha) * math.sqrt(prev) / (1 - abar[t]))
        ct.append((1 - prev) * math.sqrt(alpha) / (1 - abar[t]))
        var.append((1 - alpha) * (1 - prev) / (1 - abar[t]))
    return np.array(abar), np.array(c0), np.array(ct), np.array(var)


@pytest.mark.parametrize("name", ["linear", "scaled_linear", "cosine"])
@pytest.mark.parametrize("T", [10, 1000])
def test_coefficients_match_diffusers_and_a_plain_loop(name, T):
    s = Schedule.make(
        name, T, **({"beta_start": 0.00085, "beta_end": 0.012} if name == "scaled_linear" else {})
    )
    ref = diffusers_scheduler(name, T, "fixed_small")  # float32 tensors: agreement to 1e-6
    np.testing.assert_allclose(s.betas[1:], ref.betas.double().numpy(), rtol=0, atol=1e-6)
    np.testing.assert_allclose(s.abar[1:], ref.alphas_cumprod.double().numpy(), rtol=0, atol=1e-6)
    abar, c0, ct, var = loop_coefficients(list(s.betas[1:]))
    np.testing.assert_allclose(s.abar[1:], abar, rtol=1e-12)
    np.testing.assert_allclose(s.posterior_x0_coef[1:], c0, rtol=1e-12)
    np.testing.assert_allclose(s.posterior_xt_coef[1:], ct, rtol=1e-12)
    np.testing.assert_allclose(s.posterior_variance[1:], var, rtol=1e-12, atol=1e-300)
    assert s.posterior_variance[1] == 0.0 and s.abar[0] == 1.0


@pytest.mark.parametrize("name", ["linear", "cosine"])
@pytest.mark.parametrize("variance", ["fixed_small", "fixed_large"])
def test_reverse_step_matches_diffusers(name, variance):
    """x_{t-1} from the same x_t, predicted noise and fresh noise: diffusers' step (which goes
    through the predicted x_0) and ours (mu from eps) agree at every t. diffusers keeps its
    coefficients in float32, where 1 - abar_1 = beta_1 = 1e-4 keeps only ~3 digits; both run
    on diffusers' betas in float64 here, so the step formulas are compared, not roundings."""
    T = 50
    ref = diffusers_scheduler(name, T, variance)
    ref.betas = ref.betas.double()
    ref.alphas = 1.0 - ref.betas
    ref.alphas_cumprod = torch.cumprod(ref.alphas, 0)
    s = Schedule(np.concatenate([[0.0], ref.betas.numpy()]))
    for k in range(T):  # diffusers' timestep k is our t = k + 1
        gen = torch.Generator().manual_seed(k)
        xt = torch.randn(4, 3, generator=gen, dtype=torch.float64)
        eps = torch.randn(4, 3, generator=gen, dtype=torch.float64)
        noise_gen = torch.Generator().manual_seed(1000 + k)
        theirs = ref.step(eps, k, xt, generator=noise_gen).prev_sample
        noise = torch.randn(
            4, 3, generator=torch.Generator().manual_seed(1000 + k), dtype=torch.float64
        )
        ours = s.reverse_step(xt, k + 1, eps, noise, variance)
        np.testing.assert_allclose(ours.numpy(), theirs.numpy(), rtol=1e-10, atol=1e-10)


def test_forward_marginal_matches_the_chain_by_monte_carlo():
    """Running q(x_t | x_{t-1}) step by step gives q(x_t | x_0): mean sqrt(abar_t) x_0 and
    variance 1 - abar_t, within 4 standard errors, at T = 20."""
    s = Schedule.make("linear", 20, beta_start=0.01, beta_end=0.3)
    rng = np.random.default_rng(0)
    n, x0 = 200_000, 1.5
    x = np.full(n, x0)
    for t in range(1, 21):
        x = math.sqrt(s.alphas[t]) * x + math.sqrt(s.betas[t]) * rng.standard_normal(n)
        if t in (1, 7, 20):
            m, v = math.sqrt(s.abar[t]) * x0, 1 - s.abar[t]
            assert abs(x.mean() - m) < 4 * math.sqrt(v / n)
            assert abs(x.var() - v) < 4 * v * math.sqrt(2 / n)
    direct = s.q_sample(np.full(n, x0), np.full(n, 20), rng.standard_normal(n))
    assert abs(direct.mean() - x.mean()) < 4 * math.sqrt(2 * (1 - s.abar[20]) / n)


def test_posterior_of_the_forward_chain_by_bayes_rule():
    """q(x_{t-1} | x_t, x_0) is the Gaussian N(c0 x_0 + ct x_t, sigma_q^2): check the
    closed-form product q(x_t | x_{t-1}) q(x_{t-1} | x_0) / q(x_t | x_0) on a grid."""
    from scipy.stats import norm

    s = Schedule.make("cosine", 30)
    x0, xt, t = 0.7, -0.2, 12
    grid = np.linspace(-4, 4, 2001)
    num = norm.pdf(xt, math.sqrt(s.alphas[t]) * grid, math.sqrt(s.betas[t])) * norm.pdf(
        grid, math.sqrt(s.abar[t - 1]) * x0, math.sqrt(1 - s.abar[t - 1])
    )
    post = num / norm.pdf(xt, math.sqrt(s.abar[t]) * x0, math.sqrt(1 - s.abar[t]))
    mean = s.posterior_mean(np.array([x0]), np.array([xt]), np.array([t]))[0]
    np.testing.assert_allclose(
        post, norm.pdf(grid, mean, math.sqrt(s.posterior_variance[t])), rtol=1e-8, atol=1e-12
    )


@pytest.mark.parametrize(
    "kw,message",
    [
        ({"name": "sigmoid", "T": 10}, "unknown schedule"),
        ({"name": "linear", "T": 0}, "T >= 1"),
        ({"name": "linear", "T": 10, "beta_end": 1.5}, "outside"),
    ],
)
def test_bad_schedules(kw, message):
    with pytest.raises(ProbdiffError, match=message):
        Schedule.make(**kw)
