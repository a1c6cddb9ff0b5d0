"""Samplers with the exact noise predictor of Gaussian data, and DDIM against diffusers."""

import math

import numpy as np
import pytest
import torch

from probdiff.diffusion.schedules import Schedule
from probdiff.models.ddpm.sampling import ancestral, ddim, ddim_step, ddim_steps

M = torch.tensor([1.0, -2.0], dtype=torch.float64)
C = torch.tensor([[1.5, 0.6], [0.6, 0.5]], dtype=torch.float64)


def exact_eps(schedule):
    """E[eps | x_t] for data N(M, C): q(x_t) = N(sqrt(abar) M, abar C + (1 - abar) I) and
    E[eps | x_t] = -sqrt(1 - abar) grad log q(x_t) = sqrt(1 - abar) S^-1 (x - sqrt(abar) M)."""

    def eps(x, t):
        a = float(schedule.abar[t])
        cov = a * C + (1 - a) * torch.eye(2, dtype=torch.float64)
        return math.sqrt(1 - a) * torch.linalg.solve(cov, (x - math.sqrt(a) * M).T).T

    return eps


def assert_gaussian(x, mean, cov, z=4.0):
    """Sample mean and covariance within z standard errors of the truth (entrywise; the
    covariance entry s_ij has variance (C_ii C_jj + C_ij^2) / n)."""
    n = len(x)
    got_mean, got_cov = x.mean(0), torch.cov(x.T)
    se_mean = torch.sqrt(torch.diag(cov) / n)
    assert torch.all((got_mean - mean).abs() < z * se_mean), (got_mean, mean)
    d = torch.diag(cov)
    se_cov = torch.sqrt((d[:, None] * d[None, :] + cov**2) / n)
    assert torch.all((got_cov - cov).abs() < z * se_cov), (got_cov, cov)


@pytest.mark.parametrize("name", ["linear", "cosine"])
@pytest.mark.parametrize("sampler", ["fixed_small", "fixed_large", "ddim200"])
def test_exact_noise_predictor_reproduces_gaussian_data(name, sampler):
    """T = 1000: ancestral sampling (either variance) and DDIM on 200 steps with the exact
    E[eps | x_t] give the data's mean and covariance within 4 standard errors."""
    s = Schedule.make(name, 1000)
    gen = torch.Generator().manual_seed(0)
    n = 20_000
    if sampler == "ddim200":
        x, _ = ddim(exact_eps(s), s, n, 2, gen, steps=200, dtype=torch.float64)
    else:
        x, _ = ancestral(exact_eps(s), s, n, 2, gen, variance=sampler, dtype=torch.float64)
    assert_gaussian(x, M, C)


def test_too_few_ddim_steps_show_their_bias():
    """The check above can fail: DDIM on 10 steps misses the covariance by far more."""
    s = Schedule.make("linear", 1000)
    x, _ = ddim(
        exact_eps(s), s, 20_000, 2, torch.Generator().manual_seed(0), steps=10, dtype=torch.float64
    )
    with pytest.raises(AssertionError):
        assert_gaussian(x, M, C)


def test_trajectories_are_recorded():
    s = Schedule.make("linear", 50)
    x, kept = ancestral(
        exact_eps(s),
        s,
        5,
        2,
        torch.Generator().manual_seed(0),
        record=[50, 25, 1, 0],
        dtype=torch.float64,
    )
    assert set(kept) == {50, 25, 1, 0} and torch.equal(kept[0], x)
    assert ddim_steps(1000, 4) == [1000, 667, 334, 1]


@pytest.mark.parametrize("eta", [0.0, 1.0])
def test_ddim_step_matches_diffusers(eta):
    """One DDIM update at every step of a 20-step subsequence of T = 100 equals diffusers'
    DDIMScheduler.step (its float32 schedule promoted to float64 for both), the same noise."""
    from diffusers import DDIMScheduler

    T, S = 100, 20
    ref = DDIMScheduler(
        num_train_timesteps=T,
        beta_schedule="linear",
        clip_sample=False,
        prediction_type="epsilon",
        set_alpha_to_one=True,
    )
    ref.alphas_cumprod = torch.cumprod(1.0 - ref.betas.double(), 0)
    ref.final_alpha_cumprod = torch.tensor(1.0, dtype=torch.float64)
    ref.set_timesteps(S)
    abar = np.concatenate([[1.0], ref.alphas_cumprod.numpy()])
    for k in ref.timesteps.tolist():  # diffusers' k is our t = k + 1; prev = k - T/S
        gen = torch.Generator().manual_seed(k)
        x = torch.randn(3, 2, generator=gen, dtype=torch.float64)
        e = torch.randn(3, 2, generator=gen, dtype=torch.float64)
        theirs = ref.step(e, k, x, eta=eta, generator=torch.Generator().manual_seed(99)).prev_sample
        prev = k - T // S + 1
        ours = ddim_step(x, k + 1, max(prev, 0), e, abar, eta, torch.Generator().manual_seed(99))
        np.testing.assert_allclose(ours.numpy(), theirs.numpy(), rtol=1e-10, atol=1e-10)
