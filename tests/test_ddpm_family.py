"""``probdiff fit ddpm`` end to end: metrics, figures, sampling, evaluation, bad input.

Values are checked against computations of the tests' own: the bound, the samplers' law and the
probability-flow likelihood of a chain whose network outputs zero (a run folder copied with
every weight set to 0) in closed form, the true density of ``mixture2d`` by SciPy, and the
direction of the bound with standard errors."""

import json
import math
import shutil

import numpy as np
import pytest
from helpers import cli as run_cli
from scipy.special import log_ndtr, logsumexp
from scipy.stats import multivariate_normal, norm

from probdiff.cli import main
from probdiff.sampling import samples_name

Z = 4.0  # Monte Carlo checks: within 4 standard errors


TINY = [
    "--T",
    "20",
    "--steps",
    "60",
    "--batch-size",
    "128",
    "--quiet",
    "--hidden",
    "32",
    "--posterior-samples",
    "2",
]


@pytest.fixture(scope="module")
def ddpm_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("ddpm") / "run"
    assert main(["fit", "ddpm", "--data", "mixture2d:n=500", "--out", str(out), *TINY]) == 0
    return out


# ----------------------------------------------------------------- closed forms, by hand
def chain_coefficients(T, beta_start=None, beta_end=None):
    """The linear schedule the family documents (Ho et al.'s 1e-4..0.02 for T = 1000, scaled
    by 1000 / T, the end capped at 0.999), indexed t = 0..T, and what Gaussian algebra gives:
    abar_t, q(x_{t-1} | x_t, x_0) = N(c0_t x_0 + ct_t x_t, sq2_t I)."""
    b0 = 1e-4 * 1000 / T if beta_start is None else beta_start
    b1 = min(0.02 * 1000 / T, 0.999) if beta_end is None else beta_end
    beta = np.concatenate([[0.0], np.linspace(b0, b1, T)])
    alpha = 1 - beta
    abar = np.cumprod(alpha)
    t = np.arange(2, T + 1)
    c0, ct, sq2 = (np.zeros(T + 1) for _ in range(3))
    c0[t] = beta[t] * np.sqrt(abar[t - 1]) / (1 - abar[t])
    ct[t] = np.sqrt(alpha[t]) * (1 - abar[t - 1]) / (1 - abar[t])
    sq2[t] = beta[t] * (1 - abar[t - 1]) / (1 - abar[t])
    return {"beta": beta, "alpha": alpha, "abar": abar, "c0": c0, "ct": ct, "sq2": sq2, "T": T}


def prior_term(x0, k):
    """-KL(N(sqrt(abar_T) x_0, (1 - abar_T) I) || N(0, I)) per row."""
    ab = k["abar"][k["T"]]
    return -0.5 * (ab * x0**2 - ab - np.log1p(-ab)).sum(1)


def zero_eps_bound(x0, k, decoder="gaussian", levels=None):
    """E over the forward draws of the bound per row (model units) when eps_theta = 0, so that
    mu_theta(x_t, t) = x_t / sqrt(alpha_t), with sigma_t^2 = sq2_t and the decoder N(mu, beta_1):
    (prior, decoder, -sum KL). With x_t = sqrt(abar_t) x_0 + sqrt(1 - abar_t) e,
    mu_q - mu_theta = A x_0 + B e, so E KL_t = (A^2 ||x_0||^2 + B^2 D) / (2 sq2_t); the decoder
    mean is x_0 + sqrt(beta_1 / alpha_1) e. The discretised decoder's expectation over e is by
    Gauss-Hermite quadrature (80 nodes) on each datum's bin."""
    n, d = x0.shape
    T = k["T"]
    sq = (x0**2).sum(1)
    kl = np.zeros(n)
    for t in range(2, T + 1):
        ab, a = k["abar"][t], k["alpha"][t]
        A = k["c0"][t] + (k["ct"][t] - 1 / np.sqrt(a)) * np.sqrt(ab)
        B = (k["ct"][t] - 1 / np.sqrt(a)) * np.sqrt(1 - ab)
        kl += (A**2 * sq + B**2 * d) / (2 * k["sq2"][t])
    b1, a1 = k["beta"][1], k["alpha"][1]
    if decoder == "gaussian":
        dec = np.full(n, -0.5 * d * np.log(2 * np.pi * b1) - 0.5 * d / a1)
    else:
        e, wts = np.polynomial.hermite_e.hermegauss(80)
        wts = wts / wts.sum()
        mean = x0[..., None] + np.sqrt(b1 / a1) * e  # (n, d, nodes)
        logp = discretised_log_mass(x0[..., None], mean, np.sqrt(b1), levels)
        dec = (logp * wts).sum(-1).sum(1)
    return prior_term(x0, k), dec, -kl


def discretised_log_mass(x, mean, scale, levels):
    """log P(bin of x) for N(mean, scale^2) on ``levels`` levels of [-1, 1]: bins of half-width
    1 / (levels - 1), the two end bins open to -inf and +inf (Ho et al. 2020)."""
    h = 1.0 / (levels - 1)
    hi = np.where(x >= 1 - 1e-9, np.inf, (x + h - mean) / scale)
    lo = np.where(x <= -1 + 1e-9, -np.inf, (x - h - mean) / scale)
    # log(Phi(hi) - Phi(lo)) on the side of zero where it is accurate
    flip = lo + hi > 0
    a, b = np.where(flip, -hi, lo), np.where(flip, -lo, hi)
    return log_ndtr(b) + np.log1p(-np.exp(log_ndtr(a) - log_ndtr(b)))


def zero_x0_bound(x0, k, decoder="gaussian", levels=None):
    """The bound per row when the network predicts x_0_hat = 0 (x0 parameterisation), exactly:
    mu_theta = ct_t x_t, so KL_t = c0_t^2 ||x_0||^2 / (2 sq2_t) whatever x_t is, and the decoder
    mean is ct_1 x_1 = 0 (abar_0 = 1): log N(x_0; 0, beta_1 I), or its discretised mass.
    Returns (prior, decoder, -sum KL)."""
    sq = (x0**2).sum(1)
    t = np.arange(2, k["T"] + 1)
    kl = sq * (k["c0"][t] ** 2 / (2 * k["sq2"][t])).sum()
    s = np.sqrt(k["beta"][1])
    if decoder == "gaussian":
        dec = norm.logpdf(x0, 0.0, s).sum(1)
    else:
        dec = discretised_log_mass(x0, 0.0, s, levels).sum(1)
    return prior_term(x0, k), dec, -kl


def mixture2d_log_density(x):
    """The built-in mixture's density by SciPy, from the parameters the data set records."""
    from probdiff.data import load_dataset

    meta = load_dataset("mixture2d:n=1").meta
    comps = [
        np.log(w) + multivariate_normal(m, s**2 * np.eye(2)).logpdf(x)
        for w, m, s in zip(meta["weights"], meta["locs"], meta["scales"])
    ]
    return logsumexp(np.stack(comps, -1), axis=-1)


def zeroed_copy(run, folder):
    """A copy of the run folder whose network weights are all 0: a U-Net or MLP whose last
    layer is linear then outputs 0 (eps_theta = 0, or x_0_hat = 0 under --parameterisation x0)."""
    shutil.copytree(run, folder)
    params = dict(np.load(folder / "params.npz"))
    np.savez(folder / "params.npz", **{k: np.zeros_like(v) for k, v in params.items()})
    return folder


def held_out(run):
    """The run's held-out rows in data units, flattened, as ``evaluate`` uses them."""
    from probdiff import open_run

    return open_run(run).split()[1].flat()


ZERO_BETAS = (0.02, 0.1)  # abar_T = 0.29: the prior term, the KLs and the noise all matter


@pytest.fixture(scope="module")
def zero_run(tmp_path_factory):
    """A run on mixture2d (T = 20, betas 0.02..0.1) copied with eps_theta = 0, re-evaluated."""
    base = tmp_path_factory.mktemp("ddpm_zero")
    out = base / "run"
    betas = ["--beta-start", str(ZERO_BETAS[0]), "--beta-end", str(ZERO_BETAS[1])]
    argv = ["fit", "ddpm", "--data", "mixture2d:n=500", "--out", str(out), *TINY, *betas]
    assert main([*argv, "--steps", "2", "--ode-rows", "50"]) == 0
    folder = zeroed_copy(out, base / "zero")
    assert main(["evaluate", str(folder)]) == 0
    return folder


def test_fit_writes_the_bound_and_sample_quality(ddpm_run):
    """The held-out bound per datum, recomputed row by row, is the reported test_elbo; the
    true log-likelihood is SciPy's density of mixture2d on those rows; and the bound is below
    it: E_p[ELBO] <= E_p[log q] <= E_p[log p] (Gibbs), so the paired mean of log p - ELBO over
    the rows is > -4 of its standard errors (row-to-row spread and the Monte Carlo draws
    both in it, as in the reported test_elbo_stderr). After 60 steps
    the bound is ~270 nats (~29 s.e.) below the truth, so this direction check only catches a
    bound too high by more than that; the values are checked by the zero-network tests."""
    from probdiff import open_run

    m = json.loads((ddpm_run / "metrics.json").read_text())
    for key in (
        "elbo",
        "test_elbo",
        "bits_per_dim",
        "test_bits_per_dim",
        "test_true_log_likelihood",
        "test_true_minus_elbo",
        "test_sliced_wasserstein",
        "sliced_wasserstein_train_test",
        "test_ode_log_likelihood",
        "ode_bits_per_dim",
        "ode_nfe",
    ):
        assert key in m, key
    run = open_run(ddpm_run)
    x = held_out(ddpm_run)
    bound = run.family.variational_bound(run.params, x, seed=run.request.settings.seed)
    assert bound["elbo"] == pytest.approx(m["test_elbo"], rel=1e-9)  # mixture2d: no Jacobian
    logp = mixture2d_log_density(x)
    assert m["test_true_log_likelihood"] == pytest.approx(logp.mean(), rel=1e-9)
    gap = logp - bound["rows"]
    assert m["test_true_minus_elbo"] == pytest.approx(gap.mean(), rel=1e-9)
    assert gap.mean() > -Z * gap.std(ddof=1) / math.sqrt(len(gap)), (gap.mean(), gap.std())
    for name in ("elbo_trace.png", "trajectories.png", "samples_vs_data.png"):
        assert (ddpm_run / name).is_file(), name
    import arviz as az

    stats = az.from_netcdf(ddpm_run / "inference_data.nc").sample_stats
    assert stats["elbo"].shape == (1, 60) and stats["test_elbo"].shape[1] >= 2


def test_a_zero_network_has_the_closed_form_bound_and_likelihood(zero_run):
    """With eps_theta = 0 the bound's expectation, the probability-flow likelihood and so
    both bits per dimension are known (``zero_eps_bound``; the flow is dx = -beta(t) x / 2 dt,
    so x_0 ~ N(0, exp(B(1) - B(eps)) I) with B(t) = -log abar interpolated linearly between
    t = i / T and eps = 1e-5): test_elbo within 4 of its Monte Carlo standard errors of the
    expectation on the held-out rows, each term, test_true_minus_elbo with SciPy's density,
    and the ODE values to 1e-3 (RK45 at rtol = atol = 1e-5; a wrong dimension, log base or
    sign is off by 30% or more)."""
    m = json.loads((zero_run / "metrics.json").read_text())
    x = held_out(zero_run)
    d = x.shape[1]
    k = chain_coefficients(20, *ZERO_BETAS)
    prior, dec, kl = zero_eps_bound(x, k)
    expected = (prior + dec + kl).mean()
    se = m["test_elbo_mc_stderr"]  # the Monte Carlo error given these rows
    assert abs(m["test_elbo"] - expected) < Z * se, (m["test_elbo"], expected, se)
    assert abs(m["bits_per_dim"] + expected / (d * math.log(2))) < Z * se / (d * math.log(2))
    assert m["test_bound_prior"] == pytest.approx(prior.mean(), abs=1e-6)
    assert abs(m["test_bound_decoder"] - dec.mean()) < Z * se
    assert abs(m["test_bound_kl"] - kl.mean()) < Z * se
    truth = mixture2d_log_density(x)
    assert abs(m["test_true_minus_elbo"] - (truth.mean() - expected)) < Z * se
    delta_b = -math.log(k["abar"][20]) - 1e-5 * 20 * -math.log(k["alpha"][1])
    ode = norm.logpdf(x[:50], 0.0, math.exp(delta_b / 2)).sum(1)  # --ode-rows 50
    assert m["test_ode_log_likelihood"] == pytest.approx(ode.mean(), rel=1e-3)
    assert m["ode_bits_per_dim"] == pytest.approx(-ode.mean() / (d * math.log(2)), rel=1e-3)


@pytest.mark.parametrize("sampler", ["ancestral", "ddim:5", "ode_heun:200"])
def test_samplers_of_a_zero_network_have_the_closed_form_law(zero_run, capsys, sampler):
    """eps_theta = 0: ancestral sampling is x_{t-1} = x_t / sqrt(alpha_t) + sigma_t z (no noise
    at t = 1), so x_0 ~ N(0, v I) with v from v_T = 1 by v <- v / alpha_t + sq2_t; DDIM
    (eta = 0, from t = T) maps x_T to x_T / sqrt(abar_T); the probability-flow ODE is
    dx/dt = -beta(t) x / 2, so from t = 1 to 1e-5 it scales x_1 ~ N(0, I) by exp(dB / 2), dB
    = B(1) - B(1e-5), B = -log abar linear between the steps (as the ODE likelihood test).
    Mean and variance of 50 000 draws per coordinate within 4 standard errors (sqrt(v / n)
    and v sqrt(2 / n), 2.5% of v: the fixed_large variance would be 4% off, no noise 37%,
    DDIM from T - 1 10%, the flow's drift with the wrong sign 92%)."""
    k = chain_coefficients(20, *ZERO_BETAS)
    if sampler == "ancestral":
        v = 1.0
        for t in range(20, 1, -1):
            v = v / k["alpha"][t] + k["sq2"][t]
        v = v / k["alpha"][1]
    elif sampler.startswith("ddim"):
        v = 1.0 / k["abar"][20]
    else:
        v = math.exp(-math.log(k["abar"][20]) - 1e-5 * 20 * -math.log(k["alpha"][1]))
    n = 50_000
    code, _, err = run_cli(capsys, "sample", str(zero_run), "-n", str(n), "--sampler", sampler)
    assert code == 0, err
    x = np.load(zero_run / "samples" / f"{samples_name(sampler, 0, n)}.npz")["x"]
    x = x.astype(float)
    assert x.shape == (n, 2)
    assert np.all(np.abs(x.mean(0)) < Z * math.sqrt(v / n)), (x.mean(0), v)
    assert np.all(np.abs((x**2).mean(0) / v - 1) < Z * math.sqrt(2 / n)), ((x**2).mean(0), v)


def test_evaluate_reproduces_the_fit_metrics(ddpm_run, capsys):
    """``evaluate`` on the run's own held-out split, with its seed, repeats the fit's draws."""
    before = json.loads((ddpm_run / "metrics.json").read_text())
    code, out, err = run_cli(capsys, "evaluate", str(ddpm_run), "--json")
    assert code == 0, err
    m = json.loads((ddpm_run / "metrics.json").read_text())
    for key in ("test_elbo", "test_true_minus_elbo", "test_ode_log_likelihood"):
        assert m[key] == pytest.approx(before[key], rel=1e-6), key
    assert json.loads(out)["test_elbo"] == pytest.approx(before["test_elbo"], rel=1e-6)


@pytest.mark.parametrize(
    "estimator,extra",
    [
        ("trace", []),
        ("closed", ["--weighting", "simple"]),
        ("subsampled", ["--parameterisation", "x0", "--schedule", "cosine"]),
        ("subsampled", ["--backend", "numpyro", "--weighting", "simple"]),
    ],
)
def test_every_estimator_trains(tmp_path, estimator, extra):  # ODE likelihood: fixture above
    """Each estimator's objective rises: the mean of its last 10 training estimates is above
    that of its first 10 by more than 4 standard errors of the difference (each from the
    spread of its 10 values, which the trend within them only inflates)."""
    import arviz as az

    out = tmp_path / estimator
    assert (
        main(
            [
                "fit",
                "ddpm",
                "--data",
                "mixture2d:n=300",
                "--out",
                str(out),
                "--estimator",
                estimator,
                *TINY,
                *extra,
                "--ode-rows",
                "0",
            ]
        )
        == 0
    )
    trace = az.from_netcdf(out / "inference_data.nc").sample_stats["elbo"].values[0]
    first, last = trace[:10], trace[-10:]
    se = math.hypot(first.std(ddof=1), last.std(ddof=1)) / math.sqrt(10)
    assert last.mean() - first.mean() > Z * se, (first.mean(), last.mean(), se)


def test_integer_images_use_the_discretised_decoder(tmp_path):
    """Digits: a mass on the 17 levels, by the U-Net; samples are integers 0..16. The reported
    bound is checked on a copy with eps_theta = 0, whose expectation is known (the data mapped
    to [-1, 1] by v / 8 - 1 here, the decoder's expectation by quadrature): test_elbo and
    bits_per_dim (D = 64, base 2) within 4 Monte Carlo standard errors, the prior term exactly."""
    out = tmp_path / "digits"
    assert (
        main(
            [
                "fit",
                "ddpm",
                "--data",
                "digits:n=100",
                "--out",
                str(out),
                *TINY,
                "--channels",
                "8,16",
                "--T",
                "10",
                "--steps",
                "20",
                "--ode-rows",
                "0",
            ]
        )
        == 0
    )
    config = json.loads((out / "config.json").read_text())
    assert config["request"]["options"]["decoder"] == "auto"
    params = np.load(out / "params.npz")
    assert any(".down.0.conv1.weight" in k for k in params.files)  # the U-Net by default
    assert main(["sample", str(out), "-n", "4"]) == 0
    x = np.load(out / "samples" / "default-seed0-n4.npz")["x"]
    assert x.shape == (4, 1, 8, 8) and np.array_equal(x, np.round(x)) and x.max() <= 16

    zero = zeroed_copy(out, tmp_path / "zero")
    assert main(["evaluate", str(zero)]) == 0
    m = json.loads((zero / "metrics.json").read_text())
    x0 = held_out(zero) / 8.0 - 1.0
    prior, dec, kl = zero_eps_bound(x0, chain_coefficients(10), "discretized", levels=17)
    expected, se = (prior + dec + kl).mean(), m["test_elbo_mc_stderr"]
    assert abs(m["test_elbo"] - expected) < Z * se, (m["test_elbo"], expected, se)
    bits = 64 * math.log(2)
    assert abs(m["bits_per_dim"] + expected / bits) < Z * se / bits, (m["bits_per_dim"], se)
    assert abs(m["test_bound_decoder"] - dec.mean()) < Z * se
    assert m["test_bound_prior"] == pytest.approx(prior.mean(), rel=1e-4, abs=1e-6)


@pytest.mark.parametrize("decoder", ["discretized", "gaussian"])
def test_bits_per_dim_of_a_known_chain_on_digits(tmp_path, decoder):
    """With --parameterisation x0 and a network that outputs 0 the bound has no Monte Carlo
    error (``zero_x0_bound``), so every reported number is exact: on digits (levels 0..16,
    model units v / 8 - 1, D = 64) the discretised bound is a log mass, the Gaussian one a
    density of the model units plus the Jacobian 64 log(2 / 16) for nats of the integer data;
    bits_per_dim = -bound / (64 log 2). To float32 round-off (1e-5)."""
    out = tmp_path / "run"
    args = ["--net", "mlp", "--parameterisation", "x0", "--decoder", decoder, "--ode-rows", "0"]
    argv = ["fit", "ddpm", "--data", "digits:n=100", "--out", str(out), *TINY, *args]
    assert main([*argv, "--T", "10", "--steps", "2"]) == 0
    zero = zeroed_copy(out, tmp_path / "zero")
    assert main(["evaluate", str(zero)]) == 0
    m = json.loads((zero / "metrics.json").read_text())
    x0 = held_out(zero) / 8.0 - 1.0
    prior, dec, kl = zero_x0_bound(x0, chain_coefficients(10), decoder, levels=17)
    jacobian = 0.0 if decoder == "discretized" else 64 * math.log(2 / 16)
    elbo = (prior + dec + kl).mean() + jacobian
    assert m["test_elbo"] == pytest.approx(elbo, rel=1e-5)
    assert m["test_bound_decoder"] == pytest.approx(dec.mean() + jacobian, rel=1e-5)
    assert m["test_bound_kl"] == pytest.approx(kl.mean(), rel=1e-5)
    assert m["test_bound_prior"] == pytest.approx(prior.mean(), rel=1e-4, abs=1e-6)
    assert m["bits_per_dim"] == pytest.approx(-elbo / (64 * math.log(2)), rel=1e-5)


@pytest.mark.parametrize(
    "args,message",
    [
        (["--T", "1"], "--T must be >= 2"),
        (["--estimator", "subsampled", "--subsample", "50"], "--subsample must be in 1..T-1"),
        (["--estimator", "trace", "--weighting", "simple"], "needs --estimator closed"),
        (["--schedule", "cosine", "--beta-end", "0.1"], "do not apply"),
        (["--beta-end", "1.5"], "outside (0, 1)"),
        (["--hidden", "a,b"], "--hidden must be"),
        (["--decoder", "discretized"], "integer images"),
        (["--backend", "numpyro", "--estimator", "trace"], "Pyro only"),
        (["--net", "unet"], "needs image data"),
    ],
)
def test_bad_options_one_line(tmp_path, capsys, args, message):
    out = tmp_path / "bad"
    code, _, err = run_cli(
        capsys,
        "fit",
        "ddpm",
        "--data",
        "mixture2d:n=100",
        "--out",
        str(out),
        "--T",
        "20",
        "--steps",
        "5",
        "--quiet",
        *args,
    )
    assert code == 2 and message in err, err
    assert len(err.strip().splitlines()) == 1 and not out.exists()


def test_bad_sampler(ddpm_run, capsys):
    before = (ddpm_run / "metrics.json").read_bytes()
    code, _, err = run_cli(capsys, "sample", str(ddpm_run), "--sampler", "ddim:x")
    assert code == 2 and "integer" in err
    assert (ddpm_run / "metrics.json").read_bytes() == before


@pytest.mark.slow
def test_trained_bound_stays_below_the_true_log_likelihood(tmp_path, capsys):
    """mixture2d has a known density: after 3000 steps at T = 100 the held-out bound is below
    SciPy's true held-out log-likelihood (paired over the rows, never above it beyond 4
    standard errors of the row differences), the report prints the gap, and samples are about
    as close to held-out data as training data are (sliced Wasserstein within twice the
    train-to-held-out distance)."""
    from probdiff import open_run

    out = tmp_path / "run"
    assert (
        main(
            [
                "fit",
                "ddpm",
                "--data",
                "mixture2d",
                "--out",
                str(out),
                "--T",
                "100",
                "--steps",
                "3000",
                "--batch-size",
                "256",
                "--quiet",
                "--posterior-samples",
                "2",
            ]
        )
        == 0
    )
    m = json.loads((out / "metrics.json").read_text())
    run = open_run(out)
    x = held_out(out)
    rows = run.family.variational_bound(run.params, x, seed=run.request.settings.seed)["rows"]
    gap = mixture2d_log_density(x) - rows
    assert m["test_true_minus_elbo"] == pytest.approx(gap.mean(), rel=1e-9)
    assert gap.mean() > -Z * gap.std(ddof=1) / math.sqrt(len(gap)), (gap.mean(), gap.std())
    assert m["test_sliced_wasserstein"] < 2 * m["sliced_wasserstein_train_test"]
    capsys.readouterr()
    assert main(["report", str(out)]) == 0
    assert "test_true_minus_elbo" in capsys.readouterr().out


@pytest.mark.parametrize("size,mode,channels", [((28, 28), "L", "4,8,8"), ((32, 32), "RGB", "4,8")])
def test_png_folders_fit_and_sample(tmp_path, size, mode, channels):
    """28x28 grey and 32x32 colour PNG folders: the U-Net (3 and 2 levels), the discretised
    decoder on 256 levels, integer samples of the folder's shape. On a copy with eps_theta = 0
    the bound's expectation and the dequantised flow likelihood are known (D = C H W, levels
    v / 127.5 - 1): test_elbo and bits_per_dim within 4 Monte Carlo standard errors, the ODE
    values to 1%. That tolerance is numerical, not statistical: at T = 5 beta(t) of the
    chain's SDE is piecewise constant and jumps to 5 (-log(1 - 0.999)) = 35 on the last step,
    where RK45 at its rtol = atol = 1e-5 is 3-5e-4 off (on the T = 20 chain of this kind
    0.2-0.3%, while float64 at 1e-10 matches the closed form to 1e-8); a wrong dimension,
    bin width or log base is off by 5% or more."""
    from PIL import Image

    folder = tmp_path / "pngs"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(8):
        shape = size + ((3,) if mode == "RGB" else ())
        Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8), mode=mode).save(
            folder / f"{i}.png"
        )
    out = tmp_path / "run"
    assert (
        main(
            [
                "fit",
                "ddpm",
                "--data",
                str(folder),
                "--out",
                str(out),
                "--T",
                "5",
                "--steps",
                "3",
                "--quiet",
                "--channels",
                channels,
                "--posterior-samples",
                "1",
                "--test-fraction",
                "0.25",
            ]
        )
        == 0
    )
    assert main(["sample", str(out), "-n", "2"]) == 0
    x = np.load(out / "samples" / "default-seed0-n2.npz")["x"]
    c = 3 if mode == "RGB" else 1
    assert x.shape == (2, c, *size) and x.min() >= 0 and x.max() <= 255

    zero = zeroed_copy(out, tmp_path / "zero")
    assert main(["evaluate", str(zero)]) == 0
    m = json.loads((zero / "metrics.json").read_text())
    x0 = held_out(zero) / 127.5 - 1.0
    d = x0.shape[1]
    assert d == c * size[0] * size[1]
    k = chain_coefficients(5)
    prior, dec, kl = zero_eps_bound(x0, k, "discretized", levels=256)
    expected, se = (prior + dec + kl).mean(), m["test_elbo_mc_stderr"]
    assert abs(m["test_elbo"] - expected) < Z * se, (m["test_elbo"], expected, se)
    bits = d * math.log(2)
    assert abs(m["bits_per_dim"] + expected / bits) < Z * se / bits, (m["bits_per_dim"], se)
    # the flow maps x_0 ~ N(0, exp(dB) I); dequantised by bins of width w = 2 / 255, the ODE
    # value is log N(x_0 + w u; 0, exp(dB) I) + D log w (u in the bin: under 1e-3 nat here)
    w = 2.0 / 255
    delta_b = -math.log(k["abar"][5]) - 1e-5 * 5 * -math.log(k["alpha"][1])
    ode = norm.logpdf(x0, 0.0, math.exp(delta_b / 2)).sum(1) + d * math.log(w)
    assert m["test_ode_log_likelihood"] == pytest.approx(ode.mean(), rel=1e-2)
    assert m["ode_bits_per_dim"] == pytest.approx(-ode.mean() / bits, rel=1e-2)


def test_bound_terms_sum_to_the_elbo_of_pyros_own_estimator(ddpm_run):
    """The term-by-term bound (decoder + KLs + prior, by hand from traces) sums to its
    ELBO, and agrees with TraceMeanField_ELBO on the same program within 4 standard errors."""
    import pyro
    import torch
    from pyro.infer import TraceMeanField_ELBO

    from probdiff.data import load_dataset
    from probdiff.request import make_family
    from probdiff.runfolder import RunFolder, load_params

    run = RunFolder.existing(str(ddpm_run))
    options = json.loads((ddpm_run / "config.json").read_text())["request"]["options"]
    family = make_family("ddpm", options, load_dataset("mixture2d:n=500"))
    x = family.prepare(load_dataset("mixture2d:n=500"))[:200]
    params = load_params(run)
    bound = family.variational_bound(params, x, seed=0)
    assert bound["elbo"] == pytest.approx(bound["prior"] + bound["decoder"] - bound["kl"], abs=1e-4)
    program = family._program("closed", family.fitted_chain(params))
    pyro.set_rng_seed(1)
    with torch.no_grad():
        draws = np.array(
            [
                -TraceMeanField_ELBO(max_plate_nesting=2).loss(
                    program.model, program.guide, torch.as_tensor(x, dtype=torch.float32)
                )
                / len(x)
                for _ in range(40)
            ]
        )
    se = np.sqrt(bound["stderr"] ** 2 + draws.var(ddof=1) / len(draws))
    assert abs(draws.mean() - bound["elbo"]) < 4 * se
    m = json.loads((ddpm_run / "metrics.json").read_text())
    assert m["test_elbo"] == pytest.approx(
        m["test_bound_prior"] + m["test_bound_decoder"] + m["test_bound_kl"], abs=1e-4
    )
