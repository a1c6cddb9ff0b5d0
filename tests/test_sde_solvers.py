"""The SDE samplers and the probability-flow likelihood against closed forms (docs/equations.md section 4).

Every sampler is driven by the exact score of each marginal p_t of a Gaussian mixture
(:mod:`probdiff.diffusion.mixture_score`), so its output must be a sample of p_eps up to sampling error
and the solver's own discretisation bias. Tolerances are 4 standard errors computed from the
samples themselves; the step counts keep the discretisation bias far below that (see
``STEPS``), and a negative control shows the same check fails on a broken sampler.
"""

import math

import pytest
import torch
from scipy.special import ndtr

from probdiff.data import mixture2d_density
from probdiff.diffusion.mixture_score import GaussianMixture
from probdiff.diffusion.ode_likelihood import ode_log_likelihood
from probdiff.diffusion.sde import VESDE, VPSDE, SubVPSDE
from probdiff.diffusion.solvers import solve

F64 = torch.float64
EPS = 1e-3  # the samplers' end time
N = 4000
Z = 4.0

MIXTURE = GaussianMixture.of_dataset_density(mixture2d_density())
GAUSS = GaussianMixture.make([1.0], [[0.5, -1.0]], covs=[[[2.0, 1.2], [1.2, 1.5]]])
TARGETS = {"mixture": MIXTURE, "gauss": GAUSS}


def make_sde(name):
    """sigma_max = 20 for VE: p_1 then has std sqrt(400 + data variance ~ 4), the prior's is 20."""
    return {
        "vp": lambda: VPSDE(0.1, 20.0),
        "subvp": lambda: SubVPSDE(0.1, 20.0),
        "ve": lambda: VESDE(0.01, 20.0),
    }[name]()


def at_time(gm: GaussianMixture, sde, t: float) -> GaussianMixture:
    """p_t as a mixture: components N(a mu_k, a^2 S_k + v I)."""
    a, s = sde.marginal(torch.tensor([t], dtype=F64))
    a, v = float(a), float(s) ** 2
    return GaussianMixture(
        gm.weights, a * gm.locs, a**2 * gm.covs + v * torch.eye(gm.dim, dtype=F64)
    )


def fast_score(gm: GaussianMixture, sde):
    """grad log p_t for a batch that shares one t (the samplers' case): the same closed form as
    ``gm.marginal_score(sde)`` with one (K, D, D) inverse per call instead of N K Cholesky
    factorisations, ~3x faster; ``test_fast_score_is_the_mixture_score`` checks the two agree."""

    def score(x, t):
        comp = at_time(gm, sde, float(t[0]))
        prec = torch.linalg.inv(comp.covs)
        logdet = torch.logdet(comp.covs)
        resid = x.to(F64)[:, None, :] - comp.locs[None]
        pr = torch.einsum("kij,nkj->nki", prec, resid)
        logp = torch.log(comp.weights) - 0.5 * (resid * pr).sum(-1) - 0.5 * logdet
        r = torch.softmax(logp, dim=1)
        return -(r[..., None] * pr).sum(1).to(x.dtype)

    return score


def exact_p1(gm, sde, n, gen):
    """Samples of p_1 itself (x_0 ~ data, then x_1 = a(1) x_0 + std(1) z)."""
    x0 = gm.sample(n, gen)
    return sde.perturb(
        x0, torch.ones(n, dtype=F64), torch.randn(n, gm.dim, generator=gen, dtype=F64)
    )


def moment_zscores(x: torch.Tensor, target: GaussianMixture) -> dict[str, float]:
    """(estimate - truth) / standard error for the mean, the covariance entries and, for a
    mixture, the component weights, each s.e. from the samples' own spread:
    * mean_i: x_i averaged, s.e. sd(x_i) / sqrt(n);
    * cov_ij: (x_i - m_i)(x_j - m_j) averaged about the TRUE mean m, an unbiased estimate of
      C_ij with s.e. sd of the products / sqrt(n);
    * weight_k: the responsibility r_k(x) under the target averaged; E_p[r_k] = pi_k exactly,
      s.e. sd(r_k) / sqrt(n) (at most the binomial s.e. of hard assignments)."""
    x = x.to(F64)
    n = len(x)
    w, mu, S = target.weights, target.locs, target.covs
    mean = (w[:, None] * mu).sum(0)
    cov = (w[:, None, None] * (S + mu[:, :, None] * mu[:, None, :])).sum(0) - torch.outer(
        mean, mean
    )
    out = {}
    for i in range(target.dim):
        out[f"mean[{i}]"] = float((x[:, i].mean() - mean[i]) / (x[:, i].std() / math.sqrt(n)))
    c = x - mean
    for i in range(target.dim):
        for j in range(i, target.dim):
            p = c[:, i] * c[:, j]
            out[f"cov[{i},{j}]"] = float((p.mean() - cov[i, j]) / (p.std() / math.sqrt(n)))
    if len(w) > 1:
        logp, _ = target._components(x, torch.ones(n, dtype=F64), torch.zeros(n, dtype=F64))
        r = torch.softmax(logp, dim=1)
        for k in range(len(w)):
            out[f"weight[{k}]"] = float((r[:, k].mean() - w[k]) / (r[:, k].std() / math.sqrt(n)))
    return out


def worst(z: dict[str, float]) -> float:
    return max(abs(v) for v in z.values())


def sample(solver, sde_name, target_name, n=N, seed=0, steps=None, score_scale=1.0, snr=None):
    sde, gm = make_sde(sde_name), TARGETS[target_name]
    gen = torch.Generator().manual_seed(seed)
    # Start from exact p_1 samples, not the SDE's prior: this tests the solver alone. For VE
    # with sigma_max = 20 the prior N(0, 400 I) misses p_1's mean m (~0.4 for the mixture)
    # and its data covariance C (~4); the flow ODE carries that to a mean bias of about
    # C^(1/2) m / sigma_max ~ 0.04, above one standard error (~0.03) at n = 4000.
    x1 = exact_p1(gm, sde, n, gen)
    base = fast_score(gm, sde)
    score = base if score_scale == 1.0 else (lambda x, t: score_scale * base(x, t))
    steps = steps or STEPS.get((solver, sde_name), STEPS[solver])
    x, _, _ = solve(
        solver, sde, score, x1, steps, generator=gen, eps=EPS, snr=PC_SNR if snr is None else snr
    )
    return x, at_time(gm, sde, EPS)


# Steps per sampler. Discretisation bias of the Gaussian case in units of the n = 4000 s.e.,
# from the exact moment recursion of each (affine) step: EM 1000 steps <= 0.05; reverse
# diffusion 1000 steps <= 0.06 (vp), 0.14 (subvp), 0.34 (ve: first order with a large
# constant, the SMLD step variance is 1.5% of sigma^2), hence 2000 for ve (0.17); Heun 200
# steps and RK45 differ from each other by < 0.03 s.e. on 400k samples. Monte Carlo runs with
# n = 100k-400k of every case (mixture included) showed no bias beyond their own noise.
STEPS = {
    "em": 1000,
    "reverse_diffusion": 1000,
    ("reverse_diffusion", "ve"): 2000,
    "pc": 1000,
    "ode": 1,
    "ode_heun": 200,
}
# The Langevin corrector is the unadjusted Langevin algorithm, whose stationary law is biased:
# for N(m, C) each eigenvalue of C grows by ~tau / 2, tau = 2 snr^2 ||z||^2 / ||s||^2. At the
# default snr = 0.16 that is 0.5-0.7 s.e. for GAUSS at n = 4000 at any number of steps (a
# property of the method, not of the code); snr = 0.05 cuts it to < 0.1 s.e.
PC_SNR = 0.05


# ------------------------------------------------------------------------- the reference score
def test_fast_score_is_the_mixture_score():
    """The samplers' score is GaussianMixture.marginal_score (the library's closed form), and
    ``at_time`` is the marginal that ``marginal_log_prob`` evaluates."""
    gen = torch.Generator().manual_seed(0)
    for name in ("vp", "subvp", "ve"):
        sde = make_sde(name)
        for gm in (MIXTURE, GAUSS):
            for t in (EPS, 0.1, 0.5, 1.0):
                x = at_time(gm, sde, t).sample(200, gen)
                tt = torch.full((200,), t, dtype=F64)
                torch.testing.assert_close(
                    fast_score(gm, sde)(x, tt), gm.marginal_score(sde)(x, tt), rtol=1e-9, atol=1e-9
                )
                torch.testing.assert_close(
                    at_time(gm, sde, t).log_prob(x),
                    gm.marginal_log_prob(sde, x, tt),
                    rtol=1e-10,
                    atol=1e-10,
                )


# ---------------------------------------------------------------- (a) samplers reproduce p_eps
SOLVER_NAMES = ["em", "reverse_diffusion", "pc", "ode", "ode_heun"]


def _marks(sde_name, solver, target):
    """slow: the mixture with 2000 score evaluations (pc; reverse diffusion on ve), ~4 s each,
    and, to keep the default run short, sub-VP and VE with the solvers other than EM and the
    ODE (every solver runs on VP by default; the whole matrix with -m slow)."""
    long = solver == "pc" or (solver, sde_name) == ("reverse_diffusion", "ve")
    rest = sde_name != "vp" and solver not in ("em", "ode")
    return [pytest.mark.slow] if (long and target == "mixture") or rest else []


CASES = [
    pytest.param(s, v, t, marks=_marks(s, v, t))
    for s in ("vp", "subvp", "ve")
    for v in SOLVER_NAMES
    for t in ("gauss", "mixture")
]


@pytest.mark.parametrize("sde_name, solver, target", CASES)
def test_sampler_with_exact_score_reproduces_p_eps(sde_name, solver, target):
    """Mean, covariance (and mixture weights) of N samples within 4 s.e. of p_eps's."""
    x, p_eps = sample(solver, sde_name, target)
    assert torch.isfinite(x).all()
    z = moment_zscores(x, p_eps)
    assert worst(z) < Z, z


# ------------------------------------------------------------------------ (b) negative controls
@pytest.mark.parametrize(
    "sde_name, steps, scale",
    [("vp", 3, 1.0), ("ve", 5, 1.0), ("vp", 200, 0.5)],
    ids=["vp-3-steps", "ve-5-steps", "vp-half-score"],
)
def test_moment_check_fails_on_a_broken_sampler(sde_name, steps, scale):
    """The same check has power: Euler-Maruyama on far too few steps, or with half the score,
    fails it (worst |z| ~ 20, ~350 and ~40 here; over seeds 0-5 they never came near 4. A
    subtler 10% score error gives 3-6 s.e. at n = 4000: the check's resolution)."""
    x, p_eps = sample("em", sde_name, "mixture", steps=steps, score_scale=scale)
    z = moment_zscores(x, p_eps)
    assert worst(z) > Z, z


# ------------------------------------------------------------ (c) probability-flow likelihood
def _exact_p1_log_prob(gm, sde):
    return lambda x1: gm.marginal_log_prob(sde, x1, torch.ones(len(x1), dtype=F64))


@pytest.mark.parametrize("sde_name", ["vp", "subvp", "ve"])
def test_ode_likelihood_exact_trace_is_the_closed_form(sde_name):
    """Exact score, exact divergence and the exact p_1 as prior: log p_eps(x) per row to 1e-4."""
    sde, gm = make_sde(sde_name), MIXTURE
    x = gm.sample(48, torch.Generator().manual_seed(1))
    eps = 1e-5
    res = ode_log_likelihood(
        sde,
        gm.marginal_score(sde),
        x,
        trace="exact",
        eps=eps,
        rtol=1e-7,
        atol=1e-7,
        prior_log_prob=_exact_p1_log_prob(gm, sde),
    )
    want = gm.marginal_log_prob(sde, x, torch.full((len(x),), eps, dtype=F64))
    torch.testing.assert_close(res.log_prob, want, rtol=0, atol=1e-4)


@pytest.mark.parametrize("sde_name", ["vp", "subvp", "ve"])
def test_ode_likelihood_hutchinson_is_unbiased(sde_name):
    """One Rademacher probe per row: the per-row error has mean 0 within 4 s.e. (correlated
    Gaussian data, so dv/dx has off-diagonal terms and the estimate a real spread)."""
    sde, gm = make_sde(sde_name), GAUSS
    gen = torch.Generator().manual_seed(2)
    x = gm.sample(400, gen)
    eps = 1e-5
    res = ode_log_likelihood(
        sde,
        gm.marginal_score(sde),
        x,
        trace="hutchinson",
        eps=eps,
        rtol=1e-7,
        atol=1e-7,
        generator=gen,
        prior_log_prob=_exact_p1_log_prob(gm, sde),
    )
    err = res.log_prob - gm.marginal_log_prob(sde, x, torch.full((len(x),), eps, dtype=F64))
    se = err.std() / math.sqrt(len(err))
    assert err.std() > 1e-2  # the probe does add noise, so the check below means something
    assert abs(float(err.mean())) < Z * float(se), (float(err.mean()), float(se))


@pytest.mark.parametrize("sde_name", ["vp", "subvp", "ve"])
def test_ode_likelihood_dequantised_bound(sde_name):
    """Data on a grid, bins of width w: the estimate is unbiased for the Jensen bound
    J(x) = E_u log p_eps(x + u) + D log w, which for a Gaussian is log p_eps(x)
    - sum_i w^2 / (24 s_i^2) + D log w, and J(x) <= log P_eps(bin of x) (mass by erf); so on
    average over rows the estimate is <= the exact log bin mass within 4 s.e."""
    sde, w = make_sde(sde_name), 0.5  # not 1, so that the D log w term counts
    loc, sd = torch.tensor([0.3, -0.2], dtype=F64), torch.tensor([1.0, 1.5], dtype=F64)
    gm = GaussianMixture.make([1.0], [loc.tolist()], covs=[torch.diag(sd**2).tolist()])
    gen = torch.Generator().manual_seed(3)
    x = torch.round(gm.sample(300, gen) / w) * w  # data on the grid w Z^2
    eps = 1e-5
    res = ode_log_likelihood(
        sde,
        gm.marginal_score(sde),
        x,
        trace="exact",
        eps=eps,
        rtol=1e-7,
        atol=1e-7,
        generator=gen,
        bin_width=w,
        prior_log_prob=_exact_p1_log_prob(gm, sde),
    )
    a, s = sde.marginal(torch.tensor([eps], dtype=F64))
    m, sd_eps = a * loc, torch.sqrt(a**2 * sd**2 + s**2)
    hi, lo = ((x + w / 2 - m) / sd_eps).numpy(), ((x - w / 2 - m) / sd_eps).numpy()
    log_mass = torch.log(torch.as_tensor(ndtr(hi) - ndtr(lo))).sum(1)
    log_p = gm.marginal_log_prob(sde, x, torch.full((len(x),), eps, dtype=F64))
    jensen = log_p - (w**2 / (24 * sd_eps**2)).sum() + 2 * math.log(w)
    assert torch.all(jensen <= log_mass)
    n = len(x)
    d_j = res.log_prob - jensen
    assert abs(float(d_j.mean())) < Z * float(d_j.std()) / math.sqrt(n), float(d_j.mean())
    d_m = res.log_prob - log_mass
    assert float(d_m.mean()) < Z * float(d_m.std()) / math.sqrt(n), float(d_m.mean())


# -------------------------------------------------------------- (d) forward discretisations
def test_vp_discretize_is_the_ddpm_step():
    """x + F + G z = sqrt(1 - beta_i) x + sqrt(beta_i) z, a DDPM step whose beta_i is the exact
    transition's 1 - exp(-int_t^{t+dt} beta) = beta(t) dt + O(dt^2); the chain's steps compose
    to the marginal (a(t), std(t)) exactly."""
    b0, b1 = 0.1, 20.0
    sde = VPSDE(b0, b1)
    gen = torch.Generator().manual_seed(4)
    x = torch.randn(5, 3, generator=gen, dtype=F64)
    t = torch.tensor([0.0, 0.1, 0.37, 0.8, 0.999], dtype=F64)
    dt = 1e-3
    F, G = sde.discretize(x, t, dt)
    beta_dt = (b0 + t * (b1 - b0)) * dt  # beta(t) dt
    beta_i = -torch.expm1(-(beta_dt + 0.5 * (b1 - b0) * dt**2))
    torch.testing.assert_close(x + F, torch.sqrt(1 - beta_i)[:, None] * x, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(G, torch.sqrt(beta_i), rtol=1e-12, atol=1e-12)
    # first order: beta_i = beta(t) dt + O(dt^2), as in Ho et al.'s sqrt(1 - beta dt) x + sqrt(beta dt) z
    assert torch.all((beta_i - beta_dt).abs() <= 0.5 * (b1 - b0) * dt**2 + 0.5 * beta_dt**2)
    # composition over a grid of 100 steps: mean factor a(1), variance std(1)^2
    grid = torch.linspace(0, 1, 101, dtype=F64)[:-1]
    F, G = sde.discretize(torch.ones(100, 1, dtype=F64), grid, 0.01)
    a, var = torch.ones((), dtype=F64), torch.zeros((), dtype=F64)
    for k in range(100):
        a, var = (1 + F[k, 0]) * a, (1 + F[k, 0]) ** 2 * var + G[k] ** 2
    a1, s1 = sde.marginal(torch.ones(1, dtype=F64))
    torch.testing.assert_close(a, a1[0], rtol=1e-12, atol=0)
    torch.testing.assert_close(var, s1[0] ** 2, rtol=1e-12, atol=0)


def test_ve_discretize_increments_sigma_squared():
    sde = VESDE(0.01, 20.0)
    x = torch.zeros(4, 2, dtype=F64)
    t = torch.tensor([0.0, 0.25, 0.5, 0.9], dtype=F64)
    dt = 0.01
    F, G = sde.discretize(x, t, dt)
    assert torch.all(F == 0)
    torch.testing.assert_close(G**2, sde.sigma(t + dt) ** 2 - sde.sigma(t) ** 2, rtol=1e-12, atol=0)
    # the SMLD chain's increments add up to the marginal variance exactly
    grid = torch.linspace(0, 1, 101, dtype=F64)[:-1]
    _, G = sde.discretize(torch.zeros(100, 1, dtype=F64), grid, 0.01)
    torch.testing.assert_close(
        (G**2).sum(), sde.marginal(torch.ones(1, dtype=F64))[1][0] ** 2, rtol=1e-10, atol=0
    )


def _simulate(sde, x0, n, t_end, n_steps, gen, chain):
    """Forward paths from x0 with Euler-Maruyama on (f, g), or the SDE's own discretize chain;
    also the EM recursion's exact moments (the SDEs are linear: f = c(t) x)."""
    dt = t_end / n_steps
    x = x0.expand(n, -1).clone()
    mean, var = x0.clone(), torch.zeros(1, dtype=F64)
    for i in range(n_steps):
        t = torch.full((n,), i * dt, dtype=F64)
        if chain:
            F, G = sde.discretize(x, t, dt)
        else:
            f, g = sde.drift_diffusion(x, t)
            F, G = f * dt, g * math.sqrt(dt)
        f1, g1 = sde.drift_diffusion(torch.ones(1, 1, dtype=F64), t[:1])
        mean, var = (1 + f1[0, 0] * dt) * mean, (1 + f1[0, 0] * dt) ** 2 * var + g1[0] ** 2 * dt
        x = x + F + G[:, None] * torch.randn(x.shape, generator=gen, dtype=F64)
    return x, mean, var


@pytest.mark.parametrize("chain", [False, True], ids=["euler_maruyama", "discretize"])
@pytest.mark.parametrize("sde_name", ["vp", "subvp", "ve"])
def test_forward_simulation_matches_marginal(sde_name, chain):
    """x_t from x_0 at t = 0.5 by many small steps: mean a(t) x_0 and variance std(t)^2 within
    4 s.e. per coordinate; the EM recursion's own moments are within 0.2 s.e. of the exact
    ones (so the step's bias cannot explain a pass or a failure)."""
    sde = make_sde(sde_name)
    gen = torch.Generator().manual_seed(5)
    x0 = torch.tensor([1.0, -2.0], dtype=F64)
    n, t_end = 8000, 0.5
    x, em_mean, em_var = _simulate(sde, x0, n, t_end, 2000, gen, chain)
    a, s = sde.marginal(torch.tensor([t_end], dtype=F64))
    mean, var = a * x0, s**2
    se_mean = x.std(0) / math.sqrt(n)
    dev2 = (x - mean) ** 2
    se_var = dev2.std(0) / math.sqrt(n)
    assert torch.all((x.mean(0) - mean).abs() < Z * se_mean), (x.mean(0), mean, se_mean)
    assert torch.all((dev2.mean(0) - var).abs() < Z * se_var), (dev2.mean(0), var, se_var)
    if not chain:
        assert torch.all((em_mean - mean).abs() < 0.2 * se_mean)
        assert torch.all((em_var - var).abs() < 0.2 * se_var)
