"""The built-in data sets, seeded and downloaded from nowhere: blobs, moons, swiss roll, a 2-D
mixture with a known density, scikit-learn's digits and patches of scikit-image's photos. A spec
is ``name`` or ``name:key=value,...``."""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from probdiff.data.dataset import _INTEGER_8BIT, Dataset, _finish
from probdiff.errors import ProbdiffError, first_line

BUILTIN_DATASETS: dict[str, str] = {
    "blobs": "isotropic Gaussian blobs, known density (n=1000, centers=3, dim=2, std=1.0)",
    "moons": "two interleaving half circles (n=1000, noise=0.05)",
    "swissroll": "2-D swiss roll (n=1000, noise=0.5)",
    "mixture2d": "fixed 3-component 2-D Gaussian mixture, known density (n=1000)",
    "digits": "scikit-learn 8x8 digits, 1x8x8 images with values 0..16 (n=1797)",
    "patches": "grayscale patches of scikit-image's bundled photos, values 0..255 (size=8, n=2000)",
}


_PATCH_IMAGES = ("camera", "coins", "moon", "text", "page")


_MIXTURE2D_WEIGHTS = (0.5, 0.3, 0.2)


_MIXTURE2D_LOCS = ((-2.0, -1.0), (2.0, -1.0), (0.0, 2.5))


_MIXTURE2D_SCALES = (0.6, 0.4, 0.5)


_DIGITS_N = 1797


@dataclass(frozen=True, eq=False)
class SphericalGaussianMixture:
    """Log density of a mixture of isotropic Gaussians (docs/equations.md (1.6)); callable on
    ``(..., D)`` arrays."""

    weights: np.ndarray  # (K,)
    locs: np.ndarray  # (K, D)
    scales: np.ndarray  # (K,) standard deviation per component

    def __call__(self, x: np.ndarray) -> np.ndarray:
        """Log density of each row of ``x``; returns shape ``x.shape[:-1]``."""
        x = np.asarray(x, dtype=np.float64)
        dim = self.locs.shape[1]
        if x.ndim < 1 or x.shape[-1] != dim:
            raise ValueError(f"log_prob expects rows of length {dim}, got shape {x.shape}")
        sq = np.sum((x[..., None, :] - self.locs) ** 2, axis=-1)  # (..., K)
        comp = (
            np.log(self.weights)
            - 0.5 * sq / self.scales**2
            - dim * np.log(self.scales)
            - 0.5 * dim * np.log(2.0 * np.pi)
        )
        top = np.max(comp, axis=-1, keepdims=True)
        return (top + np.log(np.sum(np.exp(comp - top), axis=-1, keepdims=True)))[..., 0]

    def as_meta(self) -> dict:
        """The parameters as a ``meta`` dictionary."""
        return {
            "weights": self.weights.copy(),
            "locs": self.locs.copy(),
            "scales": self.scales.copy(),
        }


def _parse_params(name: str, text: str) -> dict[str, str]:
    """Split ``key=value,key=value`` into a dict, rejecting malformed and duplicate keys."""
    params: dict[str, str] = {}
    for item in text.split(","):
        item = item.strip()
        if not item:
            continue
        key, eq, value = item.partition("=")
        key, value = key.strip(), value.strip()
        if not eq or not key:
            raise ProbdiffError(f"{name}: expected key=value in the data spec, got {item!r}")
        if key in params:
            raise ProbdiffError(f"{name}: key {key!r} given twice")
        params[key] = value
    return params


def _take_params(name: str, params: dict[str, str], schema: dict[str, tuple]) -> dict[str, Any]:
    """Convert ``params`` by ``schema`` (key -> (type, default, low, high)); reject unknown keys."""
    unknown = sorted(set(params) - set(schema))
    if unknown:
        raise ProbdiffError(
            f"{name}: unknown key(s) {', '.join(map(repr, unknown))} (known: {', '.join(schema)})"
        )
    out: dict[str, Any] = {}
    for key, (typ, default, low, high) in schema.items():
        out[key] = default if key not in params else _convert(name, key, params[key], typ)
        _check_range(name, key, out[key], low, high)
    return out


def _convert(name: str, key: str, text: str, typ: type) -> Any:
    """Parse one parameter value as ``int`` or ``float``."""
    try:
        value = typ(text)
    except ValueError:
        kind = "an integer" if typ is int else "a number"
        raise ProbdiffError(f"{name}: {key} must be {kind}, got {text!r}") from None
    if typ is float and not math.isfinite(value):
        raise ProbdiffError(f"{name}: {key} must be finite, got {text!r}")
    return value


def _check_range(name: str, key: str, value: Any, low: Any, high: Any) -> None:
    """Raise unless ``low <= value <= high`` (``low`` exclusive when given as a 1-tuple)."""
    if isinstance(low, tuple):
        if value <= low[0]:
            raise ProbdiffError(f"{name}: {key} must be > {low[0]}, got {value}")
    elif low is not None and value < low:
        raise ProbdiffError(f"{name}: {key} must be >= {low}, got {value}")
    if high is not None and value > high:
        raise ProbdiffError(f"{name}: {key} must be <= {high}, got {value}")


def make_blobs(n: int, dim: int, k: int, std: float, seed: int):
    """scikit-learn's ``make_blobs`` draws (same random stream, same rows; tested against it)
    without importing scikit-learn's dataset module (0.8 s): centres uniform on [-10, 10]^dim,
    n // k points per centre (the first n % k centres one more) from N(centre, std^2 I), then
    the rows shuffled. Returns (x, labels, centres)."""
    rng = np.random.RandomState(seed)
    centers = rng.uniform(-10.0, 10.0, size=(k, dim))
    counts = [n // k + (i < n % k) for i in range(k)]
    x = np.concatenate(
        [rng.normal(loc=centers[i], scale=std, size=(c, dim)) for i, c in enumerate(counts)]
    )
    y = np.repeat(np.arange(k), counts)
    order = np.arange(n)
    rng.shuffle(order)
    return x[order], y[order], centers


def _blobs(params: dict[str, str], seed: int) -> Dataset:
    """sklearn ``make_blobs`` (:func:`make_blobs`) with its equal-weight spherical mixture
    density."""
    p = _take_params(
        "blobs",
        params,
        {
            "n": (int, 1000, 1, None),
            "centers": (int, 3, 1, None),
            "dim": (int, 2, 1, None),
            "std": (float, 1.0, (0.0,), None),
        },
    )
    x, y, centers = make_blobs(p["n"], p["dim"], p["centers"], p["std"], seed)
    k = p["centers"]
    density = SphericalGaussianMixture(
        np.full(k, 1.0 / k), np.asarray(centers, dtype=np.float64), np.full(k, p["std"])
    )
    meta = density.as_meta() | {"params": p | {"seed": seed}}
    return _finish(x, y, "blobs", "vector", "blobs", meta=meta, log_prob=density)


def _moons(params: dict[str, str], seed: int) -> Dataset:
    """sklearn ``make_moons``."""
    from sklearn.datasets import make_moons

    p = _take_params(
        "moons", params, {"n": (int, 1000, 1, None), "noise": (float, 0.05, 0.0, None)}
    )
    x, y = make_moons(n_samples=p["n"], noise=p["noise"], random_state=seed)
    return _finish(x, y, "moons", "vector", "moons", meta={"params": p | {"seed": seed}})


def _swissroll(params: dict[str, str], seed: int) -> Dataset:
    """sklearn ``make_swiss_roll`` projected on its columns 0 and 2, divided by 5."""
    from sklearn.datasets import make_swiss_roll

    p = _take_params(
        "swissroll", params, {"n": (int, 1000, 1, None), "noise": (float, 0.5, 0.0, None)}
    )
    x3, _ = make_swiss_roll(n_samples=p["n"], noise=p["noise"], random_state=seed)
    x = x3[:, [0, 2]] / 5.0
    return _finish(x, None, "swissroll", "vector", "swissroll", meta={"params": p | {"seed": seed}})


def mixture2d_density() -> SphericalGaussianMixture:
    """The fixed density of the ``mixture2d`` built-in."""
    return SphericalGaussianMixture(
        np.array(_MIXTURE2D_WEIGHTS), np.array(_MIXTURE2D_LOCS), np.array(_MIXTURE2D_SCALES)
    )


def _mixture2d(params: dict[str, str], seed: int) -> Dataset:
    """Samples of :func:`mixture2d_density`; ``y`` is the component of each sample."""
    p = _take_params("mixture2d", params, {"n": (int, 1000, 1, None)})
    density = mixture2d_density()
    rng = np.random.default_rng(seed)
    comp = rng.choice(len(density.weights), size=p["n"], p=density.weights)
    x = density.locs[comp] + density.scales[comp, None] * rng.standard_normal((p["n"], 2))
    meta = density.as_meta() | {"params": p | {"seed": seed}}
    return _finish(x, comp, "mixture2d", "vector", "mixture2d", meta=meta, log_prob=density)


def _digits(params: dict[str, str], seed: int) -> Dataset:
    """scikit-learn's bundled 8x8 digits as ``(N, 1, 8, 8)`` images with values 0..16."""
    from sklearn.datasets import load_digits

    p = _take_params("digits", params, {"n": (int, _DIGITS_N, 1, _DIGITS_N)})
    bunch = load_digits()
    x = bunch.images[: p["n"], None, :, :]
    meta = {"integer": True, "levels": 17, "low": 0.0, "high": 16.0, "params": p}
    return _finish(x, bunch.target[: p["n"]], "digits", "image", "digits", meta=meta)


@functools.lru_cache(maxsize=1)
def _patch_sources() -> tuple[np.ndarray, ...]:
    """The grayscale photos shipped inside the scikit-image package (read from disk, no fetcher)."""
    try:
        import skimage.data
    except ImportError:
        raise ProbdiffError(
            "the patches data set reads scikit-image's bundled photos: pip install 'probdiff[images]'"
        ) from None
    from PIL import Image

    folder = Path(skimage.data.__file__).parent
    images = []
    for stem in _PATCH_IMAGES:
        path = folder / f"{stem}.png"
        try:
            with Image.open(path) as im:
                images.append(np.asarray(im.convert("L")))
        except Exception as err:  # a broken scikit-image install, not user input
            reason = first_line(err)
            raise ProbdiffError(
                f"patches: cannot read bundled image {str(path)!r}: {reason}"
            ) from None
    return tuple(images)


def _patches(params: dict[str, str], seed: int) -> Dataset:
    """Random square crops of the bundled photos; ``y`` is the index of the source photo."""
    sources = _patch_sources()
    max_size = min(min(im.shape) for im in sources)
    p = _take_params("patches", params, {"size": (int, 8, 1, max_size), "n": (int, 2000, 1, None)})
    size, n = p["size"], p["n"]
    rng = np.random.default_rng(seed)
    which = rng.integers(0, len(sources), size=n)
    x = np.empty((n, 1, size, size), dtype=np.float64)
    offsets = np.arange(size)
    for k, image in enumerate(sources):
        rows = np.flatnonzero(which == k)
        tops = rng.integers(0, image.shape[0] - size + 1, size=len(rows))
        lefts = rng.integers(0, image.shape[1] - size + 1, size=len(rows))
        r = tops[:, None, None] + offsets[None, :, None]
        c = lefts[:, None, None] + offsets[None, None, :]
        x[rows, 0] = image[r, c]
    meta = _INTEGER_8BIT | {"sources": list(_PATCH_IMAGES), "params": p | {"seed": seed}}
    return _finish(x, which, "patches", "image", "patches", meta=meta)


_BUILDERS: dict[str, Callable[[dict[str, str], int], Dataset]] = {
    "blobs": _blobs,
    "moons": _moons,
    "swissroll": _swissroll,
    "mixture2d": _mixture2d,
    "digits": _digits,
    "patches": _patches,
}
