"""Tests for probdiff.data: built-ins, file loaders, validation, splits and minibatches."""

from __future__ import annotations

import socket
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from scipy.stats import multivariate_normal

from probdiff.data import (
    BUILTIN_DATASETS,
    Dataset,
    Minibatches,
    load_dataset,
    train_test_split,
)
from probdiff.errors import ProbdiffError

# name -> (small spec, expected event shape, kind, labelled)
SMALL = {
    "blobs": ("blobs:n=200", (2,), "vector", True),
    "moons": ("moons:n=200", (2,), "vector", True),
    "swissroll": ("swissroll:n=200", (2,), "vector", False),
    "mixture2d": ("mixture2d:n=200", (2,), "vector", True),
    "digits": ("digits:n=200", (1, 8, 8), "image", True),
    "patches": ("patches:n=200", (1, 8, 8), "image", True),
}


@pytest.fixture(autouse=True)
def no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    """Any attempt to open a connection fails the test."""

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("network access attempted")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


def mixture_logpdf(
    x: np.ndarray, weights: np.ndarray, locs: np.ndarray, scales: np.ndarray
) -> np.ndarray:
    """Independent reference: log of sum_k w_k N(x; mu_k, s_k^2 I) via scipy."""
    dim = locs.shape[1]
    dens = sum(
        w * multivariate_normal(mean=m, cov=s**2 * np.eye(dim)).pdf(x)
        for w, m, s in zip(weights, locs, scales)
    )
    return np.log(dens)


# ----------------------------------------------------------------------------- built-ins


def test_builtin_table_is_complete() -> None:
    assert set(BUILTIN_DATASETS) == set(SMALL)
    assert all(isinstance(v, str) and "\n" not in v for v in BUILTIN_DATASETS.values())


@pytest.mark.parametrize("name", sorted(SMALL))
def test_builtin_shape_dtype_and_seeding(name: str) -> None:
    spec, shape, kind, labelled = SMALL[name]
    ds = load_dataset(spec, seed=1)
    assert ds.name == name and ds.kind == kind
    assert ds.x.dtype == np.float64 and ds.x.shape == (200, *shape)
    assert ds.n == len(ds) == 200 and ds.event_shape == shape
    assert ds.dim == int(np.prod(shape)) and ds.flat().shape == (200, ds.dim)
    assert np.all(np.isfinite(ds.x))
    if labelled:
        assert ds.y is not None and ds.y.shape == (200,) and ds.y.dtype == np.int64
    else:
        assert ds.y is None
    again = load_dataset(spec, seed=1)
    np.testing.assert_array_equal(ds.x, again.x)
    other = load_dataset(spec, seed=2)
    if name == "digits":  # a fixed data set: the seed does not matter
        np.testing.assert_array_equal(ds.x, other.x)
    else:
        assert not np.array_equal(ds.x, other.x)


def test_builtin_defaults() -> None:
    assert load_dataset("moons").n == 1000
    assert load_dataset("swissroll").n == 1000
    assert load_dataset("mixture2d").n == 1000
    blobs = load_dataset("blobs")
    assert blobs.x.shape == (1000, 2) and set(blobs.y.tolist()) == {0, 1, 2}
    patches = load_dataset("patches")
    assert patches.x.shape == (2000, 1, 8, 8)


def test_builtin_parameters_apply() -> None:
    blobs = load_dataset("blobs:n=50,centers=4,dim=3,std=0.5")
    assert blobs.x.shape == (50, 3) and blobs.meta["locs"].shape == (4, 3)
    np.testing.assert_allclose(blobs.meta["scales"], 0.5)
    np.testing.assert_allclose(blobs.meta["weights"], 0.25)
    assert load_dataset("patches:size=5,n=7").x.shape == (7, 1, 5, 5)
    exact = load_dataset("moons:n=20, noise=0")
    np.testing.assert_allclose(np.linalg.norm(exact.x[exact.y == 0], axis=1), 1.0)


def test_digits_values_and_meta() -> None:
    from sklearn.datasets import load_digits

    ds = load_dataset("digits")
    ref = load_digits()
    assert ds.x.shape == (1797, 1, 8, 8)
    np.testing.assert_array_equal(ds.x[:, 0], ref.images)
    np.testing.assert_array_equal(ds.y, ref.target)
    assert ds.x.min() == 0 and ds.x.max() == 16
    assert ds.meta["integer"] is True and ds.meta["levels"] == 17
    assert ds.meta["low"] == 0 and ds.meta["high"] == 16
    assert ds.log_prob is None


def test_patches_are_crops_of_bundled_images() -> None:
    import skimage.data

    ds = load_dataset("patches:n=30,size=6", seed=3)
    assert ds.meta["integer"] is True and ds.meta["levels"] == 256
    assert ds.meta["low"] == 0 and ds.meta["high"] == 255
    assert np.all(ds.x == np.round(ds.x)) and ds.x.min() >= 0 and ds.x.max() <= 255
    sources = [getattr(skimage.data, name)() for name in ds.meta["sources"]]
    for patch, k in zip(ds.x[:, 0], ds.y):
        windows = np.lib.stride_tricks.sliding_window_view(sources[k], (6, 6))
        assert np.any(np.all(windows == patch, axis=(2, 3)))


@pytest.mark.parametrize("name", ["blobs", "mixture2d"])
def test_log_prob_matches_scipy_mixture(name: str) -> None:
    ds = load_dataset(f"{name}:n=300", seed=5)
    m = ds.meta
    assert m["weights"].shape == (3,) and m["locs"].shape == (3, 2) and m["scales"].shape == (3,)
    np.testing.assert_allclose(m["weights"].sum(), 1.0)
    probe = np.vstack([ds.x[:50], np.random.default_rng(0).normal(scale=4.0, size=(50, 2))])
    expected = mixture_logpdf(probe, m["weights"], m["locs"], m["scales"])
    np.testing.assert_allclose(ds.log_prob(probe), expected, rtol=1e-10, atol=1e-10)
    assert ds.log_prob(probe).shape == (100,)


def test_blobs_log_prob_uses_generated_centres() -> None:
    from sklearn.datasets import make_blobs

    ds = load_dataset("blobs:n=100", seed=4)
    x, _, centers = make_blobs(
        n_samples=100, centers=3, n_features=2, random_state=4, return_centers=True
    )
    np.testing.assert_allclose(ds.meta["locs"], centers)
    np.testing.assert_allclose(ds.x, x)


def test_mixture2d_is_unequal_and_its_sample_mean_matches() -> None:
    ds = load_dataset("mixture2d:n=4000", seed=11)
    w, mu, s = ds.meta["weights"], ds.meta["locs"], ds.meta["scales"]
    assert len(set(np.round(w, 6))) == 3 and len(set(np.round(s, 6))) == 3
    mean = w @ mu
    second = (w[:, None] * (s[:, None] ** 2 + mu**2)).sum(axis=0)
    stderr = np.sqrt((second - mean**2) / ds.n)
    assert np.all(np.abs(ds.x.mean(axis=0) - mean) < 4 * stderr)
    np.testing.assert_allclose(np.bincount(ds.y, minlength=3) / ds.n, w, atol=0.04)


def test_log_prob_survives_subset_and_split() -> None:
    ds = load_dataset("mixture2d:n=100")
    train, test = train_test_split(ds, 0.2, seed=0)
    assert train.log_prob is ds.log_prob and test.meta is ds.meta
    np.testing.assert_allclose(test.log_prob(test.x), ds.log_prob(test.x))


# ----------------------------------------------------------------------------- files


def test_npz_round_trip(tmp_path: Path) -> None:
    x = np.random.default_rng(0).normal(size=(20, 3))
    y = np.arange(20) % 4
    np.savez(tmp_path / "d.npz", x=x, y=y)
    ds = load_dataset(str(tmp_path / "d.npz"))
    np.testing.assert_array_equal(ds.x, x)
    np.testing.assert_array_equal(ds.y, y)
    assert ds.kind == "vector" and ds.name == str(tmp_path / "d.npz") and ds.log_prob is None


def test_npz_without_y_and_image_shapes(tmp_path: Path) -> None:
    np.savez(tmp_path / "img4.npz", x=np.zeros((5, 3, 4, 4), dtype=np.float32))
    ds = load_dataset(str(tmp_path / "img4.npz"))
    assert ds.kind == "image" and ds.x.shape == (5, 3, 4, 4) and ds.y is None
    assert ds.x.dtype == np.float64
    np.save(tmp_path / "img3.npy", np.arange(5 * 4 * 6, dtype=np.uint8).reshape(5, 4, 6))
    ds3 = load_dataset(tmp_path / "img3.npy")
    assert ds3.kind == "image" and ds3.x.shape == (5, 1, 4, 6)
    assert ds3.meta["integer"] is True and ds3.meta["levels"] == 256


def test_npy_round_trip(tmp_path: Path) -> None:
    x = np.random.default_rng(1).normal(size=(9, 2))
    np.save(tmp_path / "d.npy", x)
    ds = load_dataset(str(tmp_path / "d.npy"))
    np.testing.assert_array_equal(ds.x, x)
    assert ds.y is None and ds.kind == "vector"


def test_csv_without_header(tmp_path: Path) -> None:
    x = np.random.default_rng(2).normal(size=(6, 3))
    np.savetxt(tmp_path / "d.csv", x, delimiter=",", fmt="%.17g")
    ds = load_dataset(str(tmp_path / "d.csv"))
    np.testing.assert_array_equal(ds.x, x)
    assert ds.y is None


@pytest.mark.parametrize("label_name", ["y", "label", "Label"])
def test_csv_with_header_and_label(tmp_path: Path, label_name: str) -> None:
    path = tmp_path / "d.csv"
    path.write_text(f"a,{label_name},b\n1.5,0,2\n-3,2,4e-1\n\n7,1,8\n")
    ds = load_dataset(str(path))
    np.testing.assert_array_equal(ds.x, [[1.5, 2.0], [-3.0, 0.4], [7.0, 8.0]])
    np.testing.assert_array_equal(ds.y, [0, 2, 1])
    assert ds.meta["columns"] == ["a", "b"]


def test_csv_with_header_without_label(tmp_path: Path) -> None:
    path = tmp_path / "d.csv"
    path.write_text("u,v\n1,2\n3,4\n")
    ds = load_dataset(str(path))
    np.testing.assert_array_equal(ds.x, [[1, 2], [3, 4]])
    assert ds.y is None


def _write_png(path: Path, array: np.ndarray, mode: str) -> None:
    Image.fromarray(array.astype(np.uint8), mode=mode).save(path)


def test_png_folder_grayscale(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    arrays = [rng.integers(0, 256, size=(5, 7)) for _ in range(3)]
    for i, a in enumerate(arrays):
        _write_png(tmp_path / f"img{i}.png", a, "L")
    (tmp_path / "notes.txt").write_text("ignored")
    _write_png(tmp_path / "colour.PNG", np.zeros((5, 7, 3)), "RGB")  # mixed -> grayscale
    ds = load_dataset(str(tmp_path))
    assert ds.kind == "image" and ds.x.shape == (4, 1, 5, 7) and ds.y is None
    names = sorted(["img0.png", "img1.png", "img2.png", "colour.PNG"])
    assert ds.meta["files"] == names
    for i, a in enumerate(arrays):
        np.testing.assert_array_equal(ds.x[names.index(f"img{i}.png"), 0], a)
    assert ds.meta["integer"] is True and ds.meta["levels"] == 256 and ds.meta["high"] == 255


def test_png_folder_rgb(tmp_path: Path) -> None:
    rng = np.random.default_rng(4)
    arrays = [rng.integers(0, 256, size=(4, 6, 3)) for _ in range(2)]
    for i, a in enumerate(arrays):
        _write_png(tmp_path / f"{i}.png", a, "RGB")
    ds = load_dataset(str(tmp_path))
    assert ds.x.shape == (2, 3, 4, 6)
    np.testing.assert_array_equal(ds.x[1], arrays[1].transpose(2, 0, 1))


# ----------------------------------------------------------------------------- errors


def test_missing_path_lists_builtins() -> None:
    pattern = r"no such data file or built-in data set: 'nope\.npz' \(built-ins: blobs, moons"
    with pytest.raises(ProbdiffError, match=pattern):
        load_dataset("nope.npz")


@pytest.mark.parametrize(
    "spec, match",
    [
        ("moons:n=abc", r"moons: n must be an integer, got 'abc'"),
        ("moons:n=2.5", r"moons: n must be an integer, got '2\.5'"),
        ("moons:n=0", r"moons: n must be >= 1, got 0"),
        ("moons:noise=-1", r"moons: noise must be >= 0"),
        ("moons:noise=inf", r"moons: noise must be finite"),
        ("moons:bogus=1", r"moons: unknown key\(s\) 'bogus' \(known: n, noise\)"),
        ("moons:n", r"moons: expected key=value in the data spec, got 'n'"),
        ("moons:n=1,n=2", r"moons: key 'n' given twice"),
        ("blobs:std=0", r"blobs: std must be > 0"),
        ("digits:n=5000", r"digits: n must be <= 1797, got 5000"),
        ("patches:size=1000", r"patches: size must be <= 172"),
        ("mixture2d:noise=1", r"mixture2d: unknown key\(s\) 'noise'"),
    ],
)
def test_bad_builtin_parameters(spec: str, match: str) -> None:
    with pytest.raises(ProbdiffError, match=match):
        load_dataset(spec)


@pytest.mark.parametrize("seed", [-1, 2**32, 1.5, "3"])
def test_bad_seed(seed: object) -> None:
    with pytest.raises(ProbdiffError, match="seed must be"):
        load_dataset("moons", seed=seed)  # type: ignore[arg-type]


def test_empty_spec() -> None:
    with pytest.raises(ProbdiffError, match="empty data spec"):
        load_dataset("  ")


def test_npz_without_x_gives_named_arrays_that_builtins_refuse(tmp_path: Path) -> None:
    np.savez(tmp_path / "d.npz", data=np.zeros((3, 2)), y=np.zeros(3))
    ds = load_dataset(str(tmp_path / "d.npz"))
    assert sorted(ds.arrays()) == ["data", "y"] and ds.n == 3
    with pytest.raises(ProbdiffError, match=r"holds the arrays data, y and none named 'x'"):
        ds.flat()


def test_named_arrays_keep_dtypes_and_slice_together(tmp_path: Path) -> None:
    x = np.arange(12.0).reshape(6, 2)
    counts = np.array([0, 3, 1, 4, 1, 5])
    np.savez(tmp_path / "d.npz", x=x, counts=counts)
    ds = load_dataset(str(tmp_path / "d.npz"))
    arrays = ds.arrays()
    assert arrays["counts"].dtype.kind == "i" and arrays["x"].dtype == np.float64
    np.testing.assert_array_equal(ds.x, x)  # x also serves the built-in models
    part = ds.subset([1, 4])
    np.testing.assert_array_equal(part.arrays()["counts"], [3, 1])
    np.testing.assert_array_equal(part.arrays()["x"], x[[1, 4]])


def test_csv_header_columns_are_named_arrays(tmp_path: Path) -> None:
    path = tmp_path / "d.csv"
    path.write_text("x1,x2,y\n1,2,0.5\n3,4,1.5\n5,6,-2\n")
    ds = load_dataset(str(path))
    arrays = ds.arrays()
    assert list(arrays) == ["x1", "x2", "y"]
    np.testing.assert_array_equal(arrays["y"], [0.5, 1.5, -2.0])
    assert ds.y is None  # a numeric target, not class labels
    np.testing.assert_array_equal(ds.x, [[1, 2], [3, 4], [5, 6]])


def test_one_dimensional_array(tmp_path: Path) -> None:
    """One value per datum: a user's model takes it as model(x); the built-ins refuse it."""
    np.save(tmp_path / "d.npy", np.arange(5.0))
    ds = load_dataset(str(tmp_path / "d.npy"))
    np.testing.assert_array_equal(ds.arrays(), np.arange(5.0))
    with pytest.raises(ProbdiffError, match=r"need at least 2-D: \(N, D\)"):
        ds.flat()


def test_five_dimensional_array(tmp_path: Path) -> None:
    np.save(tmp_path / "d.npy", np.zeros((2, 1, 1, 1, 1)))
    with pytest.raises(ProbdiffError, match=r"at most 4-D"):
        load_dataset(str(tmp_path / "d.npy"))


@pytest.mark.parametrize("suffix", [".npy", ".npz", ".csv"])
def test_empty_data(tmp_path: Path, suffix: str) -> None:
    path = tmp_path / f"d{suffix}"
    if suffix == ".npy":
        np.save(path, np.zeros((0, 3)))
    elif suffix == ".npz":
        np.savez(path, x=np.zeros((0, 3)))
    else:
        path.write_text("a,b\n")
    with pytest.raises(ProbdiffError, match=r"holds no data \(0 rows\)"):
        load_dataset(str(path))


def test_empty_event_shape(tmp_path: Path) -> None:
    np.save(tmp_path / "d.npy", np.zeros((3, 0)))
    with pytest.raises(ProbdiffError, match="empty event shape"):
        load_dataset(str(tmp_path / "d.npy"))


def test_non_finite_values(tmp_path: Path) -> None:
    x = np.zeros((6, 2))
    x[3, 1] = np.nan
    x[5, 0] = np.inf
    np.save(tmp_path / "d.npy", x)
    with pytest.raises(ProbdiffError, match=r"has 2 NaN/inf entries \(first in row 3\)"):
        load_dataset(str(tmp_path / "d.npy"))


def test_non_finite_in_csv(tmp_path: Path) -> None:
    path = tmp_path / "d.csv"
    path.write_text("1,2\n3,nan\n")
    with pytest.raises(ProbdiffError, match=r"has 1 NaN/inf entries \(first in row 1\)"):
        load_dataset(str(path))


def test_non_numeric_npy(tmp_path: Path) -> None:
    np.save(tmp_path / "d.npy", np.array([["a", "b"], ["c", "d"]]))
    with pytest.raises(ProbdiffError, match=r"x in .* is not numeric \(dtype <U1\)"):
        load_dataset(str(tmp_path / "d.npy"))


def test_object_array_npz(tmp_path: Path) -> None:
    np.savez(tmp_path / "d.npz", x=np.array([[1, "a"]], dtype=object))
    with pytest.raises(ProbdiffError, match=r"cannot read arrays of .*d\.npz"):
        load_dataset(str(tmp_path / "d.npz"))


def test_non_numeric_csv_cell(tmp_path: Path) -> None:
    path = tmp_path / "d.csv"
    path.write_text("a,b\n1,2\n3,oops\n")
    with pytest.raises(ProbdiffError, match=r"line 3, column 'b': non-numeric value 'oops'"):
        load_dataset(str(path))


def test_ragged_csv(tmp_path: Path) -> None:
    path = tmp_path / "d.csv"
    path.write_text("1,2\n3\n")
    with pytest.raises(ProbdiffError, match=r"line 2: 1 columns, expected 2"):
        load_dataset(str(path))


def test_y_length_mismatch(tmp_path: Path) -> None:
    np.savez(tmp_path / "d.npz", x=np.zeros((4, 2)), y=np.zeros(3, dtype=int))
    with pytest.raises(ProbdiffError, match=r"differ in rows \(x 4, y 3\)"):
        load_dataset(str(tmp_path / "d.npz"))


def test_corrupt_files(tmp_path: Path) -> None:
    (tmp_path / "bad.npz").write_bytes(b"not a zip file")
    with pytest.raises(ProbdiffError, match=r"cannot read .*bad\.npz.* as \.npz"):
        load_dataset(str(tmp_path / "bad.npz"))
    (tmp_path / "bad.npy").write_bytes(b"\x00\x01garbage")
    with pytest.raises(ProbdiffError, match=r"cannot read .*bad\.npy.* as \.npy"):
        load_dataset(str(tmp_path / "bad.npy"))
    (tmp_path / "bad.csv").write_bytes(b"\xff\xfe\xfa,1\n")
    with pytest.raises(ProbdiffError, match=r"cannot read .*bad\.csv.* as CSV text"):
        load_dataset(str(tmp_path / "bad.csv"))


def test_unsupported_extension(tmp_path: Path) -> None:
    (tmp_path / "d.txt").write_text("1,2\n")
    with pytest.raises(ProbdiffError, match=r"unsupported data file .*d\.txt"):
        load_dataset(str(tmp_path / "d.txt"))


def test_png_folder_mixed_sizes(tmp_path: Path) -> None:
    _write_png(tmp_path / "a.png", np.zeros((4, 4)), "L")
    _write_png(tmp_path / "b.png", np.zeros((5, 4)), "L")
    with pytest.raises(ProbdiffError, match=r"differ in size: 'a\.png' is 4x4 but 'b\.png' is 4x5"):
        load_dataset(str(tmp_path))


def test_png_folder_undecodable(tmp_path: Path) -> None:
    _write_png(tmp_path / "a.png", np.zeros((4, 4)), "L")
    (tmp_path / "broken.png").write_bytes(b"this is not a png")
    with pytest.raises(ProbdiffError, match=r"cannot decode image .*broken\.png"):
        load_dataset(str(tmp_path))


def test_png_folder_empty(tmp_path: Path) -> None:
    (tmp_path / "readme.txt").write_text("no images here")
    with pytest.raises(ProbdiffError, match=r"no PNG images in folder"):
        load_dataset(str(tmp_path))


def test_error_messages_are_one_line(tmp_path: Path) -> None:
    (tmp_path / "bad.npz").write_bytes(b"PK\x03\x04 truncated")
    with pytest.raises(ProbdiffError) as info:
        load_dataset(str(tmp_path / "bad.npz"))
    assert "\n" not in str(info.value)


# ----------------------------------------------------------------------------- Dataset


def test_dataset_subset_and_flat() -> None:
    ds = load_dataset("digits:n=10")
    sub = ds.subset([2, 5])
    assert sub.n == 2 and sub.name == "digits" and sub.kind == "image" and sub.meta is ds.meta
    np.testing.assert_array_equal(sub.y, ds.y[[2, 5]])
    assert ds.subset(3).x.shape == (1, 1, 8, 8)
    assert ds.subset(slice(0, 4)).n == 4
    flat = ds.flat()
    assert flat.shape == (10, 64) and np.shares_memory(flat, ds.x)
    assert "digits" in repr(ds) and len(repr(ds)) < 200


def test_dataset_rejects_bad_construction() -> None:
    with pytest.raises(ProbdiffError, match="kind must be"):
        Dataset(np.zeros((2, 2)), None, "t", "table")
    with pytest.raises(ProbdiffError, match="y has 3 entries but x has 2 rows"):
        Dataset(np.zeros((2, 2)), np.zeros(3, dtype=int), "t", "vector")


# ----------------------------------------------------------------------------- train/test split


def test_train_test_split_sizes_disjoint_and_seeded() -> None:
    ds = load_dataset("moons:n=100")
    train, test = train_test_split(ds, 0.25, seed=3)
    assert (train.n, test.n) == (75, 25)
    rows = {tuple(r) for r in train.x} | {tuple(r) for r in test.x}
    assert len(rows) == 100
    assert not {tuple(r) for r in train.x} & {tuple(r) for r in test.x}
    again_train, again_test = train_test_split(ds, 0.25, seed=3)
    np.testing.assert_array_equal(test.x, again_test.x)
    _, other_test = train_test_split(ds, 0.25, seed=4)
    assert not np.array_equal(test.x, other_test.x)


def test_train_test_split_edges() -> None:
    ds = load_dataset("moons:n=10")
    train, test = train_test_split(ds, 0.0, seed=0)
    assert train.n == 10 and test.n == 0 and test.x.shape == (0, 2) and test.flat().shape == (0, 2)
    _, tiny = train_test_split(ds, 0.01, seed=0)
    assert tiny.n == 1
    one = load_dataset("moons:n=1")
    with pytest.raises(ProbdiffError, match="leaves no training data"):
        train_test_split(one, 0.5, seed=0)
    with pytest.raises(ProbdiffError, match=r"test fraction must be in \[0, 1\), got 1\.0"):
        train_test_split(ds, 1.0, seed=0)
    with pytest.raises(ProbdiffError, match="test fraction must be in"):
        train_test_split(ds, -0.1, seed=0)


# ----------------------------------------------------------------------------- minibatches


def test_minibatches_cover_each_index_once_per_epoch() -> None:
    mb = Minibatches(23, 5, seed=0)
    assert len(mb) == 5
    epochs = [list(mb) for _ in range(3)]
    for batches in epochs:
        assert [len(b) for b in batches] == [5, 5, 5, 5, 3]
        np.testing.assert_array_equal(np.sort(np.concatenate(batches)), np.arange(23))
    assert not np.array_equal(np.concatenate(epochs[0]), np.concatenate(epochs[1]))
    assert mb.epoch == 3


def test_minibatches_deterministic_and_next_batch_crosses_epochs() -> None:
    a, b = Minibatches(17, 4, seed=7), Minibatches(17, 4, seed=7)
    stream_a = [a.next_batch() for _ in range(12)]
    stream_b = list(b) + list(b) + [b.next_batch() for _ in range(2)]
    for x, y in zip(stream_a, stream_b, strict=True):
        np.testing.assert_array_equal(x, y)
    other = Minibatches(17, 4, seed=8)
    assert not np.array_equal(np.concatenate(list(other)), np.concatenate(stream_a[:5]))


def test_minibatches_resume_from_state_dict() -> None:
    mb = Minibatches(50, 8, seed=2)
    for _ in range(10):
        mb.next_batch()
    state = mb.state_dict()
    expected = [mb.next_batch() for _ in range(9)]
    resumed = Minibatches(50, 8, seed=2)
    resumed.load_state_dict(dict(state))
    for x in expected:
        np.testing.assert_array_equal(resumed.next_batch(), x)
    with pytest.raises(ProbdiffError, match="saved with batch_size=8, not 9"):
        Minibatches(50, 9, seed=2).load_state_dict(state)


def test_minibatches_full_batch() -> None:
    for size in (None, 10, 99):
        mb = Minibatches(10, size, seed=1)
        assert len(mb) == 1
        for _ in range(3):
            np.testing.assert_array_equal(mb.next_batch(), np.arange(10))
        batches = list(mb)
        assert len(batches) == 1
        np.testing.assert_array_equal(batches[0], np.arange(10))


@pytest.mark.parametrize("args", [(0, 5, 0), (10, 0, 0), (10, 2.5, 0), (10, 3, -1)])
def test_minibatches_bad_arguments(args: tuple) -> None:
    with pytest.raises(ProbdiffError, match="must be"):
        Minibatches(*args)


def test_data_seed_keeps_one_data_set_across_fit_seeds(tmp_path):
    """--data-seed fixes the built-in synthetic data and its split: fits with --seed 1 and 2
    see the same rows (and their params differ); without it each seed draws its own data;
    a config without data_seed (older runs) reads its data back from --seed."""
    import json

    import numpy as np

    from probdiff import fit, open_run

    runs = {
        (seed, ds): fit(
            "gmm",
            data="blobs",
            steps=2,
            seed=seed,
            data_seed=ds,
            out=str(tmp_path / f"r{seed}-{ds}"),
            progress=False,
            posterior_samples=1,
        )
        for seed, ds in ((1, 5), (2, 5), (1, None), (2, None))
    }
    train = {k: r.split()[0].x for k, r in runs.items()}
    assert np.array_equal(train[(1, 5)], train[(2, 5)])
    assert not np.array_equal(train[(1, None)], train[(2, None)])
    assert not np.array_equal(runs[(1, 5)].params["locs"], runs[(2, 5)].params["locs"])
    config = json.loads((tmp_path / "r1-None" / "config.json").read_text())
    assert config["request"]["data_seed"] is None
    config["request"].pop("data_seed")
    (tmp_path / "r1-None" / "config.json").write_text(json.dumps(config))
    assert np.array_equal(open_run(tmp_path / "r1-None").split()[0].x, train[(1, None)])


@pytest.mark.parametrize("n,dim,k,std", [(1000, 2, 3, 1.0), (7, 10, 5, 0.5), (1, 1, 1, 2.0)])
@pytest.mark.parametrize("seed", [0, 1, 123])
def test_blobs_are_scikit_learns_make_blobs(n, dim, k, std, seed):
    """The built-in blobs generator draws exactly scikit-learn's make_blobs rows, labels and
    centres (runs recorded as "blobs" regenerate the same data)."""
    from sklearn.datasets import make_blobs as sklearn_blobs

    from probdiff.data.builtin import make_blobs

    want = sklearn_blobs(
        n_samples=n,
        n_features=dim,
        centers=k,
        cluster_std=std,
        random_state=seed,
        return_centers=True,
    )
    for a, b in zip(make_blobs(n, dim, k, std, seed), want):
        assert np.array_equal(a, b)
