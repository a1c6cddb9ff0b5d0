"""The closed-form Gaussian-mixture reference (:mod:`probdiff.diffusion.mixture_score`) against
computations that share none of its code: SciPy's multivariate normal densities, central finite
differences and torch autograd of an independent log density, and Monte Carlo draws of the
noised data (the forward SDE simulated step by step) with standard errors.

Every SDE test compares samplers, losses and likelihoods with this module, so it is checked
here on its own: log density, score, the noised marginal p_t and its score, the NCSN target,
and the sampler.
"""

import math

import numpy as np
import pytest
import torch
from scipy.special import logsumexp
from scipy.stats import multivariate_normal

from probdiff.data import mixture2d_density
from probdiff.diffusion.mixture_score import GaussianMixture
from probdiff.diffusion.sde import VESDE, VPSDE, SubVPSDE

F64 = torch.float64
Z = 4.0  # Monte Carlo checks: |estimate - value| < 4 standard errors

# two correlated, unequal components and one narrow one (weights given unnormalised)
W2 = np.array([2.0, 1.0, 1.0])
M2 = np.array([[-2.0, 0.5], [1.5, 1.0], [0.5, -2.5]])
C2 = np.array([[[1.0, 0.6], [0.6, 0.8]], [[0.5, -0.2], [-0.2, 1.5]], [[0.09, 0.0], [0.0, 0.16]]])
# three dimensions, two components
W3 = np.array([0.3, 0.7])
M3 = np.array([[1.0, -1.0, 0.5], [-0.5, 2.0, 0.0]])
C3 = np.array(
    [
        [[1.0, 0.3, 0.1], [0.3, 2.0, -0.4], [0.1, -0.4, 0.7]],
        [[0.4, 0.0, 0.1], [0.0, 0.3, 0.05], [0.1, 0.05, 1.2]],
    ]
)
CASES = {"2d": (W2, M2, C2), "3d": (W3, M3, C3)}


def scipy_log_density(w, m, c, x, a=1.0, v=0.0):
    """log sum_k w_k N(x; a m_k, a^2 C_k + v I) / sum w by SciPy; x (N, D). (a, v) is the law
    of a x_0 + sqrt(v) z for x_0 ~ the mixture and z ~ N(0, I): each component's affine image
    plus independent Gaussian noise, a Gaussian with the covariances added."""
    w = np.asarray(w, float) / np.sum(w)
    eye = np.eye(m.shape[1])
    comps = [
        math.log(wk) + multivariate_normal(a * mk, a * a * ck + v * eye).logpdf(x)
        for wk, mk, ck in zip(w, m, c)
    ]
    return logsumexp(np.stack(comps, -1).reshape(len(x), len(w)), axis=-1)


def fd_gradient(f, x, h=1e-4):
    """Central finite differences of f (N, D) -> (N,), column by column."""
    g = np.empty_like(x)
    for j in range(x.shape[1]):
        e = np.zeros(x.shape[1])
        e[j] = h
        g[:, j] = (f(x + e) - f(x - e)) / (2 * h)
    return g


def torch_log_density(w, m, c, x, a=1.0, v=0.0):
    """The same mixture density written with torch.distributions (for autograd)."""
    w = torch.as_tensor(np.asarray(w, float) / np.sum(w), dtype=F64)
    m, c = torch.as_tensor(m, dtype=F64), torch.as_tensor(c, dtype=F64)
    eye = torch.eye(m.shape[1], dtype=F64)
    comp = torch.distributions.MultivariateNormal(a * m, covariance_matrix=a * a * c + v * eye)
    return torch.logsumexp(torch.log(w) + comp.log_prob(x[:, None, :]), dim=-1)


def draw_mixture(w, m, c, n, rng):
    """x_0 ~ the mixture by NumPy (component, then Gaussian), independent of ``sample``."""
    w = np.asarray(w, float) / np.sum(w)
    k = rng.choice(len(w), size=n, p=w)
    z = rng.standard_normal((n, m.shape[1]))
    chol = np.linalg.cholesky(c)
    return m[k] + np.einsum("nij,nj->ni", chol[k], z)


def points(m, n, rng, spread=3.0):
    """Test points around and well beyond the components (tails included)."""
    base = m[rng.integers(len(m), size=n)]
    return base + spread * rng.standard_normal((n, m.shape[1]))


@pytest.mark.parametrize("case", CASES)
def test_log_prob_is_scipys_mixture_density(case):
    w, m, c = CASES[case]
    gm = GaussianMixture.make(w, m, covs=c)
    rng = np.random.default_rng(0)
    x = np.vstack([points(m, 300, rng), 25.0 * rng.standard_normal((20, m.shape[1]))])
    got = gm.log_prob(torch.as_tensor(x)).numpy()
    np.testing.assert_allclose(got, scipy_log_density(w, m, c, x), rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(gm.weights.sum().item(), 1.0, rtol=1e-15)


@pytest.mark.parametrize("case", CASES)
def test_noised_log_prob_is_the_convolution_row_by_row(case):
    """log_prob(x, a, v) with one (a, v) per row is the density of a x_0 + sqrt(v) z."""
    w, m, c = CASES[case]
    gm = GaussianMixture.make(w, m, covs=c)
    rng = np.random.default_rng(1)
    x = points(m, 60, rng)
    a = rng.uniform(0.05, 1.5, len(x))
    v = rng.uniform(1e-3, 4.0, len(x))
    got = gm.log_prob(torch.as_tensor(x), torch.as_tensor(a), torch.as_tensor(v)).numpy()
    want = np.array(
        [scipy_log_density(w, m, c, x[i : i + 1], a[i], v[i])[0] for i in range(len(x))]
    )
    np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-10)
    # one scalar (a, v) broadcast over the rows
    got = gm.log_prob(
        torch.as_tensor(x), torch.tensor(0.7, dtype=F64), torch.tensor(0.3, dtype=F64)
    ).numpy()
    np.testing.assert_allclose(got, scipy_log_density(w, m, c, x, 0.7, 0.3), rtol=1e-10)


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("a,v", [(1.0, 0.0), (0.6, 0.5), (0.05, 0.99)])
def test_score_is_the_gradient_of_the_log_density(case, a, v):
    """Against central differences of SciPy's log density (h = 1e-4: truncation error about
    h^2 |f'''| / 6 < 1e-6 here, round-off 1e-16 / h = 1e-12) and torch autograd of an independent
    torch.distributions density (exact up to round-off)."""
    w, m, c = CASES[case]
    gm = GaussianMixture.make(w, m, covs=c)
    rng = np.random.default_rng(2)
    x = points(m, 200, rng, spread=2.0)
    av = {} if v == 0.0 else {"a": torch.tensor(a, dtype=F64), "v": torch.tensor(v, dtype=F64)}
    got = gm.score(torch.as_tensor(x), **av).numpy()
    fd = fd_gradient(lambda y: scipy_log_density(w, m, c, y, a, v), x)
    np.testing.assert_allclose(got, fd, rtol=1e-5, atol=1e-5)
    xt = torch.as_tensor(x).requires_grad_(True)
    (grad,) = torch.autograd.grad(torch_log_density(w, m, c, xt, a, v).sum(), xt)
    np.testing.assert_allclose(got, grad.numpy(), rtol=1e-9, atol=1e-9)
    assert got.dtype == np.float64 and got.shape == x.shape


def test_single_gaussian_score_is_minus_precision_times_residual():
    """K = 1: the score is -S^{-1} (x - mu) exactly (here S^{-1} by numpy.linalg.inv)."""
    mu, cov = np.array([0.5, -1.0]), np.array([[2.0, 1.2], [1.2, 1.5]])
    gm = GaussianMixture.make([3.0], [mu], covs=[cov])
    x = np.random.default_rng(3).normal(size=(50, 2)) * 3
    want = -(x - mu) @ np.linalg.inv(cov).T
    np.testing.assert_allclose(gm.score(torch.as_tensor(x)).numpy(), want, rtol=1e-10, atol=1e-12)


def test_of_dataset_density_is_the_spherical_mixture2d():
    """The built-in ``mixture2d``'s spherical components s_k^2 I, by SciPy."""
    density = mixture2d_density()
    gm = GaussianMixture.of_dataset_density(density)
    covs = density.scales[:, None, None] ** 2 * np.eye(2)
    x = points(density.locs, 200, np.random.default_rng(4))
    np.testing.assert_allclose(
        gm.log_prob(torch.as_tensor(x)).numpy(),
        scipy_log_density(density.weights, density.locs, covs, x),
        rtol=1e-10,
    )


def test_noisy_score_is_the_gradient_of_the_blurred_density():
    """The NCSN target: the score of the data blurred by N(0, sigma^2 I), float32 in and out."""
    w, m, c = CASES["2d"]
    gm = GaussianMixture.make(w, m, covs=c)
    x = points(m, 100, np.random.default_rng(5))
    for sigma in (0.01, 0.3, 5.0):
        got = gm.noisy_score(torch.tensor(sigma))(torch.as_tensor(x, dtype=torch.float32))
        assert got.dtype == torch.float32
        fd = fd_gradient(lambda y: scipy_log_density(w, m, c, y, 1.0, sigma**2), x, h=1e-6)
        scale = np.abs(fd).max()
        np.testing.assert_allclose(got.numpy(), fd, rtol=1e-5, atol=1e-6 * scale)


# ------------------------------------------------------------------- through the forward SDEs
def vp_integral(t, b0=0.1, b1=20.0):
    return b0 * t + 0.5 * (b1 - b0) * t**2


def marginal_by_hand(name, t):
    """(a(t), v(t)) of x_t | x_0 ~ N(a x_0, v I), from each SDE's coefficients (Song et al.
    2021, appendix B): VP a = exp(-B/2), v = 1 - a^2; sub-VP a as VP, v = (1 - a^2)^2;
    VE (sigma_min 0.01, sigma_max 20, started at the data) a = 1, v = sigma(t)^2 - sigma_min^2."""
    if name == "ve":
        return 1.0, 0.01**2 * ((20.0 / 0.01) ** (2 * t) - 1)
    a = math.exp(-0.5 * vp_integral(t))
    return a, (1 - a * a) if name == "vp" else (1 - a * a) ** 2


SDES = {
    "vp": lambda: VPSDE(0.1, 20.0),
    "subvp": lambda: SubVPSDE(0.1, 20.0),
    "ve": lambda: VESDE(0.01, 20.0),
}


@pytest.mark.parametrize("name", SDES)
@pytest.mark.parametrize("t", [1e-3, 0.2, 0.7, 1.0])
def test_marginal_log_prob_and_score_under_each_sde(name, t):
    w, m, c = CASES["2d"]
    gm = GaussianMixture.make(w, m, covs=c)
    sde = SDES[name]()
    a, v = marginal_by_hand(name, t)
    x = points(a * m, 100, np.random.default_rng(6), spread=2.0 * math.sqrt(a * a + v))
    tt = torch.full((len(x),), t, dtype=F64)
    lp = gm.marginal_log_prob(sde, torch.as_tensor(x), tt).numpy()
    np.testing.assert_allclose(lp, scipy_log_density(w, m, c, x, a, v), rtol=1e-9, atol=1e-9)
    xt = torch.as_tensor(x).requires_grad_(True)
    (grad,) = torch.autograd.grad(torch_log_density(w, m, c, xt, a, v).sum(), xt)
    score = gm.marginal_score(sde)(torch.as_tensor(x), tt)
    np.testing.assert_allclose(score.numpy(), grad.numpy(), rtol=1e-8, atol=1e-10)
    # in x's dtype, as the samplers call it
    s32 = gm.marginal_score(sde)(torch.as_tensor(x, dtype=torch.float32), tt.float())
    assert s32.dtype == torch.float32


def grid_expectations(log_density, lo, hi, h):
    """Mean, covariance and E exp(-||x - c||^2 / 2) (c = (1, 0)) of a 2-D density by the
    midpoint rule on a square grid; for densities smooth on scale >> h the error is far below
    the Monte Carlo errors these are compared with. Also returns the total mass."""
    g = np.arange(lo + h / 2, hi, h)
    xx = np.stack(np.meshgrid(g, g, indexing="ij"), -1).reshape(-1, 2)
    p = np.exp(log_density(xx)) * h * h
    mass = p.sum()
    mean = (p[:, None] * xx).sum(0)
    cov = (p[:, None, None] * (xx - mean)[:, :, None] * (xx - mean)[:, None, :]).sum(0)
    bump = (p * np.exp(-0.5 * ((xx - [1.0, 0.0]) ** 2).sum(1))).sum()
    return mass, mean, cov, bump


def moment_zscores(x, mean, cov, bump):
    """z-scores of the sample mean, sample covariance entries and mean bump against values,
    each with its own standard error from the sample (moments of the products)."""
    n = len(x)
    z = {}
    for j in range(2):
        z[f"mean{j}"] = (x[:, j].mean() - mean[j]) / (x[:, j].std(ddof=1) / math.sqrt(n))
    d = x - x.mean(0)
    for i, j in ((0, 0), (1, 1), (0, 1)):
        prod = d[:, i] * d[:, j]
        z[f"cov{i}{j}"] = (prod.mean() - cov[i, j]) / (prod.std(ddof=1) / math.sqrt(n))
    b = np.exp(-0.5 * ((x - [1.0, 0.0]) ** 2).sum(1))
    z["bump"] = (b.mean() - bump) / (b.std(ddof=1) / math.sqrt(n))
    return z


@pytest.mark.parametrize("t", [0.1, 0.35])
def test_vp_marginal_is_the_law_of_the_simulated_forward_sde(t):
    """x_0 ~ the mixture (NumPy), then dx = -beta(t) x / 2 dt + sqrt(beta(t)) dw simulated by
    Euler-Maruyama on 500 steps with beta at each step's midpoint (its variance bias, about
    h int beta^2 v / 4, is 0.1% of v, under 0.2 of a standard error here): mean, covariance and
    a bump functional of 40 000 draws within 4 s.e. of the same expectations under
    exp(marginal_log_prob) by quadrature, which has unit mass."""
    w, m, c = CASES["2d"]
    gm = GaussianMixture.make(w, m, covs=c)
    sde = VPSDE(0.1, 20.0)
    rng = np.random.default_rng(7)
    n, steps = 40_000, 500
    x = draw_mixture(w, m, c, n, rng)
    dt = t / steps
    for i in range(steps):
        beta = 0.1 + (20.0 - 0.1) * ((i + 0.5) * dt)
        x = x - 0.5 * beta * x * dt + math.sqrt(beta * dt) * rng.standard_normal(x.shape)

    def log_density(y):
        tt = torch.full((len(y),), t, dtype=F64)
        return gm.marginal_log_prob(sde, torch.as_tensor(y), tt).numpy()

    mass, mean, cov, bump = grid_expectations(log_density, -8.0, 8.0, 0.05)
    assert mass == pytest.approx(1.0, abs=1e-6)
    z = moment_zscores(x, mean, cov, bump)
    assert max(abs(v) for v in z.values()) < Z, z


def test_noised_density_is_the_law_of_noised_draws():
    """x = a x_0 + sqrt(v) z with (a, v) = (0.6, 0.5): 200 000 draws against log_prob(., a, v)
    by quadrature (a 3% error in v moves the covariance by about 5 s.e.)."""
    w, m, c = CASES["2d"]
    gm = GaussianMixture.make(w, m, covs=c)
    rng = np.random.default_rng(8)
    a, v, n = 0.6, 0.5, 200_000
    x = a * draw_mixture(w, m, c, n, rng) + math.sqrt(v) * rng.standard_normal((n, 2))

    def log_density(y):
        return gm.log_prob(torch.as_tensor(y), torch.tensor(a), torch.tensor(v)).numpy()

    mass, mean, cov, bump = grid_expectations(log_density, -8.0, 8.0, 0.05)
    assert mass == pytest.approx(1.0, abs=1e-6)
    z = moment_zscores(x, mean, cov, bump)
    assert max(abs(v) for v in z.values()) < Z, z


def test_sample_has_the_mixture_law():
    """``sample``: mean, covariance and bump of 100 000 draws within 4 s.e. of the mixture's
    (mean and covariance by the law of total variance, the bump by quadrature of SciPy's
    density)."""
    w, m, c = CASES["2d"]
    gm = GaussianMixture.make(w, m, covs=c)
    x = gm.sample(100_000, torch.Generator().manual_seed(9)).numpy()
    p = w / w.sum()
    mean = p @ m
    cov = np.einsum("k,kij->ij", p, c) + np.einsum("k,ki,kj->ij", p, m - mean, m - mean)
    _, _, _, bump = grid_expectations(lambda y: scipy_log_density(w, m, c, y), -10.0, 10.0, 0.02)
    z = moment_zscores(x, mean, cov, bump)
    assert max(abs(v) for v in z.values()) < Z, z
