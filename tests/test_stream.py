"""Data streamed from disk: ``.npy`` rows through a memory map and PNG folders decoded per
read give the values an in-memory load gives, fits on them give the numbers a fit in memory
gives, and training reads a minibatch at a time."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import cli
from PIL import Image

import probdiff
from probdiff.data import as_dataset, evaluation_subset, load_dataset, train_test_split
from probdiff.data import batches as batches_mod
from probdiff.data import files as files_mod
from probdiff.data import rows as rows_mod
from probdiff.data.rows import Rows, spread_rows
from probdiff.errors import ProbdiffError


def _mixture(n: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    z = rng.integers(3, size=n)
    return np.array([[-2.0, -1.0], [2.0, -1.0], [0.0, 2.5]])[z] + 0.5 * rng.normal(size=(n, 2))


@pytest.fixture
def small_blocks(monkeypatch: pytest.MonkeyPatch) -> None:
    """Whole-data passes in blocks of 7 rows of 2 values, so every pass crosses blocks."""
    monkeypatch.setattr(rows_mod, "BLOCK_BYTES", 7 * 2 * 8)


# -- rows ------------------------------------------------------------------------------------
def test_rows_index_like_the_array(tmp_path: Path, small_blocks) -> None:
    x = np.random.default_rng(1).normal(size=(50, 3, 2)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    r = Rows(rows_mod.NpyReader(tmp_path / "x.npy", "x.npy"))
    ref = x.astype(np.float64)
    assert r.shape == x.shape and len(r) == 50 and r.ndim == 3
    idx = np.array([7, 3, 3, -1, 0, 49])  # unsorted, repeated, negative
    mask = np.random.default_rng(2).random(50) < 0.3
    for key in (idx, slice(5, 40, 3), mask, torch.tensor([4, 2, 9]), 6, slice(None)):
        want = ref[key.numpy() if isinstance(key, torch.Tensor) else key]
        got = r[key]
        assert got.dtype == np.float64
        np.testing.assert_array_equal(got, want.reshape(got.shape))
    sub = r.subset(np.array([10, 2, 30, 31])).subset(np.array([3, 0]))
    np.testing.assert_array_equal(sub.load(), ref[[31, 10]])
    np.testing.assert_array_equal(r.reshape(50, 6)[idx], ref.reshape(50, 6)[idx])
    np.testing.assert_array_equal(np.asarray(r.map(lambda b: 2 * b + 1)), 2 * ref + 1)
    with pytest.raises(IndexError, match="out of range for 50 rows"):
        r[np.array([50])]


def test_rows_statistics_match_numpy_across_blocks(tmp_path: Path, small_blocks) -> None:
    x = 1e3 + np.random.default_rng(3).normal(
        size=(101, 2)
    )  # a large mean: a naive sum loses digits
    np.save(tmp_path / "x.npy", x)
    r = load_dataset(tmp_path / "x.npy", stream=True).x
    assert isinstance(r, Rows) and len(list(r.blocks())) == 15
    np.testing.assert_allclose(r.mean(0), x.mean(0), rtol=1e-14)
    # merging blocks by Chan et al.'s update: 2e-14 here; E[x^2] - E[x]^2 per block: 3e-10
    np.testing.assert_allclose(r.var(0), x.var(0), rtol=1e-12)
    assert (r.min(), r.max()) == (x.min(), x.max())


PAGES_CHILD = """
import sys
import numpy as np
from probdiff.data import load_dataset
from probdiff.data import rows

rows.BLOCK_BYTES = 1 << 20


def status(key):
    for line in open("/proc/self/status"):
        if line.startswith(key + ":"):
            return int(line.split()[1]) / 1024


x = load_dataset(sys.argv[1], stream=True).x  # the finite check reads every row
before = status("VmHWM")
every_8th = x[np.arange(0, x.n, 8)]  # scattered rows: every page of the file is touched
for start in range(0, x.n, 1 << 18):  # and every row again, in batches
    x[np.arange(start, min(start + (1 << 18), x.n))]
print(status("VmHWM") - before, status("RssFile"))
"""


def test_pages_read_leave_the_process(tmp_path: Path) -> None:
    """Reading a 96 MiB file (the finite check at load, every 8th row in one call, then every
    row in batches) raises the peak resident memory by the rows returned (12 MiB) and
    buffers, not by the file, and maps none of its pages into the process (through a memory
    map, both would grow by the file's 96 MiB)."""
    import subprocess
    import sys

    np.save(tmp_path / "x.npy", np.ones((6 << 20, 2)))
    out = subprocess.run(
        [sys.executable, "-c", PAGES_CHILD, str(tmp_path / "x.npy")],
        capture_output=True,
        text=True,
        check=True,
    )
    growth, resident_file = (float(v) for v in out.stdout.split())
    assert growth < 40 and resident_file < 40, out.stdout


def test_spread_rows_cover_the_file() -> None:
    rows = spread_rows(1000, 7)
    assert rows[0] == 0 and rows[-1] == 999 and len(rows) == 7
    assert np.all(np.diff(rows) >= 166)
    np.testing.assert_array_equal(spread_rows(5, 7), np.arange(5))


# -- loading -----------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("shape", "dtype", "kind", "event"),
    [
        ((40, 3), np.float64, "vector", (3,)),
        ((40, 3), np.float32, "vector", (3,)),
        ((40, 5, 4), np.uint8, "image", (1, 5, 4)),
        ((40, 3, 5, 4), np.uint8, "image", (3, 5, 4)),
        ((40, 2), np.int16, "vector", (2,)),
    ],
)
def test_streamed_npy_equals_the_loaded_one(
    tmp_path: Path, shape, dtype, kind, event, small_blocks
) -> None:
    x = (np.random.default_rng(0).random(shape) * 200).astype(dtype)
    np.save(tmp_path / "x.npy", x)
    lazy = load_dataset(tmp_path / "x.npy", stream=True)
    eager = load_dataset(tmp_path / "x.npy", stream=False)
    assert lazy.streamed and not eager.streamed
    assert (lazy.kind, lazy.event_shape, lazy.meta) == (kind, event, eager.meta)
    np.testing.assert_array_equal(np.asarray(lazy.x), eager.x)
    train, test = train_test_split(lazy, 0.25, seed=4)
    etrain, etest = train_test_split(eager, 0.25, seed=4)
    assert train.streamed
    np.testing.assert_array_equal(train.flat()[np.arange(train.n)], etrain.flat())
    np.testing.assert_array_equal(test.loaded().x, etest.x)


def test_streaming_is_automatic_above_the_threshold(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    np.save(tmp_path / "x.npy", np.zeros((100, 2)))
    assert not load_dataset(tmp_path / "x.npy").streamed
    monkeypatch.setattr(files_mod, "STREAM_BYTES", 100 * 2 * 8 - 1)
    assert load_dataset(tmp_path / "x.npy").streamed
    assert not load_dataset(tmp_path / "x.npy", stream=False).streamed


def test_streamed_npy_refuses_bad_files(tmp_path: Path, small_blocks) -> None:
    x = np.zeros((60, 2))
    x[23, 1] = np.nan
    x[40, 0] = np.inf
    np.save(tmp_path / "nan.npy", x)
    with pytest.raises(ProbdiffError, match=r"has 2 NaN/inf entries \(first in row 23\)"):
        load_dataset(tmp_path / "nan.npy", stream=True)
    np.save(tmp_path / "f.npy", np.asfortranarray(np.ones((5, 3))))
    with pytest.raises(ProbdiffError, match="Fortran order"):
        load_dataset(tmp_path / "f.npy", stream=True)
    raw = (tmp_path / "f.npy").read_bytes()
    np.save(tmp_path / "t.npy", np.ones((50, 3)))
    (tmp_path / "t.npy").write_bytes((tmp_path / "t.npy").read_bytes()[:-8])
    with pytest.raises(ProbdiffError, match="truncated"):
        load_dataset(tmp_path / "t.npy", stream=True)
    (tmp_path / "junk.npy").write_bytes(b"not an array" + raw[:10])
    with pytest.raises(ProbdiffError, match="cannot read"):
        load_dataset(tmp_path / "junk.npy", stream=True)
    np.save(tmp_path / "empty.npy", np.zeros((0, 2)))
    with pytest.raises(ProbdiffError, match="0 rows"):
        load_dataset(tmp_path / "empty.npy", stream=True)
    np.save(tmp_path / "one.npy", np.zeros(5))
    with pytest.raises(ProbdiffError, match="2 to 4 dimensions"):
        load_dataset(tmp_path / "one.npy", stream=True)
    np.savez(tmp_path / "x.npz", x=np.zeros((5, 2)))
    with pytest.raises(ProbdiffError, match=r"--stream reads \.npy files"):
        load_dataset(tmp_path / "x.npz", stream=True)
    with pytest.raises(ProbdiffError, match="built in"):
        load_dataset("moons", stream=True)
    with pytest.raises(ProbdiffError, match="pass its path"):
        as_dataset(np.zeros((5, 2)), stream=True)


def _png_folder(path: Path, n: int, rgb: bool = False, seed: int = 0) -> np.ndarray:
    path.mkdir()
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 256, size=(n, 6, 5, 3) if rgb else (n, 6, 5), dtype=np.uint8)
    for i, im in enumerate(x):
        Image.fromarray(im, "RGB" if rgb else "L").save(path / f"{i:03d}.png")
    return x


@pytest.mark.parametrize("rgb", [False, True])
def test_streamed_png_folder_decodes_per_read(tmp_path: Path, rgb: bool) -> None:
    _png_folder(tmp_path / "p", 12, rgb)
    lazy = load_dataset(tmp_path / "p", stream=True)
    eager = load_dataset(tmp_path / "p", stream=False)
    assert lazy.streamed and lazy.event_shape == eager.event_shape == ((3 if rgb else 1), 6, 5)
    assert lazy.meta == eager.meta
    np.testing.assert_array_equal(lazy.x[np.array([11, 0, 4])], eager.x[[11, 0, 4]])


def test_streamed_png_folder_errors(tmp_path: Path) -> None:
    _png_folder(tmp_path / "p", 4)
    Image.fromarray(np.zeros((7, 5), np.uint8)).save(tmp_path / "p" / "999.png")
    with pytest.raises(ProbdiffError, match="differ in size"):
        load_dataset(tmp_path / "p", stream=True)
    (tmp_path / "p" / "999.png").unlink()
    good = (tmp_path / "p" / "001.png").read_bytes()
    cut = good.index(b"IDAT") + 8  # the header survives, the pixels not
    (tmp_path / "p" / "001.png").write_bytes(good[:cut])
    lazy = load_dataset(tmp_path / "p", stream=True)  # sizes come from the headers
    assert lazy.x[np.array([0, 2])].shape == (2, 1, 6, 5)
    with pytest.raises(ProbdiffError, match=r"cannot decode image .*001\.png"):
        lazy.x[np.array([1])]


def test_sample_rows_is_a_uniform_subset() -> None:
    """Each of the 10 pairs of 5 rows is drawn 2000 times in 20 000 seeds, within 5 binomial
    standard errors (42)."""
    from collections import Counter

    counts = Counter(tuple(batches_mod.sample_rows(5, 2, seed)) for seed in range(20_000))
    assert len(counts) == 10 and all(abs(c - 2000) < 5 * 42.4 for c in counts.values())
    np.testing.assert_array_equal(batches_mod.sample_rows(7, 7, 0), np.arange(7))


def test_evaluation_subset(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    x = _mixture(500)
    np.save(tmp_path / "x.npy", x)
    lazy = load_dataset(tmp_path / "x.npy", stream=True)
    eager = load_dataset(tmp_path / "x.npy", stream=False)
    assert evaluation_subset(eager, 0) is eager
    whole = evaluation_subset(lazy, 0)
    assert not whole.streamed and np.array_equal(whole.x, x)  # at least 1000 rows: all 500
    monkeypatch.setattr(batches_mod, "EVAL_MAX_ROWS", 10)
    big = _mixture(5000)
    np.save(tmp_path / "big.npy", big)
    some = evaluation_subset(load_dataset(tmp_path / "big.npy", stream=True), 3)
    assert some.n == 1000 and not some.streamed
    rows = [int(np.flatnonzero((big == r).all(1))[0]) for r in some.x]
    assert rows == sorted(set(rows))  # distinct rows, in file order
    assert 0.4 < np.mean(np.array(rows) < 2500) < 0.6  # spread over the file (about 6 s.e.)


# -- fitting ---------------------------------------------------------------------------------
def _same_run(a: Path, b: Path) -> None:
    """Two run folders with equal parameters, traces and metrics (timings and the streamed
    run's evaluation row counts aside)."""
    pa, pb = np.load(a / "params.npz"), np.load(b / "params.npz")
    assert set(pa.files) == set(pb.files)
    for k in pa.files:
        np.testing.assert_array_equal(pa[k], pb[k], err_msg=k)
    ma, mb = (json.loads((p / "metrics.json").read_text()) for p in (a, b))
    for k, v in mb.items():
        if "seconds" not in k:
            assert ma[k] == v or (v != v and ma[k] != ma[k]), k
    assert ma["eval_rows_train"] > 0 and "eval_rows_train" not in mb


def _fit_both_ways(capsys, tmp_path: Path, model: str, data: Path, *argv: str) -> None:
    """Fit ``model`` on ``data`` streamed and in memory; the two runs must be the same."""
    runs = {mode: tmp_path / mode for mode in ("--stream", "--no-stream")}
    for mode, out in runs.items():
        code, _, err = cli(capsys, "fit", model, "--data", data, mode, "--out", out, *argv)
        assert code == 0, err
    assert json.loads((runs["--stream"] / "config.json").read_text())["request"]["stream"]
    _same_run(runs["--stream"], runs["--no-stream"])


@pytest.mark.parametrize(
    ("model", "argv"),
    [
        ("gmm", ["--batch-size", "64"]),
        ("gmm", ["--batch-size", "64", "--backend", "numpyro"]),
        ("ddpm", ["--batch-size", "32", "--T", "20"]),
    ],
)
def test_streamed_fit_equals_the_fit_in_memory(capsys, tmp_path: Path, model, argv) -> None:
    np.save(tmp_path / "x.npy", _mixture(600))
    _fit_both_ways(capsys, tmp_path, model, tmp_path / "x.npy", "--steps", "30", "--quiet", *argv)


def test_streamed_png_fit_of_a_vae_equals_the_fit_in_memory(capsys, tmp_path: Path) -> None:
    _png_folder(tmp_path / "p", 80, seed=5)
    _fit_both_ways(
        capsys,
        tmp_path,
        "vae",
        tmp_path / "p",
        *("--steps", "20", "--batch-size", "16", "--hidden", "16", "--quiet"),
    )


FACTOR_MODEL = """
import pyro
import pyro.distributions as dist
import torch
from pyro.distributions import constraints


def model(x, n_total=None):
    n, d = x.shape
    w = pyro.param("w", lambda: 0.1 * torch.ones(d, 1, dtype=x.dtype))
    mu = pyro.param("mu", lambda: x.mean(0))
    psi = pyro.param("psi", lambda: x.var(0), constraint=constraints.positive)
    with pyro.plate("data", n), pyro.poutine.scale(scale=(n_total or n) / n):
        z = pyro.sample("z", dist.Normal(torch.zeros(1, dtype=x.dtype), 1.0).to_event(1))
        pyro.sample("obs", dist.Normal(mu + z @ w.T, psi.sqrt()).to_event(1), obs=x)


def guide(x, n_total=None):
    n, d = x.shape
    net = pyro.module("encoder", torch.nn.Linear(d, 2).to(x.dtype))
    with pyro.plate("data", n), pyro.poutine.scale(scale=(n_total or n) / n):
        out = net(x)
        pyro.sample("z", dist.Normal(out[:, :1], out[:, 1:].exp()).to_event(1))
"""


def test_streamed_user_model_equals_the_one_in_memory(tmp_path: Path) -> None:
    """A user's model through the Python API: parameters, predictive draws at the training
    rows and held-out evaluation equal those of the same fit in memory."""
    (tmp_path / "fa.py").write_text(FACTOR_MODEL)
    np.save(tmp_path / "x.npy", _mixture(600) @ np.array([[1.0, 0.5, -0.3], [0.2, 1.0, 0.4]]))
    runs = [
        probdiff.fit(
            f"{tmp_path / 'fa.py'}:model",
            f"{tmp_path / 'fa.py'}:guide",
            data=str(tmp_path / "x.npy"),
            stream=stream,
            steps=30,
            batch_size=40,
            out=str(tmp_path / str(stream)),
            progress=False,
        )
        for stream in (True, False)
    ]
    for k, v in runs[1].params.items():
        np.testing.assert_array_equal(runs[0].params[k], v, err_msg=k)
    a, b = (r.predictive(num_samples=3, seed=1)["obs"] for r in runs)
    assert a.shape == (3, 480, 3)
    np.testing.assert_array_equal(a, b)
    assert runs[0].evaluate(update=False) == runs[1].evaluate(update=False)


def test_training_reads_a_minibatch_at_a_time(tmp_path: Path, monkeypatch) -> None:
    """A user's model (pyro.module encoder, n_total scaling) on 20 000 streamed rows: no read
    during the fit takes more than the budgets set here (1000 rows), and training reads the
    parameters' first rows and then one minibatch per step."""
    import probdiff.program as program_mod

    (tmp_path / "fa.py").write_text(FACTOR_MODEL)
    n = 20_000
    x = _mixture(n) @ np.array([[1.0, 0.5, -0.3], [0.2, 1.0, 0.4]])
    np.save(tmp_path / "x.npy", x)
    monkeypatch.setattr(rows_mod, "BLOCK_BYTES", 300 * 3 * 8)
    monkeypatch.setattr(program_mod, "INIT_ROWS", 300)
    monkeypatch.setattr(program_mod, "EVAL_ROWS", 300)
    monkeypatch.setattr(program_mod, "DRAW_ROWS", 300)
    monkeypatch.setattr(batches_mod, "EVAL_MAX_ROWS", 10)  # 1000 rows: the floor
    monkeypatch.setattr(batches_mod, "EVAL_BYTES", 0)
    reads: list[int] = []
    real = rows_mod.NpyReader.read

    def counted(self, idx):
        reads.append(len(idx))
        return real(self, idx)

    monkeypatch.setattr(rows_mod.NpyReader, "read", counted)
    import probdiff.svi as svi_mod

    during: list[int] = []
    real_svi = svi_mod.run_svi

    def training(*args, **kwargs):
        start = len(reads)
        try:
            return real_svi(*args, **kwargs)
        finally:
            during.extend(reads[start:])

    monkeypatch.setattr("probdiff.fitting.run_svi", training)
    kw = dict(
        guide=f"{tmp_path / 'fa.py'}:guide",
        steps=40,
        batch_size=50,
        progress=False,
        posterior_samples=20,
    )
    model = f"{tmp_path / 'fa.py'}:model"
    run = probdiff.fit(
        model, data=str(tmp_path / "x.npy"), stream=True, out=str(tmp_path / "s"), **kw
    )
    assert max(reads) <= 1000
    # training: the parameters' first call (300 rows spread over the file), then 40 batches
    assert during == [300] + [50] * 40
    assert run.metrics["eval_rows_test"] == 1000


def test_streamed_run_resumes_and_evaluates(capsys, tmp_path: Path) -> None:
    np.save(tmp_path / "x.npy", _mixture(400))
    base = ["fit", "gmm", "--data", tmp_path / "x.npy", "--stream", "--batch-size", "50"]
    assert cli(capsys, *base, "--out", tmp_path / "a", "--steps", "25", "--quiet")[0] == 0
    assert (
        cli(
            capsys,
            *base,
            "--out",
            tmp_path / "b",
            "--steps",
            "10",
            "--checkpoint-every",
            "5",
            "--quiet",
        )[0]
        == 0
    )
    code, _, err = cli(
        capsys, "fit", "gmm", "--resume", "--out", tmp_path / "b", "--steps", "25", "--quiet"
    )
    assert code == 0, err
    ta, tb = (np.load(p / "params.npz") for p in (tmp_path / "a", tmp_path / "b"))
    for k in ta.files:
        np.testing.assert_array_equal(ta[k], tb[k], err_msg=k)
    code, out, err = cli(capsys, "evaluate", tmp_path / "a", "--json")
    assert code == 0, err
    assert json.loads(out)["test_elbo"] == pytest.approx(
        json.loads((tmp_path / "a" / "metrics.json").read_text())["test_elbo"], abs=1e-9
    )


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--inference", "em"], "needs every row in memory"),
        ([], "give --batch-size"),
    ],
)
def test_streamed_data_refuses_what_needs_it_in_memory(
    capsys, tmp_path: Path, argv, message
) -> None:
    np.save(tmp_path / "x.npy", _mixture(100))
    code, out, err = cli(
        capsys,
        "fit",
        "gmm",
        "--data",
        tmp_path / "x.npy",
        "--stream",
        "--out",
        tmp_path / "r",
        "--steps",
        "5",
        *argv,
    )
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "r").exists()


# -- particles in groups ------------------------------------------------------------------
def test_particle_groups_fit_the_budget(monkeypatch: pytest.MonkeyPatch) -> None:
    """The fewest equal groups whose calls hold at most PARTICLE_VALUES numbers."""
    import probdiff.program as program_mod

    monkeypatch.setattr(program_mod, "PARTICLE_VALUES", 1000)
    x = np.zeros((50, 4))  # 200 numbers per particle
    for particles, want in ((5, 1), (6, 2), (64, 16), (7, 7)):
        groups = program_mod.particle_groups(particles, x)
        assert groups == want and particles % groups == 0
        assert particles // groups * 200 <= 1000 or groups == particles
    assert program_mod.particle_groups(64, x, max_rows=5) == 2  # 32 x 5 x 4 = 640 of 1000


def test_grouped_particles_estimate_the_same_elbo(monkeypatch: pytest.MonkeyPatch) -> None:
    """A local-latent model's ELBO by 64 vectorised particles in one call and in 64 calls of
    one: the two means agree within 4 standard errors of their difference, and the exact
    value (a conjugate Gaussian: known in closed form) lies within 4 of each."""
    import pyro
    import pyro.distributions as dist

    import probdiff.program as program_mod
    from probdiff.backends import get_backend
    from probdiff.program import Program

    def model(x):
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", dist.Normal(torch.zeros_like(x), 1.0).to_event(1))
            pyro.sample("obs", dist.Normal(z, 1.0).to_event(1), obs=x)

    def guide(x):  # not the posterior N(x/2, 1/2): the bound has a gap and a variance
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", dist.Normal(0.4 * x, 0.8).to_event(1))

    x = np.random.default_rng(0).normal(size=(30, 2))
    # exact ELBO: E_q[log N(x; z, 1) + log N(z; 0, 1) - log q(z)] per coordinate, summed
    m, s2 = 0.4 * x, 0.64
    exact = float(
        np.sum(
            -np.log(2 * np.pi)
            - 0.5 * ((x - m) ** 2 + s2)
            - 0.5 * (m**2 + s2)
            + 0.5 * np.log(2 * np.pi * np.e * s2)
        )
    )
    backend = get_backend("pyro", dtype="float64")
    program = Program(model, guide, vectorize_particles=True, max_plate_nesting=1)
    data = backend.array(x)
    backend.start(program, data, lr=0.01, seed=0)
    one, err_one = backend.elbo(program, data, num_particles=64, repeats=8, seed=1)
    monkeypatch.setattr(program_mod, "PARTICLE_VALUES", 60)  # one particle (60 numbers) a call
    assert program_mod.particle_groups(64, x) == 64
    many, err_many = backend.elbo(program, data, num_particles=64, repeats=8, seed=2)
    assert abs(one - many) < 4 * np.hypot(err_one, err_many)
    assert abs(one - exact) < 4 * err_one and abs(many - exact) < 4 * err_many
    assert err_one > 0 and err_many > 0
