"""Property-based checks (hypothesis) of every boundary: command-line options, data files and
run-folder files. Whatever the input, a command either succeeds or ends with exit 2 and one
line on stderr (never a traceback, never an internal error), and a command that fails leaves
the folder exactly as it was."""

from __future__ import annotations

import json
import os
import shutil
import string
import tempfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from probdiff.cli import main

# 25 examples per property in the default run (fixed, so runs repeat); HYPOTHESIS_EXAMPLES=N
# with HYPOTHESIS_RANDOM=1 searches wider
SETTINGS = settings(
    max_examples=int(os.environ.get("HYPOTHESIS_EXAMPLES", 25)),
    deadline=None,
    derandomize=not os.environ.get("HYPOTHESIS_RANDOM"),
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
JUNK = st.text(string.printable, max_size=12)


def run(capsys, argv) -> tuple[int, str]:
    capsys.readouterr()
    code = main([str(a) for a in argv])
    _, err = capsys.readouterr()
    assert code in (0, 2), (argv, code, err)
    if code == 2:
        lines = err.strip("\n").split("\n")
        assert lines[-1].startswith("probdiff: error:") and len(lines[-1]) > 17, err
        assert "Traceback" not in err
    return code, err


def snapshot(folder: Path) -> dict:
    return {
        p.relative_to(folder).as_posix(): p.read_bytes()
        for p in sorted(folder.rglob("*"))
        if p.is_file() and p.name != ".lock"
    }


def int_option(low: int, high: int):
    """Valid small values, and invalid ones of every kind."""
    return st.one_of(
        st.integers(low, high).map(str),
        st.integers(-(10**20), low - 1).map(str),
        st.just(str(10**20)),
        st.sampled_from(["1e20", "nan", "1.5", "", "-"]),
        JUNK,
    )


def float_option(low: float, high: float):
    return st.one_of(
        st.floats(low, high).map(repr),
        st.sampled_from(["nan", "inf", "-inf", "0", "-1", "1e400", "", "x"]),
        JUNK,
    )


OPTIONS = {
    "--steps": int_option(0, 8),
    "--batch-size": int_option(1, 60),
    "--lr": float_option(1e-4, 0.5),
    "--clip-norm": float_option(0.1, 100.0),
    "--seed": st.one_of(int_option(0, 2**32 - 2), st.just(str(2**32 - 1)), st.just(str(2**32))),
    "--restarts": int_option(1, 2),
    "--test-fraction": float_option(0.0, 0.9),
    "--posterior-samples": int_option(1, 5),
    "--checkpoint-every": int_option(0, 5),
    "--eval-every": int_option(0, 5),
    "--components": int_option(1, 4),
    "--backend": st.sampled_from(["pyro", "numpyro", "stan", ""]),
    "--dtype": st.sampled_from(["float32", "float64", "float16"]),
    "--inference": st.sampled_from(["svi", "em", "nuts", "hmc"]),
    "--device": st.sampled_from(["cpu", "cuda", "tpu"]),
    "--threads": int_option(1, 2),
    "--data": st.sampled_from(
        [
            "mixture2d:n=40",
            "moons:n=30",
            "blobs:n=20,dim=3",
            "mixture2d:n=0",
            "moons:noise=-1",
            "nope",
            "digits:n=abc",
            "",
        ]
    ),
}


@SETTINGS
@given(
    st.dictionaries(st.sampled_from(sorted(OPTIONS)), st.none(), max_size=6).flatmap(
        lambda keys: st.fixed_dictionaries({k: OPTIONS[k] for k in keys})
    )
)
def test_fit_options(capsys, options):
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "run"
        argv = ["fit", "gmm", "--out", out, "--quiet"]
        options.setdefault("--data", "mixture2d:n=40")
        options.setdefault("--steps", "3")
        options.setdefault("--posterior-samples", "2")
        for k, v in options.items():
            argv += [f"{k}={v}"]
        code, _ = run(capsys, argv)
        if code == 2:
            assert not out.exists() or snapshot(out) == {}


ARRAYS = hnp.arrays(
    dtype=st.sampled_from([np.float64, np.float32, np.int64, np.uint8, np.bool_, np.complex64]),
    shape=hnp.array_shapes(min_dims=0, max_dims=5, min_side=0, max_side=6),
    elements={"allow_nan": True, "allow_infinity": True} if False else None,
)


@SETTINGS
@given(
    st.one_of(
        ARRAYS.map(lambda a: ("npy", a)),
        st.dictionaries(st.sampled_from(["x", "y", "z"]), ARRAYS, max_size=3).map(
            lambda d: ("npz", d)
        ),
        st.binary(max_size=200).map(lambda b: ("bytes", b)),
        st.text(string.printable, max_size=200).map(lambda t: ("csv", t)),
        hnp.arrays(
            np.float64,
            hnp.array_shapes(min_dims=2, max_dims=2, min_side=1, max_side=8),
            elements=st.floats(allow_nan=True, allow_infinity=True),
        ).map(lambda a: ("npy", a)),
    )
)
def test_data_files(capsys, case):
    kind, content = case
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / (
            "d.npz" if kind in ("npz", "bytes") else "d.csv" if kind == "csv" else "d.npy"
        )
        if kind == "npy":
            np.save(path, content)
        elif kind == "npz":
            np.savez(path, **content)
        elif kind == "bytes":
            path.write_bytes(content)
        else:
            path.write_text(content)
        out = Path(tmp) / "run"
        code, _ = run(
            capsys,
            [
                "fit",
                "gmm",
                "--data",
                path,
                "--out",
                out,
                "--steps",
                "2",
                "--quiet",
                "--posterior-samples",
                "2",
                "--components",
                "1",
            ],
        )
        if code == 2:
            assert not out.exists()


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    out = tmp_path_factory.mktemp("finished") / "run"
    assert (
        main(
            [
                "fit",
                "gmm",
                "--data",
                "mixture2d:n=100",
                "--out",
                str(out),
                "--steps",
                "20",
                "--quiet",
                "--posterior-samples",
                "3",
            ]
        )
        == 0
    )
    return out


JSON_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-5, 10**12)
    | st.floats(allow_nan=True)
    | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3)
    ),
    max_leaves=6,
)


def _mutate_json(text: str, path: list, value, delete: bool) -> str:
    obj = json.loads(text)
    node = obj
    for key in path[:-1]:
        if not isinstance(node, dict) or key not in node:
            break
        node = node[key]
    if isinstance(node, dict):
        key = path[-1] if path[-1] in node else sorted(node)[len(path) % len(node)] if node else "k"
        if delete:
            node.pop(key, None)
        else:
            node[key] = value
    return json.dumps(obj)


MUTATIONS = st.one_of(
    st.tuples(
        st.sampled_from(
            ["params.npz", "inference_data.nc", "checkpoint", "metrics.json", "config.json"]
        ),
        st.sampled_from(["truncate", "garbage", "empty", "delete"]),
        st.integers(0, 4000),
        st.binary(max_size=64),
    ),
    st.tuples(
        st.sampled_from(["config.json", "metrics.json"]),
        st.just("json"),
        st.lists(
            st.sampled_from(
                [
                    "request",
                    "settings",
                    "options",
                    "status",
                    "data",
                    "steps",
                    "lr",
                    "seed",
                    "components",
                    "model",
                    "backend",
                    "test_fraction",
                    "elbo",
                    "spec",
                    "n",
                ]
            ),
            min_size=1,
            max_size=3,
        ),
        st.tuples(JSON_VALUES, st.booleans()),
    ),
)
COMMANDS = [
    ["report"],
    ["evaluate", "--json"],
    ["sample", "-n", "3"],
    ["fit", "gmm", "--resume", "--steps", "30", "--quiet"],
]


@SETTINGS
@given(MUTATIONS, st.sampled_from(range(len(COMMANDS))))
def test_run_folder_files(capsys, finished, mutation, which):
    name, how, arg, payload = mutation
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "run"
        shutil.copytree(finished, folder)
        target = folder / name
        if how == "truncate":
            target.write_bytes(target.read_bytes()[:arg])
        elif how == "garbage":
            data = bytearray(target.read_bytes())
            data[arg % max(len(data), 1) : arg % max(len(data), 1) + len(payload)] = payload
            target.write_bytes(bytes(data))
        elif how == "empty":
            target.write_bytes(b"")
        elif how == "delete":
            target.unlink()
        else:
            value, delete = payload
            target.write_text(_mutate_json(target.read_text(), arg, value, delete))
        before = snapshot(folder)
        command = COMMANDS[which]
        argv = [command[0], *([folder] if command[0] != "fit" else []), *command[1:]]
        if command[0] == "fit":
            argv = [*command[:2], "--out", folder, *command[2:]]
        code, _ = run(capsys, argv)
        if code == 2:
            assert snapshot(folder) == before, (name, how)
