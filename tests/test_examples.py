"""Every example script runs with tiny settings, and every script in examples/ is listed here."""

import importlib.util
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"

TINY = {
    "gmm.py": ["--steps", "30", "--quick"],
    "factor_analysis.py": ["--steps", "30", "--n", "200"],
    "vae.py": ["--steps", "30", "--quick", "--likelihood", "discretized"],
    "ddpm_2d.py": ["--steps", "30", "--quick"],
    "ddpm_digits.py": ["--steps", "30", "--quick"],
    "indi.py": ["--steps", "30", "--quick", "--restore-steps", "5"],
    "score_langevin.py": ["--steps", "30", "--quick"],
    "score_sde.py": ["--steps", "30", "--quick"],
    "your_model.py": ["--steps", "50"],
}


def load(name: str):
    spec = importlib.util.spec_from_file_location(f"example_{name[:-3]}", EXAMPLES / name)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_every_example_is_covered():
    scripts = {p.name for p in EXAMPLES.glob("*.py")}
    assert scripts == set(TINY), f"list new examples in TINY: {sorted(scripts ^ set(TINY))}"


@pytest.mark.parametrize("name", sorted(TINY))
def test_example_runs(name, tmp_path):
    assert load(name).main(TINY[name] + ["--out", str(tmp_path / "out")]) == 0
