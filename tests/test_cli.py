"""The command line and run-folder contracts of DESIGN.md."""

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from helpers import cli as run_cli

from probdiff.cli import main

FAST = ["--steps", "30", "--quiet", "--posterior-samples", "10"]


def snapshot(folder: Path) -> dict:
    """SHA-256 of every file under ``folder`` (sub-folders such as samples/ included)."""
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "gmm"
    assert main(["fit", "gmm", "--data", "mixture2d:n=300", "--out", str(out), *FAST]) == 0
    return out


def test_metrics_json_has_the_contract_keys(finished_run):
    m = json.loads((finished_run / "metrics.json").read_text())
    for key in ("elbo", "log_likelihood", "steps", "seconds", "backend", "device", "test_elbo"):
        assert key in m, key
    assert m["steps"] == 30 and m["backend"] == "pyro" and m["device"] == "cpu"
    config = json.loads((finished_run / "config.json").read_text())
    assert config["status"] == "complete" and config["request"]["settings"]["seed"] == 0
    assert {"torch", "pyro-ppl", "numpyro", "jax", "arviz"} <= set(config["versions"])
    for name in ("checkpoint", "inference_data.nc", "params.npz", "elbo_trace.png", "mixture.png"):
        assert (finished_run / name).is_file(), name


def test_inference_data_holds_guide_draws_elbo_trace_and_data(finished_run):
    import arviz as az

    idata = az.from_netcdf(finished_run / "inference_data.nc")
    assert idata.sample_stats["elbo"].shape == (1, 30)
    assert idata.sample_stats["elbo"].attrs["units"] == "nats per datum"
    # maximum likelihood: the globals are point estimates, kept once; the assignments are draws
    # from their exact posterior given them
    assert idata.point_estimate["locs"].shape == (3, 2) and "locs" not in idata.posterior
    assert idata.posterior["assignment"].shape == (1, 10, 240)
    assert idata.observed_data["obs"].shape == (240, 2)


def test_report_sample_and_evaluate(finished_run, capsys):
    code, out, _ = run_cli(capsys, "report", str(finished_run))
    assert code == 0 and "point estimates" in out and "elbo_trace.png" in out
    code, out, _ = run_cli(capsys, "sample", str(finished_run), "-n", "50")
    assert code == 0
    drawn = np.load(finished_run / "samples" / "default-seed0-n50.npz")
    assert drawn["x"].shape == (50, 2)
    assert (str(drawn["sampler"]), int(drawn["seed"]), int(drawn["n"])) == ("default", 0, 50)
    # the same draw again is refused (it would be the same samples), nothing replaced
    before = (finished_run / "samples" / "default-seed0-n50.npz").read_bytes()
    code, _, err = run_cli(capsys, "sample", str(finished_run), "-n", "50")
    assert code == 2 and "exists" in err and len(err.strip().splitlines()) == 1
    assert (finished_run / "samples" / "default-seed0-n50.npz").read_bytes() == before
    code, _, err = run_cli(capsys, "sample", str(finished_run), "-n", "50", "--seed", "1")
    assert code == 0, err
    other = np.load(finished_run / "samples" / "default-seed1-n50.npz")["x"]
    assert not np.array_equal(other, drawn["x"])
    fitted = json.loads((finished_run / "metrics.json").read_text())
    code, out, _ = run_cli(capsys, "evaluate", str(finished_run), "--json")
    metrics = json.loads(out)
    assert code == 0
    # evaluating the held-out split again reproduces the fit's own held-out figures
    for key in ("test_elbo", "test_log_likelihood", "test_true_log_likelihood"):
        assert metrics[key] == pytest.approx(fitted[key], rel=1e-6), key
    after = json.loads((finished_run / "metrics.json").read_text())
    assert after["true_log_likelihood"] == fitted["true_log_likelihood"]


@pytest.mark.parametrize("backend", ["pyro", "numpyro"])
def test_bayesian_ordered_map_fit_and_zero_steps(tmp_path, backend, capsys):
    """The ordered MAP guide (sites locs_first/locs_rest) yields ``locs`` draws; --steps 0
    evaluates the initial point; neither leaves a traceback."""
    import arviz as az

    out = tmp_path / "ordered"
    code, _, err = run_cli(
        capsys,
        "fit",
        "gmm",
        "--data",
        "mixture2d:n=200",
        "--out",
        str(out),
        "--prior",
        "--ordered",
        "--backend",
        backend,
        *FAST,
    )
    assert code == 0, err
    locs = az.from_netcdf(out / "inference_data.nc").point_estimate["locs"].values  # MAP
    assert locs.shape == (3, 2) and np.all(np.diff(locs[:, 0]) > 0)
    code, _, err = run_cli(
        capsys,
        "fit",
        "gmm",
        "--data",
        "mixture2d:n=200",
        "--out",
        str(tmp_path / "zero"),
        "--backend",
        backend,
        "--quiet",
        "--steps",
        "0",
        "--prior",
        "--globals",
        "meanfield",
    )
    assert code == 0, err


def bad_inputs(tmp_path):
    nan = tmp_path / "nan.npz"
    np.savez(nan, x=np.array([[0.0, 1.0], [np.nan, 2.0], [1.0, 1.0]]))
    one_d = tmp_path / "oned.npy"
    np.save(one_d, np.arange(5.0))
    tiny = tmp_path / "tiny.npy"
    np.save(tiny, np.zeros((2, 2)))
    return [
        (["--data", str(tmp_path / "missing.npz")], "no such data file"),
        (["--data", str(nan)], "NaN"),
        (["--data", str(one_d)], "2-D"),
        (
            ["--data", str(tiny), "--components", "3", "--test-fraction", "0"],
            "larger than the data",
        ),
        (["--data", "mixture2d", "--steps", "-5"], "--steps: must be in 0..1000000000, got -5"),
        (["--data", "mixture2d", "--backend", "stan"], "--backend: invalid choice: 'stan'"),
        (["--data", "mixture2d", "--inference", "hmc"], "--inference"),
        (["--data", "mixture2d", "--globals", "map"], "needs --prior"),
        (["--data", "mixture2d", "--inference", "em", "--prior"], "maximum likelihood"),
        (["--data", "mixture2d", "--inference", "nuts", "--prior"], "--backend numpyro"),
        (["--data", "mixture2d", "--ordered"], "add --prior"),
        (["--data", "mixture2d:n=10", "--test-fraction", "0.9"], "training split"),
        (["--data", "mixture2d", "--lr", "1e30"], "lower --lr"),
    ]


def test_bad_input_one_line_error_and_existing_run_untouched(finished_run, tmp_path, capsys):
    before = snapshot(finished_run)
    for extra, message in bad_inputs(tmp_path):
        for out in (tmp_path / "fresh", finished_run):
            code, _, err = run_cli(capsys, "fit", "gmm", "--out", str(out), *FAST, *extra)
            assert code == 2, extra
            assert err.startswith("probdiff: error:") and err.count("\n") == 1, err
            # into a new folder the message names the problem; into a finished run, either the
            # problem or the refusal to reuse the folder
            assert message in err or (out == finished_run and "already holds" in err), err
            assert not (tmp_path / "fresh").exists()
    assert snapshot(finished_run) == before


def test_existing_run_is_never_overwritten(finished_run, capsys):
    before = snapshot(finished_run)
    code, _, err = run_cli(
        capsys, "fit", "gmm", "--data", "mixture2d", "--out", str(finished_run), *FAST
    )
    assert code == 2 and "already holds" in err
    assert snapshot(finished_run) == before


def test_evaluate_rejects_data_of_another_dimension(finished_run, tmp_path, capsys):
    other = tmp_path / "three.npy"
    np.save(other, np.zeros((10, 3)))
    before = snapshot(finished_run)
    code, _, err = run_cli(capsys, "evaluate", str(finished_run), "--data", str(other))
    assert code == 2 and "shape (3,)" in err and "(2,)" in err
    assert snapshot(finished_run) == before


def test_no_traceback_from_the_real_command(tmp_path):
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "probdiff",
            "fit",
            "gmm",
            "--data",
            str(tmp_path / "nope.csv"),
            "--out",
            str(tmp_path / "r"),
        ],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 2
    assert proc.stderr.strip().startswith("probdiff: error: no such data file")
    assert "Traceback" not in proc.stderr


def test_interrupted_fit_resumes_to_the_same_result(tmp_path):
    """A fit stopped after a checkpoint and resumed gives the uninterrupted fit's ELBO traces,
    the held-out one included."""
    from probdiff.backends import get_backend
    from probdiff.data import load_dataset
    from probdiff.models.gmm.family import GMMFamily
    from probdiff.request import make_family
    from probdiff.svi import SVISettings, run_svi

    data = load_dataset("mixture2d:n=200")
    family = make_family("gmm", GMMFamily.default_options(), data)
    x, x_test = data.flat()[:150], data.flat()[150:]
    settings = SVISettings(
        steps=60,
        lr=0.05,
        batch_size=64,
        restarts=2,
        checkpoint_every=20,
        progress=False,
        eval_every=7,
    )
    make = lambda s: family.program("pyro", x, s)  # noqa: E731
    full = run_svi(get_backend("pyro"), make, x, settings, x_test=x_test)

    saved = []

    class Stop(Exception):
        pass

    def save(state):
        import pickle

        saved.append(pickle.loads(pickle.dumps(state)))
        if len(saved) == 5:  # restart 2, after 20 steps
            raise Stop

    with pytest.raises(Stop):
        run_svi(get_backend("pyro"), make, x, settings, save=save, x_test=x_test)
    resumed = run_svi(get_backend("pyro"), make, x, settings, resume=saved[-1], x_test=x_test)
    for a, b in zip(full.traces, resumed.traces):
        np.testing.assert_allclose(a, b, rtol=1e-6)
    for a, b in zip(full.test_traces, resumed.test_traces):
        assert a[:, 0].tolist() == [7, 14, 21, 28, 35, 42, 49, 56, 60]
        np.testing.assert_allclose(a, b, rtol=1e-6)
    assert resumed.best == full.best


@pytest.mark.parametrize("backend", ["pyro", "numpyro"])
def test_held_out_evaluation_leaves_training_unchanged(backend):
    """Evaluating the held-out ELBO during training draws its own random numbers: the training
    trace is the same with and without it."""
    from probdiff.backends import get_backend
    from probdiff.data import load_dataset
    from probdiff.models.vae.family import VAEFamily
    from probdiff.request import make_family
    from probdiff.svi import SVISettings, run_svi

    data = load_dataset("digits:n=300")
    family = make_family("vae", VAEFamily.default_options(hidden="16"), data)
    x = family.prepare(data)
    make = lambda s: family.program(backend, x[:200], s)  # noqa: E731
    traces = []
    for every in (0, 5):
        settings = SVISettings(steps=30, lr=0.01, batch_size=50, progress=False, eval_every=every)
        result = run_svi(get_backend(backend), make, x[:200], settings, x_test=x[200:])
        traces.append(result.traces[0])
        assert len(result.test_traces[0]) == (0 if every == 0 else 6)
    np.testing.assert_array_equal(traces[0], traces[1])


def test_resume_with_more_steps_extends_the_trace(tmp_path, capsys):
    out = tmp_path / "run"
    assert (
        main(
            [
                "fit",
                "gmm",
                "--data",
                "mixture2d:n=200",
                "--out",
                str(out),
                "--steps",
                "20",
                "--quiet",
                "--posterior-samples",
                "5",
            ]
        )
        == 0
    )
    code, _, _ = run_cli(
        capsys, "fit", "gmm", "--out", str(out), "--resume", "--steps", "40", "--quiet"
    )
    assert code == 0
    import arviz as az

    assert az.from_netcdf(out / "inference_data.nc").sample_stats["elbo"].shape == (1, 40)
    assert json.loads((out / "metrics.json").read_text())["steps"] == 40


def test_posterior_holds_latent_sites_only(tmp_path, capsys):
    """No plate indices (the encoder guide's data plate) among the posterior's variables."""
    import arviz as az

    out = tmp_path / "encoder"
    code, _, err = run_cli(
        capsys,
        "fit",
        "gmm",
        "--data",
        "mixture2d:n=200",
        "--out",
        str(out),
        "--assignment",
        "encoder",
        *FAST,
    )
    assert code == 0, err
    idata = az.from_netcdf(out / "inference_data.nc")
    assert set(idata.posterior.data_vars) == {"assignment"}
    assert set(idata.point_estimate.data_vars) == {"weights", "locs", "scales"}


def test_missing_extras_name_the_install_command(monkeypatch, tmp_path, capsys):
    """A Pyro-only install: the NumPyro backend and the patches data set say which extra to
    install, in one line, and leave no folder behind."""
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "flax" else real(name, *a)
    )
    out = tmp_path / "np"
    code, _, err = run_cli(
        capsys, "fit", "gmm", "--data", "mixture2d:n=50", "--backend", "numpyro", "--out", str(out)
    )
    assert code == 2 and "pip install 'probdiff[numpyro]'" in err and "flax" in err
    assert len(err.strip().splitlines()) == 1 and not out.exists()


def test_version(capsys):
    from probdiff import __version__

    code, out, _ = run_cli(capsys, "--version")
    assert code == 0 and out.strip() == f"probdiff {__version__}"
    from importlib import metadata

    assert metadata.version("probdiff") == __version__  # one source: pyproject reads it
