"""The VAE (docs/equations.md 1.13-1.17) against closed forms: probabilistic PCA, and the KL in closed form."""

import json

import numpy as np
import pytest

from probdiff.cli import main


def ppca_max_log_likelihood(x: np.ndarray, latent_dim: int) -> float:
    """Tipping and Bishop (1999): the maximised PPCA log-likelihood per datum.

    S = sample covariance with eigenvalues l_1 >= ... >= l_D; sigma^2 = mean(l_{L+1..D});
    C = U_L (Lambda_L - sigma^2 I) U_L^T + sigma^2 I;
    log p(x) = -(D log 2 pi + log|C| + tr(C^-1 S)) / 2 per datum.
    """
    s = np.cov(x.T, bias=True)
    lam, u = np.linalg.eigh(s)
    lam, u = lam[::-1], u[:, ::-1]
    s2 = lam[latent_dim:].mean()
    c = u[:, :latent_dim] @ np.diag(lam[:latent_dim] - s2) @ u[:, :latent_dim].T + s2 * np.eye(
        len(s)
    )
    return float(
        -0.5
        * (len(s) * np.log(2 * np.pi) + np.linalg.slogdet(c)[1] + np.trace(np.linalg.solve(c, s)))
    )


@pytest.fixture(scope="module")
def ppca_data(tmp_path_factory):
    rng = np.random.default_rng(0)
    w = rng.normal(size=(5, 2))
    x = rng.normal(size=(2000, 2)) @ w.T + 0.5 * rng.normal(size=(2000, 5)) + 1.0
    path = tmp_path_factory.mktemp("ppca") / "ppca.npz"
    np.savez(path, x=x)
    return path, x


def test_linear_vae_reaches_the_ppca_maximum_likelihood(ppca_data, tmp_path):
    """A linear-decoder VAE is PPCA: its fitted ELBO per datum reaches the closed-form maximum
    log-likelihood within 1% and never exceeds it beyond 3 Monte Carlo standard errors."""
    path, x = ppca_data
    out = tmp_path / "vae"
    assert (
        main(
            [
                "fit",
                "vae",
                "--data",
                str(path),
                "--out",
                str(out),
                "--hidden",
                "linear",
                "--steps",
                "3000",
                "--lr",
                "0.02",
                "--quiet",
                "--test-fraction",
                "0",
            ]
        )
        == 0
    )
    m = json.loads((out / "metrics.json").read_text())
    best = ppca_max_log_likelihood(x, 2)
    assert m["elbo"] <= best + 3 * m["elbo_stderr"]
    assert m["elbo"] == pytest.approx(best, rel=0.01)


def test_closed_form_kl_and_monte_carlo_elbo_agree(ppca_data):
    """TraceMeanField_ELBO (closed-form KL) and Trace_ELBO have the same expectation."""
    from probdiff.backends import get_backend
    from probdiff.data import load_dataset
    from probdiff.models.vae.family import VAEFamily
    from probdiff.request import make_family

    path, _ = ppca_data
    data = load_dataset(str(path))
    x = data.flat()[:300]
    values = {}
    for kl in ("closed", "mc"):
        family = make_family("vae", VAEFamily.default_options(kl=kl, hidden="16"), data)
        backend = get_backend("pyro", dtype="float64")
        program = family.program("pyro", x, seed=0, dtype="float64")
        arr = backend.array(x)
        backend.start(program, arr, lr=0.01, seed=0)  # same seed: the same network weights
        values[kl] = backend.elbo(program, arr, num_particles=50, repeats=20, seed=1)
    (a, ea), (b, eb) = values["closed"], values["mc"]
    assert abs(a - b) < 4 * np.hypot(ea, eb), (values, "means differ beyond 4 s.e.")
    assert ea < eb  # the closed-form KL removes that term's Monte Carlo noise


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--latent-dim", "0"], "--latent-dim must be >= 1"),
        (["--hidden", "12,x"], "--hidden must be"),
        (["--sigma-dec", "-1"], "--sigma-dec must be positive"),
    ],
)
def test_vae_bad_options(tmp_path, capsys, extra, message):
    code = main(["fit", "vae", "--data", "digits", "--out", str(tmp_path / "r"), "--quiet", *extra])
    err = capsys.readouterr().err
    assert code == 2 and message in err and err.count("\n") == 1
    assert not (tmp_path / "r").exists()


def paired(a: np.ndarray, b: np.ndarray) -> tuple[float, float]:
    """Mean and standard error of b - a over data points."""
    d = b - a
    return float(d.mean()), float(d.std(ddof=1) / np.sqrt(len(d)))


def test_elbo_below_iwae_and_iwae_increasing_in_k(tmp_path):
    """On a trained digits VAE: IWAE_1 is the ELBO (same expectation), and IWAE_1 < IWAE_10 <
    IWAE_100, each step beyond 3 standard errors of the paired per-datum differences."""
    from probdiff import open_run
    from probdiff.backends import get_backend
    from probdiff.diagnostics import iwae_bound

    out = tmp_path / "vae"
    assert (
        main(
            [
                "fit",
                "vae",
                "--data",
                "digits",
                "--out",
                str(out),
                "--steps",
                "800",
                "--quiet",
                "--iwae-k",
                "10",
                "--posterior-samples",
                "5",
            ]
        )
        == 0
    )
    m = json.loads((out / "metrics.json").read_text())
    assert {"elbo", "test_elbo", "iwae", "iwae_k"} <= set(m) and m["iwae_k"] == 10
    assert m["test_elbo"] <= m["iwae"] + 3 * np.hypot(m["test_elbo_stderr"], m["test_iwae_stderr"])

    run = open_run(out)
    _, test = run.split()
    family = run.family
    x = family.prepare(test)[:120]
    backend = get_backend("pyro")
    program = family.program("pyro", x, run.request.settings.seed)
    arr = backend.array(x)
    backend.start(program, arr, lr=1e-3, seed=0)
    backend.set_params(program, arr, run.params)
    lw = backend.local_log_weights(program, arr, num_samples=2000, seed=3)
    elbo_mean, elbo_err = backend.elbo(program, arr, num_particles=100, repeats=10, seed=4)
    bounds = {
        k: iwae_bound(lw[i * 600 : (i + 1) * 600] if k > 1 else lw[1800:], k)[0]
        for i, k in enumerate((1, 10, 100))
    }
    d, se = paired(np.zeros(len(x)), bounds[1])
    assert abs(d - elbo_mean / len(x)) < 4 * np.hypot(se, elbo_err / len(x))
    for lo, hi in ((1, 10), (10, 100)):
        d, se = paired(bounds[lo], bounds[hi])
        assert d > 3 * se, (lo, hi, d, se)
