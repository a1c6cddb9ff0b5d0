"""``probdiff fit ncsn`` and ``probdiff fit sde`` end to end: metrics, figures, sampling by
every solver, evaluation, the likelihood table, bad input."""

import json
import math

import numpy as np
import pytest

from probdiff.cli import main


def run_cli(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


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
        assert key in m and np.isfinite(m[key]), key
    assert m["test_explicit_loss"] >= 0 and m["test_loss_stderr"] > 0
    for name in ("elbo_trace.png", "langevin_trajectories.png", "samples_vs_data.png"):
        assert (ncsn_run / name).is_file(), name
    code, out, err = run_cli(capsys, "report", str(ncsn_run))
    assert code == 0 and "test_loss" in out, err


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
    x = np.load(ncsn_run / "samples.npz")["x"]
    assert x.shape == (25, 2) and np.isfinite(x).all()
    before = metrics(ncsn_run)["test_loss"]
    code, _, err = run_cli(capsys, "evaluate", str(ncsn_run), "--json")
    assert code == 0, err
    assert metrics(ncsn_run)["test_loss"] == pytest.approx(before)  # same seed, same draws


def test_sde_fit_writes_the_likelihood_table(sde_run, capsys):
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
    assert m["ode_bits_per_dim"] == pytest.approx(-m["test_ode_log_likelihood"] / (2 * math.log(2)))
    assert m["ode_trace"] == "exact"
    assert (sde_run / "samples_by_solver.png").is_file()
    code, out, err = run_cli(capsys, "report", str(sde_run))
    assert code == 0, err
    assert "probability-flow ODE" in out and "true density" in out


@pytest.mark.parametrize("sampler", SOLVERS)
def test_sde_samples_by_every_solver(sde_run, capsys, sampler):
    code, _, err = run_cli(capsys, "sample", str(sde_run), "-n", "20", "--sampler", sampler)
    assert code == 0, err
    x = np.load(sde_run / "samples.npz")["x"]
    assert x.shape == (20, 2) and np.isfinite(x).all()


def test_sde_evaluate_refreshes_the_ode_likelihood(sde_run, capsys):
    before = metrics(sde_run)["test_ode_log_likelihood"]
    code, _, err = run_cli(capsys, "evaluate", str(sde_run), "--json")
    assert code == 0, err
    after = metrics(sde_run)
    assert after["test_ode_log_likelihood"] == pytest.approx(before, rel=1e-6)
    assert after["ode_bits_per_dim"] == pytest.approx(-before / (2 * math.log(2)), rel=1e-6)


@pytest.mark.parametrize(
    "extra", [["--sde", "ve"], ["--sde", "subvp", "--weighting", "likelihood"]]
)
def test_other_sdes_train(tmp_path, extra):
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
    m = metrics(out)
    assert np.isfinite(m["test_loss"]) and np.isfinite(m["test_ode_log_likelihood"])


def test_integer_images_get_a_dequantised_mass(tmp_path):
    """Digits in [-1, 1]: the ODE value is a lower bound on the log mass of each datum's bin
    (no Jacobian), samples are integers 0..16."""
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
    assert m["ode_bits_per_dim"] == pytest.approx(
        -m["test_ode_log_likelihood"] / (64 * math.log(2))
    )
    assert main(["sample", str(out), "-n", "3", "--sampler", "em:10"]) == 0
    x = np.load(out / "samples.npz")["x"]
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
    held-out data E log q <= E log p (Gibbs), checked per row, paired, within 3 s.e.;
    ODE-Heun samples are within twice the train-to-test sliced Wasserstein floor."""
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
    family, data = run.family, run.dataset
    _, test = run.split()
    x = family.prepare(test)
    with torch.no_grad():
        ode = ode_log_likelihood(
            family.sde, family.fitted_score(run.params), torch.as_tensor(x, dtype=torch.float32)
        ).log_prob.numpy()
    diff = data.log_prob(x) - ode
    se = diff.std(ddof=1) / math.sqrt(len(diff))
    assert diff.mean() > -3 * se, (diff.mean(), se)
