"""Data sets: seeded built-ins, files on disk, arrays from Python, train/test splits and
minibatches.

A data spec is either a built-in name, optionally with parameters
(``moons``, ``moons:n=2000,noise=0.05``), or a path to a ``.npz`` / ``.npy`` / ``.csv`` file
or a folder of PNG images. A built-in name wins over a file of the same name.
Nothing here downloads anything. Bad input raises :class:`ProbdiffError` with a one-line
message naming the bad value or path.

One concept per module: :mod:`~probdiff.data.dataset` (the type and its checks),
:mod:`~probdiff.data.builtin`, :mod:`~probdiff.data.files`, :mod:`~probdiff.data.spec` (what
the API and command line accept) and :mod:`~probdiff.data.batches` (splits, minibatches).
"""

from probdiff.data.batches import Minibatches, evaluation_subset, train_test_split
from probdiff.data.builtin import (
    BUILTIN_DATASETS,
    SphericalGaussianMixture,
    mixture2d_density,
)
from probdiff.data.dataset import Dataset, dataset_from_arrays
from probdiff.data.files import data_sha256
from probdiff.data.spec import as_dataset, load_dataset

__all__ = [
    "BUILTIN_DATASETS",
    "Dataset",
    "Minibatches",
    "SphericalGaussianMixture",
    "as_dataset",
    "data_sha256",
    "dataset_from_arrays",
    "evaluation_subset",
    "load_dataset",
    "mixture2d_density",
    "train_test_split",
]
