"""The VAE on integer images: likelihoods, data units, PNG folders, conv nets, bad input.

Reported bounds are checked on copies of runs whose network weights are all 0: the decoder
then ignores z (logits 0, or a discretised N(0, 1) per pixel on [0, 1]), so log P(x) is known
exactly, the encoder is q(z | x) = N(0, s^2 I) with s = softplus(0) + 1e-5, the ELBO is
log P(x) - KL(q || p) exactly and the IWAE bound log P(x) + E log mean_k p(z_k) / q(z_k),
that expectation by Monte Carlo here."""

import json
import math
import shutil

import numpy as np
import pytest
from helpers import cli as run_cli
from PIL import Image
from scipy.special import log_ndtr, logsumexp
from scipy.stats import norm

from probdiff.cli import main
from probdiff.data import load_dataset

Z = 4.0  # Monte Carlo checks: within 4 standard errors


def metrics(folder):
    return json.loads((folder / "metrics.json").read_text())


FAST = ["--steps", "40", "--quiet", "--iwae-k", "3", "--posterior-samples", "3", "--hidden", "16"]


def zeroed_copy(run, folder):
    """A copy of the run folder with every parameter 0 (a learned decoder log-scale too)."""
    shutil.copytree(run, folder)
    params = dict(np.load(folder / "params.npz"))
    np.savez(folder / "params.npz", **{k: np.zeros_like(v) for k, v in params.items()})
    return folder


def discretised_log_mass(x, scale, levels):
    """log P(x) per row for N(0, scale^2) per pixel discretised on ``levels`` levels of
    [0, 1] (bins of half-width 1 / (2 (levels - 1)), the end bins open), by SciPy."""
    h = 0.5 / (levels - 1)
    hi = np.where(x >= 1 - 1e-9, np.inf, (x + h) / scale)
    lo = np.where(x <= 1e-9, -np.inf, (x - h) / scale)
    flip = lo + hi > 0
    a, b = np.where(flip, -hi, lo), np.where(flip, -lo, hi)
    return (log_ndtr(b) + np.log1p(-np.exp(log_ndtr(a) - log_ndtr(b)))).sum(1)


def check_zero_network_bounds(run, folder, log_mass):
    """Evaluate a zeroed copy of ``run``; with log P(x) per held-out row from ``log_mass``
    (model units in, nats of the data out): test_elbo = mean log P - L KL(N(0, s^2) || N(0, 1))
    exactly (float32 round-off), and the IWAE_K bound within 4 standard errors (the run's and
    those of 200 000 Monte Carlo draws of log mean_k p(z_k) / q(z_k)). Returns the metrics."""
    from probdiff import open_run

    zero = zeroed_copy(run, folder)
    assert main(["evaluate", str(zero)]) == 0
    m = metrics(zero)
    options = json.loads((zero / "config.json").read_text())["request"]["options"]
    latent, k = options["latent_dim"], options["iwae_k"]
    logp = log_mass(open_run(zero).split()[1].flat()).mean()
    s = math.log(2) + 1e-5  # softplus(0) + 1e-5
    kl = 0.5 * (s * s - 1 - 2 * math.log(s))
    assert m["test_elbo"] == pytest.approx(logp - latent * kl, rel=1e-5)
    z = s * np.random.default_rng(0).standard_normal((200_000, k, latent))
    logw = (norm.logpdf(z) - norm.logpdf(z, 0.0, s)).sum(-1)
    gap = logsumexp(logw, axis=1) - math.log(k)
    se = math.hypot(m["test_iwae_stderr"], gap.std(ddof=1) / math.sqrt(len(gap)))
    assert abs(m["iwae"] - (logp + gap.mean())) < Z * se, (m["iwae"], logp + gap.mean(), se)
    return m


def test_gaussian_metrics_are_in_data_units(tmp_path):
    """Digits (integers 0..16) are scaled to [0, 1] for the network; the reported Gaussian
    ELBO and IWAE are densities of the integer-valued data: the same fit on the float data
    x / 16 (stored as continuous data, not scaled) reports them 64 log 16 nats higher."""
    digits = load_dataset("digits:n=300")
    path = tmp_path / "scaled.npz"
    np.savez(path, x=digits.x / 16.0)
    a, b = tmp_path / "int", tmp_path / "float"
    assert main(["fit", "vae", "--data", "digits:n=300", "--out", str(a), *FAST]) == 0
    assert main(["fit", "vae", "--data", str(path), "--out", str(b), *FAST]) == 0
    ma, mb = metrics(a), metrics(b)
    shift = 64 * math.log(16)
    for key in ("elbo", "test_elbo", "iwae"):
        assert ma[key] == pytest.approx(mb[key] - shift, abs=1e-3), key
    import arviz as az

    ta = az.from_netcdf(a / "inference_data.nc").sample_stats
    tb = az.from_netcdf(b / "inference_data.nc").sample_stats
    np.testing.assert_allclose(ta["elbo"].values, tb["elbo"].values - shift, atol=1e-3)
    np.testing.assert_allclose(ta["test_elbo"].values, tb["test_elbo"].values - shift, atol=1e-3)


def test_discrete_likelihoods_need_no_jacobian_and_bound_a_mass_function(tmp_path):
    """Bernoulli and the discretised Gaussian are probability masses of the integer data (no
    Jacobian): on a zeroed copy log P(x) is 64 log(1/2) (logits 0), or the discretised N(0, 1)
    mass of each pixel's level v / 16 of 17, exactly, and the bounds are checked against it;
    ELBO <= IWAE within Monte Carlo error; the held-out trace ends near test_elbo."""
    for lik in ("bernoulli", "discretized"):
        out = tmp_path / lik
        assert (
            main(
                [
                    "fit",
                    "vae",
                    "--data",
                    "digits:n=400",
                    "--out",
                    str(out),
                    "--likelihood",
                    lik,
                    *FAST,
                ]
            )
            == 0
        )
        m = metrics(out)
        assert m["test_elbo"] < m["iwae"] + Z * m["test_iwae_stderr"]
        import arviz as az

        held = az.from_netcdf(out / "inference_data.nc").sample_stats["test_elbo"].values[0]
        # the trace's last point is a one-particle estimate; test_elbo averages 4 repeats of
        # 64 particles, so one particle's standard deviation is about 2 x 8 = 16 stderr
        se = m["test_elbo_stderr"]
        assert abs(held[-1] - m["test_elbo"]) < 4 * se * (16**2 + 1) ** 0.5
        if lik == "bernoulli":
            mass = lambda v: np.full(len(v), -64 * math.log(2))  # noqa: E731
        else:
            mass = lambda v: discretised_log_mass(v / 16.0, 1.0, 17)  # noqa: E731
        check_zero_network_bounds(out, tmp_path / f"{lik}_zero", mass)


def test_bernoulli_binarises_integer_images_and_rejects_continuous_data(tmp_path, capsys):
    from probdiff.models.vae.family import VAEFamily
    from probdiff.request import make_family

    digits = load_dataset("digits:n=50")
    fam = make_family("vae", VAEFamily.default_options(likelihood="bernoulli"), digits)
    x = fam.prepare(digits)
    np.testing.assert_array_equal(x, (digits.flat() > 8).astype(float))
    code, _, err = run_cli(
        capsys,
        "fit",
        "vae",
        "--data",
        "moons",
        "--out",
        str(tmp_path / "r"),
        "--likelihood",
        "bernoulli",
    )
    assert code == 2 and "binary data" in err and not (tmp_path / "r").exists()
    code, _, err = run_cli(
        capsys,
        "fit",
        "vae",
        "--data",
        "moons",
        "--out",
        str(tmp_path / "r"),
        "--likelihood",
        "discretized",
    )
    assert code == 2 and "integer images" in err and len(err.strip().splitlines()) == 1


def write_pngs(folder, n, size, mode="L", seed=0):
    """``n`` random integer images: a bright blob on a dark background, with noise."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    h, w = size
    yy, xx = np.mgrid[:h, :w]
    for i in range(n):
        cy, cx = rng.uniform(0.3, 0.7, 2) * (h, w)
        img = 200 * np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (0.05 * h * w))
        img = np.clip(img + rng.normal(0, 10, (h, w)), 0, 255).astype(np.uint8)
        if mode == "RGB":
            img = np.stack([img, img[::-1], img[:, ::-1]], -1)
        Image.fromarray(img, mode=mode).save(folder / f"img{i:03d}.png")


@pytest.mark.parametrize(
    "size,mode,net", [((28, 28), "L", "conv"), ((32, 32), "RGB", "conv"), ((28, 28), "L", "mlp")]
)
def test_png_folders_fit_sample_and_evaluate(tmp_path, capsys, size, mode, net):
    """28x28 grey and 32x32 colour PNG folders through fit (discretised likelihood: a mass on
    the 256 levels), sample (a PNG grid and an .npz of integer levels in data units) and
    evaluate, on a zeroed copy whose log mass of every image is known: sum over its
    D = C H W pixels of the discretised N(0, 1) mass of level v / 255."""
    folder = tmp_path / "pngs"
    write_pngs(folder, 40, size, mode)
    out = tmp_path / "run"
    code, _, err = run_cli(
        capsys,
        "fit",
        "vae",
        "--data",
        str(folder),
        "--out",
        str(out),
        "--net",
        net,
        "--channels",
        "4,8",
        "--likelihood",
        "discretized",
        "--steps",
        "10",
        "--quiet",
        "--iwae-k",
        "2",
        "--posterior-samples",
        "2",
        "--hidden",
        "16",
    )
    assert code == 0, err
    channels = 3 if mode == "RGB" else 1
    assert {"reconstructions.png", "samples.png", "latent.png", "elbo_trace.png"} <= {
        p.name for p in out.iterdir()
    }
    code, _, err = run_cli(capsys, "sample", str(out), "-n", "6", "--sampler", "noisy")
    assert code == 0, err
    x = np.load(out / "samples" / "noisy-seed0-n6.npz")["x"]
    assert x.shape == (6, channels, *size)
    assert np.array_equal(x, np.round(x)) and x.min() >= 0 and x.max() <= 255  # integer levels
    assert (out / "samples" / "noisy-seed0-n6.png").is_file()

    def mass(v):
        assert v.shape[1] == channels * size[0] * size[1]
        return discretised_log_mass(v / 255.0, 1.0, 256)

    check_zero_network_bounds(out, tmp_path / "zero", mass)


@pytest.mark.parametrize(
    "setup,args,message",
    [
        ("mixed", [], "differ in size"),
        ("garbage", [], "cannot decode image"),
        ("ok", ["--net", "conv", "--channels", "4,8,16"], "divisible by 8"),
        ("ok", ["--latent-dim", "0"], "--latent-dim must be >= 1"),
        ("ok", ["--net", "conv", "--channels", "4,x"], "--channels must be comma-separated"),
        ("ok", ["--likelihood", "bernoulli", "--sigma-dec", "0.1"], "no meaning"),
    ],
)
def test_bad_image_input_gets_one_clear_line(tmp_path, capsys, setup, args, message):
    folder = tmp_path / "pngs"
    write_pngs(folder, 6, (28, 28))
    if setup == "mixed":
        write_pngs(tmp_path / "other", 1, (32, 32))
        (tmp_path / "other" / "img000.png").rename(folder / "zzz.png")
    elif setup == "garbage":
        (folder / "notes.png").write_text("not an image")
    out = tmp_path / "run"
    code, _, err = run_cli(capsys, "fit", "vae", "--data", str(folder), "--out", str(out), *args)
    assert code == 2 and message in err, err
    assert len(err.strip().splitlines()) == 1 and not out.exists()


def test_evaluate_rejects_images_on_other_levels(tmp_path, capsys):
    """A run on digits (levels 0..16) cannot be evaluated on 8-bit images of the same shape."""
    out = tmp_path / "run"
    assert (
        main(
            [
                "fit",
                "vae",
                "--data",
                "digits:n=200",
                "--out",
                str(out),
                "--likelihood",
                "discretized",
                *FAST,
            ]
        )
        == 0
    )
    before = (out / "metrics.json").read_bytes()
    folder = tmp_path / "pngs"
    write_pngs(folder, 4, (8, 8))
    code, _, err = run_cli(capsys, "evaluate", str(out), "--data", str(folder))
    assert code == 2 and "not integer data on 0..16" in err
    assert (out / "metrics.json").read_bytes() == before
