"""The discretised Gaussian (Ho et al. 2020) against mpmath, SciPy, its own normalisation and sampling."""

import numpy as np
import pytest
import torch
from scipy.stats import norm

from probdiff.diffusion.likelihoods import (
    DiscretizedGaussian,
    discretized_gaussian_log_prob,
)


def scipy_pmf(levels: int, loc: float, scale: float) -> np.ndarray:
    """P(level k) by differences of the normal CDF, end bins open, in float64."""
    edges = (np.arange(levels + 1) - 0.5) / (levels - 1)
    edges[0], edges[-1] = -np.inf, np.inf
    return np.diff(norm.cdf(edges, loc, scale))


def mpmath_log_pmf(levels: int, loc: float, scale: float) -> np.ndarray:
    """log P(level k) in 60-digit arithmetic; bins above the mean by the upper tail
    (Phi(b) - Phi(a) = Phi(-a) - Phi(-b)), whose values mpmath keeps far below 1e-60."""
    import mpmath

    mpmath.mp.dps = 60
    inf = mpmath.inf
    out = []
    for k in range(levels):
        a = (mpmath.mpf(k) - 0.5) / (levels - 1) if k > 0 else -inf
        b = (mpmath.mpf(k) + 0.5) / (levels - 1) if k < levels - 1 else inf
        a, b = (a - loc) / scale, (b - loc) / scale
        p = mpmath.ncdf(-a) - mpmath.ncdf(-b) if a > 0 else mpmath.ncdf(b) - mpmath.ncdf(a)
        out.append(float(mpmath.log(p)))
    return np.array(out)


CASES = [
    (17, 0.3, 0.1),
    (17, 0.95, 0.02),
    (256, 0.5, 0.001),
    (256, -3.0, 0.5),
    (2, 0.5, 3.0),
    (256, 4.0, 0.2),
    (17, 0.5, 50.0),
]


@pytest.mark.parametrize("levels,loc,scale", CASES)
def test_log_pmf_matches_high_precision_and_sums_to_one(levels, loc, scale):
    x = torch.linspace(0, 1, levels, dtype=torch.float64)
    lp = discretized_gaussian_log_prob(
        x, torch.tensor(loc, dtype=torch.float64), torch.tensor(scale, dtype=torch.float64), levels
    )
    assert np.allclose(lp.numpy(), mpmath_log_pmf(levels, loc, scale), rtol=1e-9, atol=1e-9)
    assert torch.logsumexp(lp, 0).item() == pytest.approx(0.0, abs=1e-12)


def test_tail_log_probabilities_stay_finite_where_differences_underflow():
    """Far in the tails Phi(hi) - Phi(lo) underflows in float64; the log is still finite and
    agrees with log pdf(x) + log(bin width) for a bin much narrower than the scale."""
    x = torch.tensor([0.5], dtype=torch.float64)
    lp = discretized_gaussian_log_prob(
        x, torch.tensor(-40.0, dtype=torch.float64), torch.tensor(1.0, dtype=torch.float64), 256
    )
    approx = norm.logpdf(40.5) + np.log(1 / 255)
    assert np.isfinite(lp.item()) and lp.item() == pytest.approx(approx, rel=1e-3)


def test_float32_gradients_are_finite():
    x = torch.linspace(0, 1, 17)
    loc = torch.full((17,), 0.5, requires_grad=True)
    scale = torch.tensor(1e-3, requires_grad=True)
    discretized_gaussian_log_prob(x, loc, scale, 17).clamp(min=-1e4).sum().backward()
    assert torch.isfinite(loc.grad).all() and torch.isfinite(scale.grad)


def test_sample_frequencies_and_mean_match_the_pmf():
    """Empirical level frequencies within 4 binomial standard errors of the pmf; the exact
    ``mean`` property within 4 standard errors of the sample mean."""
    torch.manual_seed(0)
    d = DiscretizedGaussian(
        torch.tensor(0.8, dtype=torch.float64), torch.tensor(0.15, dtype=torch.float64), 17
    )
    n = 200_000
    s = d.sample((n,)).numpy()
    freq = np.bincount(np.round(s * 16).astype(int), minlength=17) / n
    p = scipy_pmf(17, 0.8, 0.15)
    assert np.all(np.abs(freq - p) <= 4 * np.sqrt(p * (1 - p) / n) + 1e-12)
    assert d.mean.item() == pytest.approx(s.mean(), abs=4 * s.std() / np.sqrt(n))
    # and exactly: the levels weighted by SciPy's pmf, over a grid of locations and scales
    locs, scales = np.linspace(-0.3, 1.3, 9), np.array([0.02, 0.15, 1.5])
    d = DiscretizedGaussian(
        torch.tensor(locs)[:, None], torch.tensor(scales)[None, :], 17, low=-1.0, high=1.0
    )
    levels = np.linspace(-1.0, 1.0, 17)
    exact = [[levels @ scipy_pmf(17, (m + 1) / 2, s / 2) for s in scales] for m in locs]
    np.testing.assert_allclose(d.mean.numpy(), exact, rtol=0, atol=1e-12)


def test_numpyro_twin_agrees():
    import jax

    jax.config.update("jax_enable_x64", True)
    try:
        from probdiff.diffusion.likelihoods_numpyro import DiscretizedGaussian as JaxDG

        rng = np.random.default_rng(1)
        x = rng.integers(0, 256, size=500) / 255
        loc, scale = rng.normal(0.5, 0.6, size=500), np.exp(rng.normal(-3, 1.5, size=500))
        ours = discretized_gaussian_log_prob(
            torch.tensor(x), torch.tensor(loc), torch.tensor(scale), 256
        ).numpy()
        theirs = np.asarray(JaxDG(loc, scale, 256).log_prob(x))
        assert np.allclose(ours, theirs, rtol=1e-10, atol=1e-10)
    finally:
        jax.config.update("jax_enable_x64", False)
