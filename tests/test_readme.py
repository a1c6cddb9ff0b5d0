"""The README's worked example of a user's own model runs as written and fits correctly."""

import json
import re
from pathlib import Path

import numpy as np
import pytest
from sklearn.decomposition import FactorAnalysis

from probdiff.cli import main

README = Path(__file__).resolve().parents[1] / "README.md"


def readme_model_file() -> str:
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)
    (block,) = [b for b in blocks if b.startswith("# fa.py")]
    return block


def readme_fit_command() -> list[str]:
    (line,) = [ln for ln in README.read_text().splitlines() if ln.startswith("probdiff fit fa.py")]
    return line.split()[1:]


def test_readme_factor_analysis_example(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    Path("fa.py").write_text(readme_model_file())
    rng = np.random.default_rng(0)
    w = rng.normal(size=(5, 2))
    noise = np.array([0.3, 0.5, 0.4, 0.6, 0.2])
    x = rng.normal(size=(1500, 2)) @ w.T + noise * rng.normal(size=(1500, 5))
    np.savez("my_data.npz", x=x)
    argv = readme_fit_command()
    assert main(argv + ["--quiet", "--test-fraction", "0"]) == 0
    m = json.loads(Path("runs/fa/metrics.json").read_text())
    # independent: scikit-learn's factor analysis (exact maximum likelihood) on the same data
    best = FactorAnalysis(n_components=2, random_state=0).fit(x).score(x)
    # the ELBO is a lower bound on the maximised log-likelihood, up to its Monte Carlo error;
    # the diagonal guide cannot match the correlated posterior, so a small gap remains
    assert m["elbo"] <= best + 3 * m["elbo_stderr"] + 1e-3
    assert m["elbo"] == pytest.approx(best, abs=0.05 * abs(best))
    assert main(["report", "runs/fa"]) == 0
