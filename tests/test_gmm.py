"""The Gaussian mixture (docs/equations.md 1.6-1.12) against independent computations: scikit-learn, NumPy."""

import numpy as np
import pyro
import pytest
import torch
from pyro.infer import TraceEnum_ELBO
from sklearn.mixture import GaussianMixture as SkGMM

from probdiff.data import load_dataset
from probdiff.guides.gmm import MixtureGuide, encoder_init, posterior_assignments
from probdiff.models.gmm import em as gmm_em
from probdiff.models.gmm.em import MixtureParams
from probdiff.models.gmm.model import GaussianMixture

F64 = torch.float64


def random_params(rng, k=3, d=2) -> MixtureParams:
    w = rng.dirichlet(np.full(k, 2.0))
    return MixtureParams(w, rng.normal(0, 2, (k, d)), rng.uniform(0.4, 1.5, k))


def sklearn_spherical(p: MixtureParams) -> SkGMM:
    """An sklearn GaussianMixture carrying the parameters p (spherical: one variance each)."""
    sk = SkGMM(len(p.weights), covariance_type="spherical")
    sk.weights_, sk.means_, sk.covariances_ = p.weights, p.locs, p.scales**2
    sk.precisions_cholesky_ = 1.0 / p.scales
    return sk


def enum_elbo(model, guide, x) -> float:
    return -TraceEnum_ELBO(max_plate_nesting=1).loss(model, guide, x)


@pytest.mark.parametrize("d", [3, 12])  # 12: distances by the expansion ||x||^2 - 2 x.mu + ...
def test_log_likelihood_matches_sklearn_at_the_same_parameters(d):
    rng = np.random.default_rng(1)
    p = random_params(rng, k=4, d=d)
    x = rng.normal(0, 2, (200, d))
    np.testing.assert_allclose(
        gmm_em.log_likelihood(x, p), sklearn_spherical(p).score_samples(x), rtol=1e-10
    )
    np.testing.assert_allclose(
        gmm_em.responsibilities(x, p), sklearn_spherical(p).predict_proba(x), atol=1e-10
    )


@pytest.mark.parametrize("d", [1, 2, 5])
def test_enumerated_elbo_is_the_exact_log_likelihood(d):
    """With z enumerated and point globals, Pyro's TraceEnum_ELBO is log p(x), not a bound."""
    rng = np.random.default_rng(d)
    p = random_params(rng, k=3, d=d)
    x = rng.normal(0, 2, (100, d))
    model = GaussianMixture(3, d, p.as_dict(), dtype=F64)
    guide = MixtureGuide(3, p.as_dict(), dtype=F64)
    exact = gmm_em.log_likelihood(x, p).sum()
    assert enum_elbo(model, guide, torch.tensor(x)) == pytest.approx(exact, rel=1e-10)


def exact_encoder(p: MixtureParams) -> dict[str, np.ndarray]:
    """Encoder weights that reproduce p(z | x) exactly from phi(x) = (x, |x|^2 / 2)."""
    d = p.locs.shape[1]
    prec = 1.0 / p.scales**2
    w = np.vstack([(p.locs * prec[:, None]).T, -prec[None, :]])
    b = np.log(p.weights) - d * np.log(p.scales) - 0.5 * (p.locs**2).sum(1) * prec
    return {"encoder_w0": w, "encoder_b0": b}


def test_encoder_elbo_is_a_bound_that_is_tight_at_the_exact_posterior():
    rng = np.random.default_rng(3)
    p = random_params(rng)
    x = torch.tensor(rng.normal(0, 2, (150, 2)))
    exact = gmm_em.log_likelihood(x.numpy(), p).sum()
    model = GaussianMixture(3, 2, p.as_dict(), dtype=F64)
    loose = MixtureGuide(
        3, {**p.as_dict(), **encoder_init(2, 3, 0, seed=0)}, local_guide="encoder", dtype=F64
    )
    gap = exact - enum_elbo(model, loose, x)
    # the gap is sum_n KL(q(z|x_n) || p(z|x_n)), computed independently
    q = torch.softmax(loose.encode_logits(x), -1).detach().numpy()
    post = gmm_em.responsibilities(x.numpy(), p)
    kl = (q * (np.log(q) - np.log(post))).sum()
    assert gap == pytest.approx(kl, rel=1e-8) and gap > 0
    pyro.clear_param_store()
    tight = MixtureGuide(3, {**p.as_dict(), **exact_encoder(p)}, local_guide="encoder", dtype=F64)
    assert enum_elbo(model, tight, x) == pytest.approx(exact, rel=1e-10)


def test_infer_discrete_map_assignment_is_the_hard_encoder():
    rng = np.random.default_rng(4)
    p = random_params(rng)
    x = torch.tensor(rng.normal(0, 2, (300, 2)))
    model = GaussianMixture(3, 2, p.as_dict(), dtype=F64)
    guide = MixtureGuide(3, p.as_dict(), dtype=F64)
    z = posterior_assignments(model, guide, x, temperature=0)
    np.testing.assert_array_equal(z.numpy(), gmm_em.hard_encode(x.numpy(), p))


def test_infer_discrete_draws_follow_the_responsibilities():
    """Sampled assignments (temperature 1): per-datum frequencies within 5 binomial s.e."""
    rng = np.random.default_rng(5)
    p = MixtureParams(np.array([0.5, 0.5]), np.array([[0.0], [1.0]]), np.array([1.0, 1.0]))
    x = torch.tensor([[0.3], [0.5], [2.0]], dtype=F64)
    model = GaussianMixture(2, 1, p.as_dict(), dtype=F64)
    guide = MixtureGuide(2, p.as_dict(), dtype=F64)
    draws = np.stack(
        [posterior_assignments(model, guide, x, temperature=1).numpy() for _ in range(2000)]
    )
    want = gmm_em.responsibilities(x.numpy(), p)[:, 1]
    se = np.sqrt(want * (1 - want) / len(draws))
    assert np.all(np.abs(draws.mean(0) - want) < 5 * se)
    del rng


def test_decoder_draws_have_the_mixture_mean_and_variance():
    rng = np.random.default_rng(6)
    p = random_params(rng)
    n = 20000
    x, z = gmm_em.sample(n, p, rng)
    mean = p.weights @ p.locs
    # per coordinate: Var = sum_k pi_k (sigma_k^2 + mu_k^2) - mean^2
    var = p.weights @ (p.scales[:, None] ** 2 + p.locs**2) - mean**2
    assert np.all(np.abs(x.mean(0) - mean) < 4 * np.sqrt(var / n))
    # the sample variance has standard error ~ sqrt((m4 - var^2) / n); m4 from the draws
    m4 = ((x - x.mean(0)) ** 4).mean(0)
    assert np.all(np.abs(x.var(0) - var) < 4 * np.sqrt((m4 - var**2) / n))
    np.testing.assert_allclose(np.bincount(z, minlength=3) / len(z), p.weights, atol=0.015)


def test_em_increases_the_likelihood_every_step():
    x = load_dataset("mixture2d", seed=0).flat()
    p = gmm_em.kmeans_pp_init(x, 3, np.random.default_rng(0))
    _, trace = gmm_em.em_fit(x, p, max_iter=50)
    assert np.all(np.diff(trace) >= -1e-10)


def sklearn_best(x, k, restarts=3, seed=0) -> float:
    sk = SkGMM(
        k, covariance_type="spherical", n_init=restarts, random_state=seed, tol=1e-8, max_iter=1000
    ).fit(x)
    return float(sk.score(x))


def test_em_reaches_sklearn_log_likelihood():
    x = load_dataset("mixture2d", seed=0).flat()
    best = max(
        gmm_em.em_fit(x, gmm_em.kmeans_pp_init(x, 3, np.random.default_rng(s)))[1][-1]
        for s in range(3)
    )
    assert best == pytest.approx(sklearn_best(x, 3), rel=1e-4)


@pytest.mark.parametrize("backend", ["pyro", "numpyro"])
def test_svi_fit_matches_sklearn_and_enumerated_elbo_is_exact(tmp_path, backend):
    """DESIGN: fitted log-likelihood within 0.5% of sklearn's EM (best of 3 for both), and the
    enumerated ELBO at the optimum equals the exact log-likelihood."""
    from probdiff.fitting import fit
    from probdiff.models.gmm.family import GMMFamily
    from probdiff.request import FitRequest
    from probdiff.svi import SVISettings

    req = FitRequest(
        model="gmm",
        data="mixture2d",
        out=str(tmp_path / "run"),
        backend=backend,
        test_fraction=0.0,
        settings=SVISettings(steps=400, lr=0.05, restarts=3, progress=False),
        options=GMMFamily.default_options(),
    )
    metrics = fit(req).metrics
    x = load_dataset("mixture2d", seed=0).flat()
    assert metrics["log_likelihood"] == pytest.approx(sklearn_best(x, 3), rel=0.005)
    # float32 evaluation of a sum over 1000 points: relative error ~1e-6
    assert metrics["elbo"] == pytest.approx(metrics["log_likelihood"], rel=1e-5)
