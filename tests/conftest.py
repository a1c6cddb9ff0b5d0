"""Test harness: CPU only, seeded, Pyro validation on, a clean parameter store per test."""

import os
from pathlib import Path

os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")
os.environ.setdefault("JAX_PLATFORMS", "cpu")
# JAX's persistent compilation cache: the suite compiles the same NumPyro programs in many
# tests (and again in every run); kept beside the checkout, shared by the test workers
os.environ.setdefault(
    "JAX_COMPILATION_CACHE_DIR", str(Path(__file__).resolve().parents[1] / ".cache" / "jax")
)
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", "0")

import numpy as np
import pyro
import pytest
import torch

# the test problems are small: one intra-op thread avoids OpenMP spin-waiting, which on a
# loaded 2-core machine makes each tiny op cost milliseconds
torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _clean_state():
    pyro.clear_param_store()
    pyro.set_rng_seed(0)
    pyro.enable_validation(True)
    np.random.seed(0)  # noqa: NPY002 (code under test may use the legacy global stream)
    torch.set_default_dtype(torch.float32)
    yield
    pyro.clear_param_store()
