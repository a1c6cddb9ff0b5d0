"""``probdiff fit ncsn`` and ``probdiff fit sde`` end to end: metrics, figures, sampling by
every solver, evaluation, the likelihood table, bad input.

Values are checked on copies of the runs whose network weights are all 0, so that the score is
0 and the loss, the flow ODE's likelihood and the samplers' law are known in closed form, and
against SciPy's density of ``mixture2d``."""

import json
import math
import shutil

import numpy as np
import pytest
from helpers import cli as run_cli
from scipy.special import logsumexp
from scipy.stats import multivariate_normal, norm

from probdiff.cli import main
from probdiff.sampling import samples_name

Z = 4.0  # Monte Carlo checks: within 4 standard errors
ODE_EPS, SAMPLE_EPS = 1e-5, 1e-3  # the likelihood's and the samplers' end times


TINY = ["--steps", "150", "--batch-size", "128", "--quiet", "--hidden", "32,32"]
SOLVERS = ("em:20", "reverse_diffusion:20", "pc:10", "ode", "ode_euler:20", "ode_heun:10")


@pytest.fixture(scope="module")
def ncsn_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("ncsn") / "run"
    assert (
        main(
            [
                "fit",
                "ncsn",
                "--data",
                "mixture2d:n=500",
                "--out",
                str(out),
                *TINY,
                "--levels",
                "5",
                "--steps-per-level",
                "20",
            ]
        )
        == 0
    )
    return out


@pytest.fixture(scope="module")
def sde_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("sde") / "run"
    assert main(["fit", "sde", "--data", "mixture2d:n=500", "--out", str(out), *TINY]) == 0
    return out


def metrics(run):
    return json.loads((run / "metrics.json").read_text())


def zeroed_copy(run, folder):
    """A copy of the run folder with every network weight 0: the MLP outputs 0, so the score
    net / std (SDE) or net / sigma (NCSN) is 0."""
    shutil.copytree(run, folder)
    params = dict(np.load(folder / "params.npz"))
    np.savez(folder / "params.npz", **{k: np.zeros_like(v) for k, v in params.items()})
    return folder


def held_out(run):
    from probdiff import open_run

    return open_run(run).split()[1].flat()


def mixture2d_meta():
    from probdiff.data import load_dataset

    return load_dataset("mixture2d:n=1").meta


def mixture2d_log_density(x, blur=0.0):
    """log density of mixture2d (blurred by N(0, blur^2 I)) by SciPy."""
    meta = mixture2d_meta()
    comps = [
        np.log(w) + multivariate_normal(m, (s**2 + blur**2) * np.eye(2)).logpdf(x)
        for w, m, s in zip(meta["weights"], meta["locs"], meta["scales"])
    ]
    return logsumexp(np.stack(comps, -1), axis=-1)


def vp_integral(t, b0=0.1, b1=20.0):
    """B(t) = int_0^t beta for beta(t) = b0 + (b1 - b0) t (the default VP and sub-VP SDEs)."""
    return b0 * t + 0.5 * (b1 - b0) * t**2


def zero_score_flow_log_density(x, delta_b):
    """With s = 0 the VP (and sub-VP) flow ODE is dx/dt = -beta(t) x / 2: x_1 = exp(-dB / 2) x_eps
    with dB = B(1) - B(eps), and the prior is N(0, I), so the model density at eps is
    N(0, exp(dB) I) exactly."""
    return norm.logpdf(x, 0.0, math.exp(delta_b / 2)).sum(1)


@pytest.fixture(scope="module")
def zero_sde_run(sde_run, tmp_path_factory):
    folder = zeroed_copy(sde_run, tmp_path_factory.mktemp("sde_zero") / "run")
    assert main(["evaluate", str(folder)]) == 0
    return folder


def test_ncsn_fit_writes_its_loss_and_figures(ncsn_run, capsys):
    m = metrics(ncsn_run)
    for key in (
        "loss",
        "test_loss",
        "test_loss_stderr",
        "test_explicit_loss",
        "test_sliced_wasserstein",
        "sliced_wasserstein_train_test",
    ):
        assert key in m, key
    for name in ("elbo_trace.png", "langevin_trajectories.png", "samples_vs_data.png"):
        assert (ncsn_run / name).is_file(), name
    code, out, err = run_cli(capsys, "report", str(ncsn_run))
    assert code == 0 and "test_loss" in out, err


def blurred_mixture2d_score(x, sigma):
    """grad log of mixture2d blurred by N(0, sigma^2 I), by hand: components
    N(m_k, (s_k^2 + sigma^2) I), responsibilities by SciPy."""
    meta = mixture2d_meta()
    var = meta["scales"] ** 2 + sigma**2
    logr = np.stack(
        [
            np.log(w) + multivariate_normal(m, v * np.eye(2)).logpdf(x)
            for w, m, v in zip(meta["weights"], meta["locs"], var)
        ],
        -1,
    )
    r = np.exp(logr - logsumexp(logr, axis=-1, keepdims=True))
    return np.einsum("nk,nkd->nd", r, (meta["locs"][None] - x[:, None, :]) / var[None, :, None])


def test_ncsn_losses_of_a_zero_score(ncsn_run, tmp_path):
    """s = 0: the NCSN loss of every level is 0.5 ||z||^2, so test_loss is D / 2 = 1 within 4
    of its standard errors; the explicit loss is the mean over levels of
    0.5 sigma^2 E||grad log q_sigma(x + sigma z)||^2, estimated here by 200 draws per held-out
    row with the blurred score by hand, within 4 standard errors (the run's one draw per row
    and level, and these draws)."""
    from probdiff import open_run

    zero = zeroed_copy(ncsn_run, tmp_path / "zero")
    assert main(["evaluate", str(zero)]) == 0
    m = metrics(zero)
    assert abs(m["test_loss"] - 1.0) < Z * m["test_loss_stderr"], m
    x = held_out(zero)
    sigmas = [float(s) for s in open_run(zero).family.sigmas]
    rng = np.random.default_rng(0)
    per_level, var_one = [], 0.0
    for sigma in sigmas:
        xn = x[None] + sigma * rng.standard_normal((200, *x.shape))  # (draws, rows, D)
        s = blurred_mixture2d_score(xn.reshape(-1, 2), sigma).reshape(xn.shape)
        term = 0.5 * sigma**2 * (s**2).sum(-1)
        per_level.append(term.mean())
        var_one += term.var(axis=0, ddof=1).mean() / len(x)  # the run's one draw per row
    mine = np.mean(per_level)
    se = math.sqrt(var_one) / len(sigmas) * math.sqrt(1 + 1 / 200)
    assert abs(m["test_explicit_loss"] - mine) < Z * se, (m["test_explicit_loss"], mine, se)


def replayed(program, x, **kwargs):
    """(guide trace, model trace replayed on it)."""
    import pyro.poutine as poutine

    guide = poutine.trace(program.guide).get_trace(x, **kwargs)
    model = poutine.trace(poutine.replay(program.model, trace=guide)).get_trace(x, **kwargs)
    return guide, model


def assert_kl_zero(guide, model, names):
    from torch.distributions import kl_divergence

    for name in names:
        kl = kl_divergence(guide.nodes[name]["fn"], model.nodes[name]["fn"])
        assert float(kl.abs().max()) == 0.0, name


def test_ncsn_program_elbo_is_minus_the_ncsn_loss():
    """With k of L levels per batch and a minibatch of n of n_total rows, the program's ELBO
    is -(n_total / n) (1 / k) sum over the drawn levels and rows of 0.5 ||sigma s + z||^2,
    an unbiased estimate of -n_total x (the NCSN loss averaged over levels); by hand here."""
    import pyro
    import torch

    from probdiff.data import load_dataset
    from probdiff.models.score.ncsn_family import NCSNFamily

    family = NCSNFamily(
        NCSNFamily.default_options(levels=5, subsample=2, hidden="16"),
        load_dataset("mixture2d:n=100"),
    )
    module = family.score_module(seed=1)
    program = family._program(module, 2)
    x = torch.randn(30, 2, generator=torch.Generator().manual_seed(0))
    pyro.set_rng_seed(2)
    guide, model = replayed(program, x, n_total=90)
    assert_kl_zero(guide, model, ["x_noisy"])
    levels = guide.nodes["levels"]["value"]
    xn = guide.nodes["x_noisy"]["value"]  # (k, n, D)
    total = 0.0
    with torch.no_grad():
        for j, i in enumerate(levels.tolist()):
            sig = float(family.sigmas[i])
            z = (xn[j] - x) / sig
            total += float((0.5 * (sig * module(xn[j], i) + z).pow(2).sum(1)).sum())
    expected = -(90 / 30) * total / 2
    site = model.nodes["score_matching"]
    elbo = float((site["fn"].log_prob(site["value"]) * site["scale"]).sum().detach())
    assert elbo == pytest.approx(expected, rel=1e-5)


@pytest.mark.parametrize(
    "sde_name,weighting", [("vp", "sigma2"), ("ve", "likelihood"), ("subvp", "likelihood")]
)
def test_sde_program_elbo_is_minus_the_weighted_dsm_loss(sde_name, weighting):
    """Per row: -lambda(t) 0.5 ||s(x_t, t) + z / std(t)||^2, lambda = std^2 or g^2, with t and
    x_t from the guide; the t and x_t sites cancel exactly (KL 0)."""
    import pyro
    import torch

    from probdiff.data import load_dataset
    from probdiff.models.score.sde_family import SDEFamily

    opts = {"sde": sde_name, "weighting": weighting, "hidden": "16"}
    if sde_name == "ve":
        opts["sigma_max"] = 5.0
    family = SDEFamily(SDEFamily.default_options(**opts), load_dataset("mixture2d:n=100"))
    module = family.score_module(seed=1)
    program = family.loss_program(module)
    x = torch.randn(40, 2, generator=torch.Generator().manual_seed(0))
    pyro.set_rng_seed(3)
    guide, model = replayed(program, x)
    assert_kl_zero(guide, model, ["t", "x_t"])
    t, xt = guide.nodes["t"]["value"], guide.nodes["x_t"]["value"]
    sde = family.sde
    with torch.no_grad():
        a, std = sde.marginal(t)
        z = (xt - a[:, None] * x) / std[:, None]
        lam = std**2 if weighting == "sigma2" else sde.diffusion(t) ** 2
        expected = -lam * 0.5 * (module(xt, t) + z / std[:, None]).pow(2).sum(1)
    site = model.nodes["score_matching"]
    got = site["fn"].log_prob(site["value"]) * site["scale"]
    assert torch.allclose(got, expected, rtol=1e-4, atol=1e-6)


def test_ncsn_sigma_max_defaults_to_the_largest_distance_between_training_points():
    from scipy.spatial.distance import pdist

    from probdiff.data import load_dataset
    from probdiff.models.score.ncsn_family import NCSNFamily

    data = load_dataset("mixture2d:n=300")
    family = NCSNFamily(NCSNFamily.default_options(), data)
    assert family.options["sigma_max"] == pytest.approx(pdist(data.x).max(), rel=1e-9)
    assert float(family.sigmas[0]) == pytest.approx(pdist(data.x).max(), rel=1e-9)


def test_ncsn_sample_and_evaluate(ncsn_run, capsys):
    code, _, err = run_cli(
        capsys, "sample", str(ncsn_run), "-n", "25", "--sampler", "annealed_langevin:5"
    )
    assert code == 0, err
    x = np.load(ncsn_run / "samples" / "annealed_langevin_5-seed0-n25.npz")["x"]
    assert x.shape == (25, 2) and np.isfinite(x).all()
    before = metrics(ncsn_run)["test_loss"]
    code, _, err = run_cli(capsys, "evaluate", str(ncsn_run), "--json")
    assert code == 0, err
    assert metrics(ncsn_run)["test_loss"] == pytest.approx(before)  # same seed, same draws


def test_sde_fit_writes_the_likelihood_table(sde_run, capsys):
    """The true log-likelihood is SciPy's density of mixture2d on the ODE's held-out rows."""
    m = metrics(sde_run)
    for key in (
        "loss",
        "test_loss",
        "test_ode_log_likelihood",
        "test_ode_log_likelihood_stderr",
        "ode_bits_per_dim",
        "ode_nfe",
        "test_true_log_likelihood",
        "test_sliced_wasserstein_ode",
        "test_sliced_wasserstein_em_200",
    ):
        assert key in m, key
    x = held_out(sde_run)[:500]  # --ode-rows: 500 by default
    assert m["test_true_log_likelihood"] == pytest.approx(mixture2d_log_density(x).mean(), 1e-9)
    assert m["ode_trace"] == "exact"
    assert (sde_run / "samples_by_solver.png").is_file()
    code, out, err = run_cli(capsys, "report", str(sde_run))
    assert code == 0, err
    assert "probability-flow ODE" in out and "true density" in out


def test_sde_zero_score_loss_and_likelihood(zero_sde_run):
    """s = 0 under the VP SDE (beta 0.1..20) with lambda = std^2: each row's loss is
    0.5 ||z||^2, so test_loss = D / 2 = 1 within 4 standard errors; the flow likelihood is
    N(0, exp(B(1) - B(1e-5)) I) on the held-out rows, and bits/dim its -log2 per coordinate,
    to 1e-3 (RK45 at rtol = atol = 1e-5 on a smooth linear ODE; a wrong dimension, log base or
    sign is off by 30% or more)."""
    m = metrics(zero_sde_run)
    assert abs(m["test_loss"] - 1.0) < Z * m["test_loss_stderr"], m
    x = held_out(zero_sde_run)[:500]
    ode = zero_score_flow_log_density(x, vp_integral(1.0) - vp_integral(ODE_EPS))
    assert m["test_ode_log_likelihood"] == pytest.approx(ode.mean(), rel=1e-3)
    assert m["ode_bits_per_dim"] == pytest.approx(-ode.mean() / (2 * math.log(2)), rel=1e-3)


def zero_score_sample_variance(sampler):
    """Variance per coordinate of each solver's output when s = 0 under the VP SDE, from the
    solvers' definitions (N steps of dt = (1 - eps) / N at t_i = 1 - i dt, x_1 ~ N(0, I), no
    noise on the last step); every step is x <- c_i x + sqrt(q_i) z, so v <- c_i^2 v + q_i:
    Euler-Maruyama on the reverse SDE c = 1 + beta(t) dt / 2, q = beta(t) dt; reverse diffusion
    (the VP chain's own step, alpha = exp(-(B(t) - B(t - dt)))) c = 2 - sqrt(alpha),
    q = 1 - alpha; the flow ODE dx/dt = -beta x / 2 by Euler (c as EM, q = 0), by Heun (the
    trapezoid of the two slopes; Euler on the last step), and exactly (RK45)."""
    name, _, steps = sampler.partition(":")
    if name == "ode":
        return math.exp(vp_integral(1.0) - vp_integral(SAMPLE_EPS))
    n = int(steps)
    dt = (1 - SAMPLE_EPS) / n
    v = 1.0
    for i in range(n):
        t = 1 - i * dt
        beta, beta_next = 0.1 + 19.9 * t, 0.1 + 19.9 * (t - dt)
        last = i == n - 1
        if name == "em":
            c, q = 1 + beta * dt / 2, beta * dt
        elif name == "reverse_diffusion":
            alpha = math.exp(-(vp_integral(t) - vp_integral(t - dt)))
            c, q = 2 - math.sqrt(alpha), 1 - alpha
        elif name == "ode_euler" or (name == "ode_heun" and last):
            c, q = 1 + beta * dt / 2, 0.0
        else:  # heun
            c, q = 1 + dt / 2 * (beta / 2 + beta_next / 2 * (1 + beta * dt / 2)), 0.0
        v = c * c * v + (0.0 if last else q)
    return v


@pytest.mark.parametrize("sampler", SOLVERS)
def test_sde_samples_by_every_solver(sde_run, zero_sde_run, capsys, sampler):
    """On the zero-score copy each solver's draws are N(0, v I) with v from
    ``zero_score_sample_variance``: the mean and variance of 50 000 draws per coordinate within
    4 standard errors (sqrt(v / n), v sqrt(2 / n): 2.5% of v, while one step fewer changes v
    by 4-10%, and the continuous-time value differs from these step counts by 30% or more).
    The predictor-corrector sets its Langevin
    step from ||z|| / ||s||, infinite for s = 0, so it runs on the trained run (finite draws
    in data units)."""
    if sampler.startswith("pc"):
        code, _, err = run_cli(capsys, "sample", str(sde_run), "-n", "20", "--sampler", sampler)
        assert code == 0, err
        x = np.load(sde_run / "samples" / f"{samples_name(sampler, 0, 20)}.npz")["x"]
        assert x.shape == (20, 2) and np.isfinite(x).all()
        return
    n = 50_000
    code, _, err = run_cli(capsys, "sample", str(zero_sde_run), "-n", str(n), "--sampler", sampler)
    assert code == 0, err
    x = np.load(zero_sde_run / "samples" / f"{samples_name(sampler, 0, n)}.npz")["x"]
    x = x.astype(float)
    assert x.shape == (n, 2)
    v = zero_score_sample_variance(sampler)
    assert np.all(np.abs(x.mean(0)) < Z * math.sqrt(v / n)), (x.mean(0), v)
    assert np.all(np.abs((x**2).mean(0) / v - 1) < Z * math.sqrt(2 / n)), ((x**2).mean(0), v)


def test_sde_evaluate_refreshes_the_ode_likelihood(sde_run, capsys):
    before = metrics(sde_run)["test_ode_log_likelihood"]
    code, _, err = run_cli(capsys, "evaluate", str(sde_run), "--json")
    assert code == 0, err
    after = metrics(sde_run)
    assert after["test_ode_log_likelihood"] == pytest.approx(before, rel=1e-6)


@pytest.mark.parametrize(
    "extra", [["--sde", "ve"], ["--sde", "subvp", "--weighting", "likelihood"]]
)
def test_other_sdes_train(tmp_path, extra):
    """On a zero-score copy the flow likelihood is known: VE has no drift, so x_1 = x_eps and
    the model is the prior N(0, sigma_max^2 I) (sigma_max the largest distance between
    training points); sub-VP's flow is VP's, N(0, exp(B(1) - B(eps)) I); to 1e-3 (RK45
    tolerance). VE's loss (lambda = std^2) is D / 2 = 1 within 4 standard errors; sub-VP's
    likelihood weighting g^2 / std^2 ~ 2 / t has no finite variance, so no check of its mean."""
    from scipy.spatial.distance import pdist

    from probdiff import open_run

    out = tmp_path / "run"
    assert (
        main(
            [
                "fit",
                "sde",
                "--data",
                "mixture2d:n=300",
                "--out",
                str(out),
                *TINY,
                "--steps",
                "60",
                "--ode-rows",
                "20",
                *extra,
            ]
        )
        == 0
    )
    zero = zeroed_copy(out, tmp_path / "zero")
    assert main(["evaluate", str(zero)]) == 0
    m = metrics(zero)
    x = held_out(zero)[:20]
    if extra[1] == "ve":
        sigma_max = pdist(open_run(zero).split()[0].flat()).max()
        ode = norm.logpdf(x, 0.0, sigma_max).sum(1)
        assert abs(m["test_loss"] - 1.0) < Z * m["test_loss_stderr"], m
    else:
        ode = zero_score_flow_log_density(x, vp_integral(1.0) - vp_integral(ODE_EPS))
    assert m["test_ode_log_likelihood"] == pytest.approx(ode.mean(), rel=1e-3)
    assert m["ode_bits_per_dim"] == pytest.approx(-ode.mean() / (2 * math.log(2)), rel=1e-3)


def test_integer_images_get_a_dequantised_mass(tmp_path):
    """Digits in [-1, 1]: the ODE value is a lower bound on the log mass of each datum's bin
    (no Jacobian), checked on a zero-score copy; samples are integers 0..16."""
    out = tmp_path / "digits"
    assert (
        main(
            [
                "fit",
                "sde",
                "--data",
                "digits:n=100",
                "--out",
                str(out),
                *TINY,
                "--steps",
                "30",
                "--net",
                "mlp",
                "--ode-rows",
                "4",
            ]
        )
        == 0
    )
    m = metrics(out)
    assert m["ode_trace"] == "hutchinson"
    # on a zero-score copy the flow maps x_eps ~ N(0, exp(dB) I) (Hutchinson's trace is exact
    # for this isotropic linear field); dequantised by bins of width w = 2 / 16 in model units
    # (v / 8 - 1), the value is log N(x + w u; 0, exp(dB) I) + 64 log w, u in the bin moving it
    # by < 1e-3 nat; to 1e-3 (RK45 tolerance)
    zero = zeroed_copy(out, tmp_path / "zero")
    assert main(["evaluate", str(zero)]) == 0
    mz = metrics(zero)
    x = held_out(zero)[:4] / 8.0 - 1.0
    delta_b = vp_integral(1.0) - vp_integral(ODE_EPS)
    ode = zero_score_flow_log_density(x, delta_b) + 64 * math.log(2 / 16)
    assert mz["test_ode_log_likelihood"] == pytest.approx(ode.mean(), rel=1e-3)
    assert mz["ode_bits_per_dim"] == pytest.approx(-ode.mean() / (64 * math.log(2)), rel=1e-3)
    assert main(["sample", str(out), "-n", "3", "--sampler", "em:10"]) == 0
    x = np.load(out / "samples" / "em_10-seed0-n3.npz")["x"]
    assert (
        x.shape == (3, 1, 8, 8) and np.array_equal(x, np.round(x)) and 0 <= x.min() <= x.max() <= 16
    )


@pytest.mark.parametrize(
    "model,args,message",
    [
        ("ncsn", ["--levels", "1"], "--levels must be >= 2"),
        ("ncsn", ["--sigma-min", "5", "--sigma-max", "1"], "--sigma-min < --sigma-max"),
        ("ncsn", ["--subsample", "0"], "--subsample must be in 1..10"),
        ("ncsn", ["--backend", "numpyro"], "has no numpyro backend"),
        ("sde", ["--eps", "0.5"], "--eps must be in"),
        ("sde", ["--sde", "ve", "--sigma-min", "100"], "sigma_min < sigma_max"),
        ("sde", ["--sde", "ve", "--beta-max", "10"], "--beta-max do not apply to --sde ve"),
        ("sde", ["--sigma-min", "0.1"], "--sigma-min do not apply to --sde vp"),
        ("sde", ["--ode-rows", "-1"], "--ode-rows must be >= 0"),
        ("sde", ["--net", "unet"], "--net unet needs image data"),
    ],
)
def test_bad_options_one_line(tmp_path, capsys, model, args, message):
    out = tmp_path / "run"
    code, _, err = run_cli(
        capsys,
        "fit",
        model,
        "--data",
        "mixture2d:n=100",
        "--out",
        str(out),
        "--steps",
        "2",
        "--quiet",
        *args,
    )
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1, err
    assert not out.exists()


@pytest.mark.parametrize(
    "run_name,sampler",
    [("sde_run", "pc:x"), ("sde_run", "heun"), ("sde_run", "ode:50"), ("ncsn_run", "ode")],
)
def test_bad_sampler(request, capsys, run_name, sampler):
    run = request.getfixturevalue(run_name)
    before = (run / "metrics.json").read_bytes()
    code, _, err = run_cli(capsys, "sample", str(run), "-n", "5", "--sampler", sampler)
    assert code == 2 and "--sampler" in err
    assert (run / "metrics.json").read_bytes() == before


@pytest.mark.slow
def test_trained_sde_likelihood_and_samples(tmp_path):
    """A VP score model trained on mixture2d: its flow ODE is a normalised density, so on
    held-out data E log q <= E log p (Gibbs, p by SciPy), checked per row, paired: the mean of
    log p - log q above -4 standard errors of the row differences; ODE-Heun samples are within
    twice the train-to-test sliced Wasserstein floor."""
    import torch

    from probdiff import open_run
    from probdiff.diffusion.ode_likelihood import ode_log_likelihood

    out = tmp_path / "sde"
    assert (
        main(
            [
                "fit",
                "sde",
                "--data",
                "mixture2d:n=2000",
                "--out",
                str(out),
                "--steps",
                "4000",
                "--batch-size",
                "256",
                "--quiet",
            ]
        )
        == 0
    )
    m = metrics(out)
    assert m["test_sliced_wasserstein"] < 2 * m["sliced_wasserstein_train_test"]
    run = open_run(out)
    family = run.family
    _, test = run.split()
    x = family.prepare(test)
    with torch.no_grad():
        ode = ode_log_likelihood(
            family.sde, family.fitted_score(run.params), torch.as_tensor(x, dtype=torch.float32)
        ).log_prob.numpy()
    diff = mixture2d_log_density(x) - ode
    se = diff.std(ddof=1) / math.sqrt(len(diff))
    assert diff.mean() > -Z * se, (diff.mean(), se)
