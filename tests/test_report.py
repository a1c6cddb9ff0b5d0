"""``probdiff report`` on MCMC fits: R-hat is honest, and label switching is flagged, not hidden."""

import json

import pytest

from probdiff.cli import main

NUTS = ["--prior", "--backend", "numpyro", "--inference", "nuts", "--quiet", "--num-chains", "4"]


@pytest.mark.slow
def test_ordered_nuts_converges_and_unordered_nuts_is_flagged(tmp_path, capsys):
    """Seed 3 is one where the four unordered chains settle on different labellings (the NumPyro
    tests show this for seeds 0-7 on their data); the ordered model has one labelling."""
    data = ["--data", "mixture2d:n=300", "--seed", "3"]
    ordered, unordered = tmp_path / "ordered", tmp_path / "unordered"
    assert (
        main(
            [
                "fit",
                "gmm",
                *data,
                "--out",
                str(ordered),
                *NUTS,
                "--ordered",
                "--num-warmup",
                "500",
                "--num-samples",
                "1000",
            ]
        )
        == 0
    )
    m = json.loads((ordered / "metrics.json").read_text())
    assert m["max_rhat"] < 1.01 and m["divergences"] == 0
    assert (
        main(
            [
                "fit",
                "gmm",
                *data,
                "--out",
                str(unordered),
                *NUTS,
                "--num-warmup",
                "200",
                "--num-samples",
                "200",
            ]
        )
        == 0
    )
    capsys.readouterr()
    assert main(["report", str(ordered)]) == 0
    assert "label switching: none seen" in capsys.readouterr().out
    assert main(["report", str(unordered)]) == 0
    out = capsys.readouterr().out
    assert "WARNING label switching" in out and "--ordered" in out
    for name in ("trace.png", "rank.png"):
        assert (unordered / name).is_file()
