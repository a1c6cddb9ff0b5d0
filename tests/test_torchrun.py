"""Data-parallel Pyro fits under torchrun (probdiff/distributed.py): two gloo processes on
CPU, each with half of every minibatch and the gradients averaged, follow the trajectory of
one process with the whole batch; process 0 alone writes the run; resume works the same."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np

BIN = Path(sys.executable).parent
ARGS = ["gmm", "--data", "blobs:n=400", "--batch-size", "100", "--dtype", "float64"]
ARGS += ["--seed", "3", "--lr", "0.05", "--quiet", "--eval-every", "5"]


def probdiff(*argv, processes=1):
    if processes == 1:
        cmd = [str(BIN / "probdiff"), *argv]
    else:
        cmd = [str(BIN / "torchrun"), "--nproc-per-node", str(processes), "-m", "probdiff"]
        cmd += list(argv)
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE")}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    return proc


def trace(folder: Path, name: str = "elbo") -> np.ndarray:
    import arviz as az

    stats = az.from_netcdf(folder / "inference_data.nc").sample_stats
    return stats[name].values.ravel()


def test_two_processes_follow_one_and_resume_alike(tmp_path):
    """GMM (enumerated assignments, point parameters: no Monte Carlo noise), float64: the
    per-step ELBO trace, the held-out trace and the parameters of 2 processes equal those of
    one to 1e-9; config.json records the world size; a 2-process fit stopped at step 10 and
    resumed to 25 equals the uninterrupted one."""
    one, two = tmp_path / "one", tmp_path / "two"
    assert probdiff("fit", *ARGS, "--steps", "25", "--out", str(one)).returncode == 0
    proc = probdiff("fit", *ARGS, "--steps", "25", "--out", str(two), processes=2)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.count("wrote ") == 1  # process 0 alone reports (and writes)
    np.testing.assert_allclose(trace(two), trace(one), rtol=1e-9)
    held = trace(one, "test_elbo")
    assert np.isfinite(held).sum() == 5  # --eval-every 5 over 25 steps
    np.testing.assert_allclose(trace(two, "test_elbo"), held, rtol=1e-9)
    p1, p2 = np.load(one / "params.npz"), np.load(two / "params.npz")
    for k in p1.files:
        np.testing.assert_allclose(p2[k], p1[k], rtol=1e-9, atol=1e-12)
    assert json.loads((two / "config.json").read_text())["world_size"] == 2
    assert json.loads((one / "config.json").read_text())["world_size"] == 1

    part = tmp_path / "part"
    cut = ["--steps", "10", "--checkpoint-every", "5"]
    proc = probdiff("fit", *ARGS, *cut, "--out", str(part), processes=2)
    assert proc.returncode == 0, proc.stderr[-3000:]
    proc = probdiff("fit", "gmm", "--resume", "--steps", "25", "--out", str(part), processes=2)
    assert proc.returncode == 0, proc.stderr[-3000:]
    np.testing.assert_allclose(trace(part), trace(one), rtol=1e-9)


def test_torchrun_needs_a_batch_that_splits(tmp_path):
    """Under torchrun a fit needs --batch-size (each process a share of every batch), and
    the batch must split evenly; each refusal names itself and leaves no folder."""
    out = tmp_path / "r"
    proc = probdiff("fit", *ARGS[:3], "--steps", "2", "--out", str(out), processes=2)
    assert proc.returncode != 0 and "--batch-size is needed under torchrun" in proc.stderr
    assert not out.exists()
    args = [a if a != "100" else "99" for a in ARGS]
    proc = probdiff("fit", *args, "--steps", "2", "--out", str(out), processes=2)
    assert proc.returncode != 0 and "does not split over 2 processes" in proc.stderr
    assert not out.exists()  # refused at the first step: no checkpoint, so nothing kept
