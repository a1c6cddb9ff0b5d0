"""``probdiff fit ddpm`` end to end: metrics, figures, sampling, evaluation, bad input."""

import json

import numpy as np
import pytest

from probdiff.cli import main


def run_cli(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


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


def test_fit_writes_the_bound_and_sample_quality(ddpm_run):
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
    assert m["bits_per_dim"] == pytest.approx(-m["test_elbo"] / (2 * np.log(2)))
    assert m["ode_bits_per_dim"] == pytest.approx(-m["test_ode_log_likelihood"] / (2 * np.log(2)))
    # a bound: never above the true held-out log-likelihood beyond Monte Carlo error
    assert m["test_true_minus_elbo"] > -3 * m["test_elbo_stderr"]
    for name in ("elbo_trace.png", "trajectories.png", "samples_vs_data.png"):
        assert (ddpm_run / name).is_file(), name
    import arviz as az

    stats = az.from_netcdf(ddpm_run / "inference_data.nc").sample_stats
    assert stats["elbo"].shape == (1, 60) and stats["test_elbo"].shape[1] >= 2


def test_sample_and_evaluate(ddpm_run, capsys):
    for sampler in ("ancestral", "ddim:5"):
        code, _, err = run_cli(capsys, "sample", str(ddpm_run), "-n", "30", "--sampler", sampler)
        assert code == 0, err
        x = np.load(ddpm_run / "samples.npz")["x"]
        assert x.shape == (30, 2) and np.isfinite(x).all()
    code, out, err = run_cli(capsys, "evaluate", str(ddpm_run), "--json")
    assert code == 0, err
    m = json.loads((ddpm_run / "metrics.json").read_text())
    assert m["bits_per_dim"] == pytest.approx(m["test_bits_per_dim"])


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
    assert np.isfinite(json.loads((out / "metrics.json").read_text())["test_elbo"])


def test_integer_images_use_the_discretised_decoder(tmp_path):
    """Digits: a mass on the 17 levels, so the bound is negative and bits/dim at most
    log2(17) = 4.09 plus what the model wastes; samples are integers 0..16."""
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
    m = json.loads((out / "metrics.json").read_text())
    config = json.loads((out / "config.json").read_text())
    assert config["request"]["options"]["decoder"] == "auto" and m["test_elbo"] < 0
    params = np.load(out / "params.npz")
    assert any(".down.0.conv1.weight" in k for k in params.files)  # the U-Net by default
    assert main(["sample", str(out), "-n", "4"]) == 0
    x = np.load(out / "samples.npz")["x"]
    assert x.shape == (4, 1, 8, 8) and np.array_equal(x, np.round(x)) and x.max() <= 16


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
    the true held-out log-likelihood (never above it beyond 3 standard errors), the report
    prints the gap, and samples are about as close to held-out data as training data are
    (sliced Wasserstein within twice the train-to-held-out distance)."""
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
    assert m["test_true_minus_elbo"] > -3 * m["test_elbo_stderr"]
    assert m["test_sliced_wasserstein"] < 2 * m["sliced_wasserstein_train_test"]
    capsys.readouterr()
    assert main(["report", str(out)]) == 0
    assert "test_true_minus_elbo" in capsys.readouterr().out


@pytest.mark.parametrize("size,mode,channels", [((28, 28), "L", "4,8,8"), ((32, 32), "RGB", "4,8")])
def test_png_folders_fit_and_sample(tmp_path, size, mode, channels):
    """28x28 grey and 32x32 colour PNG folders: the U-Net (3 and 2 levels), the discretised
    decoder on 256 levels (a negative bound), integer samples of the folder's shape."""
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
    m = json.loads((out / "metrics.json").read_text())
    assert m["test_elbo"] < 0 and np.isfinite(m["bits_per_dim"])
    assert main(["sample", str(out), "-n", "2"]) == 0
    x = np.load(out / "samples.npz")["x"]
    c = 3 if mode == "RGB" else 1
    assert x.shape == (2, c, *size) and x.min() >= 0 and x.max() <= 255


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
