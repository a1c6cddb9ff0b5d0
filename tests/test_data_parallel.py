"""Data-parallel training on JAX devices (NumPyro backend, ``--devices N``): each minibatch
split over a one-axis device mesh follows the single-device trajectory. Two CPU devices
come from XLA_FLAGS, which must be set before JAX starts: the fits run in a fresh process."""

import json
import os
import subprocess
import sys

import numpy as np

SCRIPT = """
import json, sys
import numpy as np
from probdiff import fit
out = {}
for devices in (1, 2):
    run = fit("gmm", data="blobs:n=400", steps=25, lr=0.05, backend="numpyro",
              batch_size=100, seed=3, dtype="float64", devices=devices, progress=False,
              posterior_samples=1, out=sys.argv[1] + f"/d{devices}")
    trace = run.idata.sample_stats["elbo"].values.ravel()
    out[devices] = {"trace": trace.tolist(), "locs": np.asarray(run.params["locs"]).tolist(),
                    "recorded": run.config["request"]["devices"]}
import jax
from probdiff.backends import get_backend
backend = get_backend("numpyro", devices=2)
batch = backend._split(backend.take(backend.array(np.zeros((8, 2))), np.arange(4)))
out["count"] = jax.device_count()
out["shards"] = [list(s.data.shape) for s in batch.addressable_shards]
print(json.dumps(out))
"""


def run_two_devices(tmp_path, script=SCRIPT, check=True):
    """``script`` in a process with two CPU devices: its printed JSON (or, with ``check``
    False, the finished process)."""
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=2"}
    proc = subprocess.run(
        [sys.executable, "-c", script, str(tmp_path)], env=env, capture_output=True, text=True
    )
    if not check:
        return proc
    assert proc.returncode == 0, proc.stderr[-2000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_two_devices_follow_the_single_device_trajectory(tmp_path):
    """GMM (enumerated assignments, point parameters: no Monte Carlo noise), float64,
    batches of 100 split 50/50 over two CPU devices: the per-step ELBO trace and the final
    means equal one device's to 1e-9 (only the order of the sums differs)."""
    out = run_two_devices(tmp_path)
    assert out["count"] == 2 and out["shards"] == [[2, 2], [2, 2]]  # rows split 2 + 2
    one, two = out["1"], out["2"]
    assert (one["recorded"], two["recorded"]) == (1, 2)
    np.testing.assert_allclose(two["trace"], one["trace"], rtol=1e-9)
    np.testing.assert_allclose(two["locs"], one["locs"], rtol=1e-9, atol=1e-12)
    assert one["trace"][-1] > one["trace"][0] + 0.1  # it trained


def test_devices_are_refused_with_their_reason(tmp_path, capsys):
    """Errors naming themselves (one line from the command line): more devices than JAX
    sees, --devices with the Pyro backend, a batch that does not split (at the first step);
    no run folder is left behind."""
    from helpers import cli

    cases = [
        (["--backend", "numpyro", "--devices", "64", "--batch-size", "64"], "JAX sees"),
        (["--backend", "pyro", "--devices", "2"], "torchrun"),
    ]
    for i, (extra, message) in enumerate(cases):
        out = tmp_path / f"r{i}"
        argv = ["fit", "gmm", "--data", "blobs:n=200", "--steps", "2", "--quiet"]
        code, _, err = cli(capsys, *argv, "--out", str(out), *extra)
        assert code != 0 and message in err and len(err.strip().splitlines()) == 1, err
        assert not out.exists()
    script = SCRIPT.replace("batch_size=100", "batch_size=99").replace("(1, 2)", "(2,)")
    proc = run_two_devices(tmp_path, script, check=False)
    assert proc.returncode != 0 and "does not split over 2 devices" in proc.stderr
    assert not (tmp_path / "d2").exists()  # refused at the first step, before a checkpoint
