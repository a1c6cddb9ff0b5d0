"""Langevin dynamics (probdiff.diffusion.langevin) against closed forms (docs/equations.md section 3)."""

import math

import numpy as np
import pytest
import torch

from probdiff.data import mixture2d_density
from probdiff.diffusion.langevin import (
    annealed_langevin,
    geometric_sigmas,
    langevin,
    score_of,
)
from probdiff.diffusion.mixture_score import GaussianMixture
from probdiff.errors import ProbdiffError

Z = 4.0


def moment_errors(x: np.ndarray, mean: np.ndarray, cov: np.ndarray):
    """(mean - truth) / se and (cov - truth) / se entrywise, s.e. from the samples."""
    n = len(x)
    d = x - x.mean(0)
    prods = d[:, :, None] * d[:, None, :]
    z_mean = (x.mean(0) - mean) / (x.std(0, ddof=1) / math.sqrt(n))
    z_cov = (prods.mean(0) - cov) / (prods.std(0, ddof=1) / math.sqrt(n))
    return np.abs(z_mean).max(), np.abs(z_cov).max()


def test_ula_on_a_gaussian_has_the_closed_form_stationary_covariance():
    """For N(mu, S) ULA is x' = x - tau P (x - mu) + sqrt(2 tau) z (P = S^-1): its stationary
    covariance has S's eigenvectors and eigenvalues lambda / (1 - tau / (2 lambda))."""
    mu = torch.tensor([1.0, -2.0], dtype=torch.float64)
    cov = torch.tensor([[1.0, 0.6], [0.6, 0.8]], dtype=torch.float64)
    truth = GaussianMixture.make([1.0], mu[None], covs=cov[None])
    tau = 0.15
    lam, vec = torch.linalg.eigh(cov)
    ula_cov = vec @ torch.diag(lam / (1 - tau / (2 * lam))) @ vec.T
    gen = torch.Generator().manual_seed(0)
    x0 = torch.randn(20000, 2, generator=gen, dtype=torch.float64)
    x, _ = langevin(truth.score, x0, tau, 200, gen)  # 200 steps: contraction (1-tau/l)^200 ~ 0
    zm, zc = moment_errors(x.numpy(), mu.numpy(), ula_cov.numpy())
    assert zm < Z and zc < Z
    _, zc_exact = moment_errors(x.numpy(), mu.numpy(), cov.numpy())
    assert zc_exact > Z  # the bias is real and larger than the error bar


def test_score_of_a_log_density_is_its_gradient():
    truth = GaussianMixture.of_dataset_density(mixture2d_density())
    x = truth.sample(50, torch.Generator().manual_seed(1))
    assert torch.allclose(score_of(truth.log_prob)(x), truth.score(x), atol=1e-10)


def test_annealed_langevin_with_exact_scores_reproduces_the_mixture():
    """Annealed Langevin from sigma = 10 to 0.01 with the exact blurred scores: component
    weights, per-component means and variances within 4 s.e. of exact draws (the weights are
    what plain Langevin gets wrong between separated modes)."""
    truth = GaussianMixture.of_dataset_density(mixture2d_density())
    sigmas = geometric_sigmas(10.0, 0.01, 12)
    gen = torch.Generator().manual_seed(2)
    n = 4000
    x = 10.0 * torch.randn(n, 2, generator=gen, dtype=torch.float64)
    x, levels = annealed_langevin(
        lambda y, i: truth.noisy_score(float(sigmas[i]))(y),
        sigmas,
        x,
        step_size=0.05 * 0.01**2,
        steps_per_level=100,
        generator=gen,
        record_levels=True,
    )
    assert len(levels) == len(sigmas)
    # two-sample comparison with exact draws assigned to components the same way (nearest
    # mean), so the assignment's truncation of overlapping tails affects both alike
    ref = truth.sample(n, torch.Generator().manual_seed(3))
    comp = torch.cdist(x, truth.locs).argmin(1).numpy()
    comp_ref = torch.cdist(ref, truth.locs).argmin(1).numpy()
    w = truth.weights.numpy()
    counts = np.bincount(comp, minlength=len(w)) / n
    counts_ref = np.bincount(comp_ref, minlength=len(w)) / n
    assert np.all(np.abs(counts - counts_ref) < Z * np.sqrt(2 * w * (1 - w) / n))
    for k in range(len(w)):
        a, b = x.numpy()[comp == k], ref.numpy()[comp_ref == k]
        se = np.sqrt(a.var(0, ddof=1) / len(a) + b.var(0, ddof=1) / len(b))
        assert np.all(np.abs(a.mean(0) - b.mean(0)) < Z * se)
        sa = (a - a.mean(0)) ** 2
        sb = (b - b.mean(0)) ** 2
        se_var = np.sqrt(sa.var(0, ddof=1) / len(a) + sb.var(0, ddof=1) / len(b))
        assert np.all(np.abs(sa.mean(0) - sb.mean(0)) < Z * se_var)


def test_langevin_rejects_bad_steps():
    with pytest.raises(ProbdiffError, match="step_size > 0"):
        langevin(lambda x: -x, torch.zeros(2, 1), 0.0, 10)
    with pytest.raises(ProbdiffError, match="sigma_min < sigma_max"):
        geometric_sigmas(0.1, 1.0, 5)
