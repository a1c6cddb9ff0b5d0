"""Score-matching losses against closed-form scores (docs/equations.md section 3).

Every loss is checked on data whose (blurred) score is known exactly: a Gaussian mixture.
"Minimised by the true score" is tested along a direction: with s_theta = s* + theta h for a
fixed smooth field h, each loss is a quadratic L(theta) = L0 + g theta + c theta^2 (per datum,
common random numbers), so its minimiser is theta* = -g / 2c. The per-datum slopes g_i give g
with a standard error: the test asserts |g| < 4 s.e. and c > 0, and a negative control shows
the same test rejects a wrong "true" score.
"""

import math

import pytest
import torch

from probdiff.data import mixture2d_density
from probdiff.diffusion.mixture_score import GaussianMixture
from probdiff.diffusion.score_matching import (
    denoising_loss,
    explicit_loss,
    implicit_loss,
    ncsn_loss,
    noise_conditional_term,
)

Z = 4.0
N = 4000


@pytest.fixture(scope="module")
def mixture():
    return GaussianMixture.of_dataset_density(mixture2d_density())


@pytest.fixture(scope="module")
def data(mixture):
    return mixture.sample(N, torch.Generator().manual_seed(0))


def field(x: torch.Tensor) -> torch.Tensor:
    """A fixed smooth perturbation h(x) (2-D -> 2-D)."""
    w = torch.tensor([[0.7, -0.4], [0.3, 0.9]], dtype=x.dtype)
    return torch.tanh(x @ w + 0.2) * torch.tensor([1.0, -0.5], dtype=x.dtype)


def radial(x: torch.Tensor) -> torch.Tensor:
    """h(x) = x: the direction in which a too wide or too narrow score is wrong (controls)."""
    return x


def quadratic(loss_at):
    """(g_i, c_i) per datum of L_i(theta) = L_i(0) + g_i theta + c_i theta^2, from losses at
    theta = -d, 0, d (exact for a quadratic)."""
    d = 0.5
    lo, mid, hi = loss_at(-d), loss_at(0.0), loss_at(d)
    return (hi - lo) / (2 * d), (hi + lo - 2 * mid) / (2 * d * d)


def assert_minimum_at_zero(g: torch.Tensor, c: torch.Tensor):
    se = float(g.std() / math.sqrt(len(g)))
    assert abs(float(g.mean())) < Z * se, (float(g.mean()), se)
    assert float(c.mean()) > Z * float(c.std() / math.sqrt(len(c)))


def assert_minimum_not_at_zero(g: torch.Tensor):
    se = float(g.std() / math.sqrt(len(g)))
    assert abs(float(g.mean())) > Z * se, (float(g.mean()), se)


def test_explicit_loss_is_zero_at_the_true_score_and_quadratic_around_it(mixture, data):
    g, c = quadratic(
        lambda th: explicit_loss(lambda x: mixture.score(x) + th * field(x), mixture.score, data)
    )
    assert torch.allclose(g, torch.zeros_like(g), atol=1e-10)
    assert torch.allclose(c, 0.5 * field(data).pow(2).sum(1), rtol=1e-9)


@pytest.mark.parametrize("trace", ["exact", "hutchinson"])
def test_implicit_loss_is_minimised_by_the_true_score(mixture, data, trace):
    def loss_at(th, score=mixture.score, h=field):
        gen = torch.Generator().manual_seed(1)  # the same probes at every theta
        return implicit_loss(lambda x: score(x) + th * h(x), data, trace, gen).detach()

    assert_minimum_at_zero(*quadratic(loss_at))
    assert_minimum_at_zero(*quadratic(lambda th: loss_at(th, h=radial)))
    # power: the score of a wrong density (the mixture blurred by sigma = 1) is not the minimiser
    g, _ = quadratic(lambda th: loss_at(th, mixture.noisy_score(1.0), radial))
    assert_minimum_not_at_zero(g)


def test_implicit_loss_equals_explicit_minus_a_constant(mixture, data):
    """Hyvarinen: J_ISM(s) = J_ESM(s) - 0.5 E||grad log p||^2, for any s."""
    const = -0.5 * mixture.score(data).pow(2).sum(1)
    for th in (-1.0, 0.3, 2.0):

        def s(x):
            return mixture.score(x) + th * field(x)

        diff = implicit_loss(s, data).detach() - explicit_loss(s, mixture.score, data) - const
        se = float(diff.std() / math.sqrt(N))
        assert abs(float(diff.mean())) < Z * se


@pytest.mark.parametrize("sigma", [0.3, 1.5])
def test_denoising_loss_is_minimised_by_the_blurred_score(mixture, data, sigma):
    noise = torch.randn(data.shape, generator=torch.Generator().manual_seed(2), dtype=data.dtype)

    def loss_at(th, score, h=field):
        return denoising_loss(lambda x: score(x) + th * h(x), data, sigma, noise=noise)

    for h in (field, radial):
        assert_minimum_at_zero(*quadratic(lambda th: loss_at(th, mixture.noisy_score(sigma), h)))
    g, _ = quadratic(lambda th: loss_at(th, mixture.score, radial))  # the clean score is not
    assert_minimum_not_at_zero(g)


@pytest.mark.parametrize("sigma", [0.3, 1.5])
def test_denoising_equals_explicit_score_matching_plus_a_constant(mixture, data, sigma):
    """Vincent (2011): J_DSM(s) = J_ESM,q_sigma(s) + C with C = 0.5 D / sigma^2
    - 0.5 E||grad log q_sigma(x~)||^2 independent of s. Monte Carlo on the same draws."""
    gen = torch.Generator().manual_seed(3)
    noise = torch.randn(data.shape, generator=gen, dtype=data.dtype)
    x_noisy = data + sigma * noise
    true = mixture.noisy_score(sigma)
    const = 0.5 * data.shape[1] / sigma**2 - 0.5 * true(x_noisy).pow(2).sum(1)
    nets = [
        lambda x: torch.zeros_like(x),
        true,
        lambda x: true(x) + 0.8 * field(x),
        lambda x: -x / (1 + sigma**2),
    ]
    for s in nets:
        dsm = denoising_loss(s, data, sigma, noise=noise)
        esm = explicit_loss(s, true, x_noisy)
        diff = dsm - esm - const  # mean zero for every s
        se = float(diff.std() / math.sqrt(N))
        assert abs(float(diff.mean())) < Z * se, (float(diff.mean()), se)


def test_ncsn_loss_is_minimised_by_the_blurred_scores_at_every_level(mixture, data):
    sigmas = torch.tensor([3.0, 1.0, 0.3, 0.1], dtype=torch.float64)
    gen = torch.Generator().manual_seed(4)
    levels = torch.randint(0, len(sigmas), (N,), generator=gen)
    noise = torch.randn(data.shape, generator=gen, dtype=data.dtype)

    def true(x, lv):
        out = torch.empty_like(x)
        for i, sig in enumerate(sigmas.tolist()):
            m = lv == i
            out[m] = mixture.noisy_score(sig)(x[m])
        return out

    def loss_at(th, score, h=field):
        return ncsn_loss(
            lambda x, lv: score(x, lv) + th * h(x), data, sigmas, levels=levels, noise=noise
        )

    for h in (field, radial):
        assert_minimum_at_zero(*quadratic(lambda th: loss_at(th, true, h)))
    g, _ = quadratic(lambda th: loss_at(th, lambda x, lv: mixture.score(x), radial))
    assert_minimum_not_at_zero(g)


def test_noise_conditional_term_is_the_sigma_squared_weighted_denoising_loss():
    gen = torch.Generator().manual_seed(5)
    s, z = torch.randn(7, 3, generator=gen), torch.randn(7, 3, generator=gen)
    sig = torch.rand(7, 1, generator=gen) + 0.1
    direct = 0.5 * sig[:, 0] ** 2 * (s + z / sig).pow(2).sum(1)
    assert torch.allclose(noise_conditional_term(s, z, sig), direct, rtol=1e-5)
