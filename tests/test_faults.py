"""Nothing lost, nothing run that should not be: kills, locks, failures and divergence.

A SIGKILL at any moment (a random time, or exactly between writing a file's temporary copy
and moving it into place) leaves a folder from which ``--resume`` ends bit-identical to an
uninterrupted fit; a second writer is refused while the first holds the lock, and a killed
holder's lock is taken over; a fit that fails keeps its last checkpoint and resumes with a
lower learning rate.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from helpers import cli

from probdiff.cli import main
from probdiff.runfolder import RunFolder

FIT = [
    "fit",
    "gmm",
    "--data",
    "mixture2d:n=2000",
    "--steps",
    "300",
    "--batch-size",
    "100",
    "--checkpoint-every",
    "20",
    "--quiet",
    "--posterior-samples",
    "5",
]


def spawn(argv, env=None):
    return subprocess.Popen(
        [sys.executable, "-m", "probdiff", *map(str, argv)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env={**os.environ, **(env or {})},
    )


def params(folder: Path) -> dict:
    with np.load(folder / "params.npz") as f:
        return {k: f[k] for k in f.files}


def snapshot(folder: Path) -> dict:
    return {
        p.relative_to(folder).as_posix(): p.read_bytes()
        for p in sorted(folder.rglob("*"))
        if p.is_file() and p.name != ".lock"
    }


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    out = tmp_path_factory.mktemp("ref") / "run"
    assert main([*FIT, "--out", str(out)]) == 0
    return params(out)


def resume_until_done(out: Path, capsys) -> None:
    """--resume (from the last checkpoint, or from the start); a folder killed before its
    first config write takes a new fit instead."""
    if (out / "config.json").exists():
        code, _, err = cli(capsys, "fit", "gmm", "--out", out, "--resume", "--quiet")
    else:
        code, _, err = cli(capsys, *FIT, "--out", out)
    assert code == 0, err


@pytest.mark.slow
@pytest.mark.parametrize(
    "fault",
    [
        "config.json:1",
        "checkpoint:1",
        "checkpoint:4",
        "inference_data.nc:1",
        "metrics.json:1",
        "config.json:2",
    ],
)
def test_kill_between_a_write_and_its_rename_then_resume(tmp_path, capsys, reference, fault):
    out = tmp_path / "run"
    proc = spawn([*FIT, "--out", out], env={"PROBDIFF_FAULT_KILL": fault})
    proc.wait(timeout=300)
    assert proc.returncode == -signal.SIGKILL, proc.stderr.read()
    resume_until_done(out, capsys)
    assert not list(out.glob(".*.tmp")), "leftover temporaries are cleaned"
    ours = params(out)
    assert set(ours) == set(reference)
    for k in ours:
        np.testing.assert_array_equal(ours[k], reference[k], err_msg=k)


@pytest.mark.slow
def test_kill_at_random_moments_then_resume(tmp_path, capsys, reference):
    """SIGKILL at 10 random moments of the same fit (startup, training, checkpoints, the work
    after training): every resume ends bit-identical to the uninterrupted fit."""
    rng = np.random.default_rng(0)
    survived = 0
    for i, delay in enumerate(rng.uniform(1.0, 6.0, size=10)):
        out = tmp_path / f"run{i}"
        proc = spawn([*FIT, "--out", out])
        time.sleep(delay)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=60)
        if proc.returncode == 0 and (out / "params.npz").exists():
            continue  # finished before the kill
        resume_until_done(out, capsys)
        ours = params(out)
        for k in ours:
            np.testing.assert_array_equal(ours[k], reference[k], err_msg=f"kill {i}: {k}")
        survived += 1
    assert survived >= 6


@pytest.mark.slow
@pytest.mark.parametrize("command", [["evaluate", "--json"], ["sample", "-n", "2000"]])
def test_kill_during_evaluate_or_sample_leaves_a_usable_run(tmp_path, capsys, command):
    out = tmp_path / "run"
    assert main([*FIT, "--out", str(out)]) == 0
    # killed as it renames its one output into place
    fault = {"evaluate": "metrics.json:1", "sample": "default-seed0-n2000.npz:1"}[command[0]]
    proc = spawn([command[0], out, *command[1:]], env={"PROBDIFF_FAULT_KILL": fault})
    proc.wait(timeout=120)
    assert proc.returncode != 0  # the fault fired
    assert not (out / "samples" / "default-seed0-n2000.npz").exists()
    # a killed write may leave a temporary, which the next command that locks removes
    code, _, err = cli(capsys, command[0], out, *command[1:])
    assert code == 0, err
    assert not list(out.glob("**/.*.tmp"))
    if command[0] == "sample":  # the killed write left no samples behind, the rerun wrote them
        assert np.load(out / "samples" / "default-seed0-n2000.npz")["x"].shape[0] == 2000
    assert cli(capsys, "report", out)[0] == 0


def test_a_second_writer_is_refused_and_a_dead_holders_lock_is_taken_over(tmp_path, capsys):
    out = tmp_path / "run"
    out.mkdir()
    with RunFolder(out).lock("test holder"):
        code, _, err = cli(
            capsys, "fit", "gmm", "--data", "mixture2d:n=200", "--out", out, "--steps", 5, "--quiet"
        )
        assert code == 2 and err.count("\n") == 1, err
        assert f"is in use by pid {os.getpid()}" in err and "test holder" in err, err
    # a holder killed with the lock held: the kernel releases it, the next fit proceeds
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            (
                "import sys, time\nfrom probdiff.runfolder import RunFolder\n"
                f"with RunFolder({str(out)!r}).lock('doomed'):\n"
                "    print('locked', flush=True)\n    time.sleep(600)\n"
            ),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert holder.stdout.readline().strip() == "locked"
    code, _, err = cli(
        capsys, "fit", "gmm", "--data", "mixture2d:n=200", "--out", out, "--steps", 5, "--quiet"
    )
    assert code == 2 and "in use by pid" in err and "doomed" in err, err
    holder.kill()
    holder.wait()
    code, _, err = cli(
        capsys,
        "fit",
        "gmm",
        "--data",
        "mixture2d:n=200",
        "--out",
        out,
        "--steps",
        5,
        "--quiet",
        "--posterior-samples",
        2,
    )
    assert code == 0, err
    config = json.loads((out / "config.json").read_text())
    assert config["status"] == "complete"


DIVERGING = [  # (model, extra options, learning rate that diverges)
    ("gmm", ["--backend", "pyro"], "1e30"),
    ("gmm", ["--backend", "numpyro"], "1e30"),
    ("vae", ["--backend", "pyro", "--hidden", "16"], "1e3"),
    ("vae", ["--backend", "numpyro", "--hidden", "16"], "1e3"),
    ("ddpm", ["--T", "10", "--hidden", "16", "--ode-rows", "0"], "1e30"),
    ("ncsn", ["--hidden", "16"], "1e30"),
    ("sde", ["--hidden", "16", "--ode-rows", "0"], "1e30"),
]


@pytest.mark.parametrize("model,extra,lr", DIVERGING, ids=lambda v: str(v))
def test_divergence_keeps_the_checkpoint_and_resumes_with_a_lower_lr(
    tmp_path, capsys, model, extra, lr
):
    data = "digits:n=100" if model == "vae" else "mixture2d:n=200"
    out = tmp_path / "run"
    # a few good steps first (checkpointed at their end), then the learning rate that diverges
    assert (
        main(
            [
                "fit",
                model,
                "--data",
                data,
                "--out",
                str(out),
                "--steps",
                "3",
                "--checkpoint-every",
                "1000",
                "--quiet",
                "--posterior-samples",
                "2",
                *extra,
                "--eval-every",
                "0",
            ]
        )
        == 0
    )
    code, _, err = cli(capsys, "fit", model, "--out", out, "--resume", "--steps", 60, "--lr", lr)
    assert code == 2 and err.count("\n") == 1, err
    assert "diverged at step" in err and "--resume" in err and "lower --lr" in err, err
    config = json.loads((out / "config.json").read_text())
    assert config["status"] == "failed" and "diverged" in config["error"]
    assert (out / "checkpoint").is_file()
    code, _, err = cli(capsys, "fit", model, "--out", out, "--resume", "--lr", "1e-3")
    assert code == 0, err
    config = json.loads((out / "config.json").read_text())
    assert config["status"] == "complete" and "error" not in config
    assert [h["lr"] for h in config["history"]][-2:] == [float(lr), 1e-3]
    assert config["request"]["settings"]["lr"] == 1e-3


def test_a_new_fit_that_fails_removes_only_what_it_made(tmp_path, capsys):
    mine = tmp_path / "mine"
    mine.mkdir()  # the user's own empty folder stays, empty
    code, _, err = cli(
        capsys,
        "fit",
        "gmm",
        "--data",
        "mixture2d:n=200",
        "--out",
        mine,
        "--steps",
        30,
        "--lr",
        "1e30",
        "--quiet",
    )
    assert code == 2 and "diverged" in err
    assert mine.is_dir() and list(mine.iterdir()) == []
    new = tmp_path / "new"
    code, _, err = cli(
        capsys,
        "fit",
        "gmm",
        "--data",
        "mixture2d:n=200",
        "--out",
        new,
        "--steps",
        30,
        "--lr",
        "1e30",
        "--quiet",
    )
    assert code == 2 and not new.exists()


def test_a_corrupt_checkpoint_changes_nothing(tmp_path, capsys):
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
                "2",
            ]
        )
        == 0
    )
    (out / "checkpoint").write_bytes(b"not a checkpoint")
    before = snapshot(out)
    code, _, err = cli(capsys, "fit", "gmm", "--out", out, "--resume", "--steps", 40)
    assert code == 2 and err.count("\n") == 1 and "checkpoint" in err, err
    assert snapshot(out) == before  # status included


def test_resume_acts_on_the_folder_given_wherever_it_was_moved(tmp_path, capsys):
    first = tmp_path / "first"
    assert (
        main(
            [
                "fit",
                "gmm",
                "--data",
                "mixture2d:n=200",
                "--out",
                str(first),
                "--steps",
                "20",
                "--quiet",
                "--posterior-samples",
                "2",
            ]
        )
        == 0
    )
    moved = tmp_path / "elsewhere" / "moved"
    moved.parent.mkdir()
    first.rename(moved)
    code, _, err = cli(capsys, "fit", "gmm", "--out", moved, "--resume", "--steps", 40)
    assert code == 0, err
    assert json.loads((moved / "metrics.json").read_text())["steps"] == 40
    assert not first.exists()
    code, _, err = cli(capsys, "fit", "vae", "--out", moved, "--resume")
    assert code == 2 and "holds a fit of gmm, not vae" in err


def test_edge_options_are_one_line_errors(tmp_path, capsys):
    run = tmp_path / "run"
    assert (
        main(
            [
                "fit",
                "gmm",
                "--data",
                "mixture2d:n=100",
                "--out",
                str(run),
                "--steps",
                "10",
                "--quiet",
                "--posterior-samples",
                "2",
            ]
        )
        == 0
    )
    afile = tmp_path / "afile"
    afile.write_text("x")
    cases = [
        (
            ["fit", "gmm", "--data", "mixture2d", "--out", tmp_path / "a", "--seed", 2**32 - 1],
            "--seed: must be in 0..4294967294",
        ),
        (
            ["fit", "gmm", "--data", "mixture2d", "--out", tmp_path / "a", "--steps", "1e20"],
            "--steps: expected an integer",
        ),
        (
            [
                "fit",
                "gmm",
                "--data",
                "mixture2d",
                "--out",
                tmp_path / "a",
                "--checkpoint-every",
                -1,
            ],
            "--checkpoint-every: must be >= 0",
        ),
        (["fit", "gmm", "--data", "mixture2d", "--out", afile / "run"], "is a file, not a folder"),
        (["fit", "gmm", "--data", "mixture2d", "--out", afile], "is a file, not a folder"),
        (["sample", run, "--seed", -1], "--seed: must be in 0..4294967294"),
        (["sample", run, "--sampler", "ddim:5"], "has one sampler: drop --sampler"),
        (["fit", "vae", "--out", run, "--resume"], "holds a fit of gmm, not vae"),
        (["fit", "gmm", "--out", run, "--resume", "--batch-size", 10], "only --steps, --lr and"),
        (["fit", "gmm", "--out", run, "--resume", "--steps", 5], "below the run's 10"),
        (["report", tmp_path / "nothing"], "is not a folder"),
    ]
    before = {p.name: p.read_bytes() for p in run.iterdir() if p.is_file() and p.name != ".lock"}
    for argv, message in cases:
        code, _, err = cli(capsys, *argv)
        assert code == 2 and err.count("\n") == 1 and message in err, (argv, err)
    after = {p.name: p.read_bytes() for p in run.iterdir() if p.is_file() and p.name != ".lock"}
    assert after == before and not (tmp_path / "a").exists()
