"""One contract over every registered family (and a user's model): a tiny fit, then evaluate,
report and sample, each on the finished folder. The figures are a function of the run folder:
``report`` redraws exactly the files ``fit`` drew, byte for byte, and lists every figure on
disk."""

from __future__ import annotations

import json
import textwrap
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
from helpers import cli

from probdiff.family import builtin_names
from probdiff.sampling import samples_name

TINY = {
    "gmm": ["--data", "mixture2d:n=120", "--steps", "20"],
    "vae": ["--data", "digits:n=120", "--steps", "10", "--hidden", "16", "--iwae-k", "4"],
    "ddpm": [
        "--data",
        "mixture2d:n=120",
        "--steps",
        "10",
        "--T",
        "10",
        "--hidden",
        "16",
        "--ode-rows",
        "0",
    ],
    "ncsn": [
        "--data",
        "mixture2d:n=120",
        "--steps",
        "10",
        "--hidden",
        "16",
        "--levels",
        "4",
        "--steps-per-level",
        "2",
    ],
    "sde": ["--data", "mixture2d:n=120", "--steps", "10", "--hidden", "16", "--ode-rows", "0"],
}
USER = """
    import pyro, pyro.distributions as dist, torch

    def model(x):
        loc = pyro.sample("loc", dist.Normal(torch.zeros(2), 5.0).to_event(1))
        with pyro.plate("data", x.shape[0]):
            pyro.sample("obs", dist.Normal(loc, 1.0).to_event(1), obs=x)
"""


def test_every_builtin_family_is_covered():
    assert set(TINY) == set(builtin_names()), "give each new family tiny settings here"


class PageImages(HTMLParser):
    """The src of every <img> and the text of every heading and <summary> of a page."""

    def __init__(self):
        super().__init__()
        self.images, self.headings, self._in_h3 = [], [], False

    def handle_starttag(self, tag, attrs):
        if tag == "img":
            self.images.append(dict(attrs)["src"])
        self._in_h3 = tag in ("h3", "summary")

    def handle_data(self, data):
        if self._in_h3:
            self.headings.append(data)
            self._in_h3 = False


def page_of(folder: Path) -> PageImages:
    parser = PageImages()
    parser.feed((folder / "index.html").read_text())
    return parser


def on_disk(folder: Path) -> set[str]:
    return {p.relative_to(folder).as_posix() for p in folder.rglob("*.png")}


def pictures(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in folder.glob("*.png")}


@pytest.mark.parametrize("model", sorted(TINY) + ["user"])
def test_family_contract(tmp_path, capsys, model):
    out = tmp_path / model
    if model == "user":
        path = tmp_path / "user.py"
        path.write_text(textwrap.dedent(USER))
        fit = [
            "fit",
            f"{path}:model",
            "--guide",
            "auto:normal",
            "--data",
            "mixture2d:n=120",
            "--steps",
            "20",
        ]
        trust = ["--trust-model-code"]
    else:
        fit, trust = ["fit", model, *TINY[model]], []
    code, _, err = cli(
        capsys, *fit, "--out", out, "--quiet", "--posterior-samples", 3, "--eval-every", 0
    )
    assert code == 0, err
    drawn = pictures(out)
    assert "elbo_trace.png" in drawn
    config = json.loads((out / "config.json").read_text())
    assert config["status"] == "complete"

    code, report, err = cli(capsys, "report", out)
    assert code == 0, err
    listed = [ln for ln in report.splitlines() if ln.startswith("figures: ")][0]
    names = set(listed[len("figures: ") :].split(", "))
    assert names == set(drawn) == set(pictures(out)), (names, set(drawn))
    assert pictures(out) == drawn, "report redraws the same figures from the same files"
    page = page_of(out)  # index.html shows every figure on disk, and the model and guide code
    assert set(page.images) == on_disk(out) and all((out / src).is_file() for src in page.images)
    assert any(h.startswith("model: ") for h in page.headings), page.headings
    assert any(h.startswith("guide: ") for h in page.headings), page.headings

    code, printed, err = cli(capsys, "evaluate", out, "--json", *trust)
    assert code == 0, err
    values = json.loads(printed)
    fitted = json.loads((out / "metrics.json").read_text())
    for key in ("test_elbo", "test_loss"):  # deterministic given the run's seed
        if key in values:
            assert values[key] == pytest.approx(fitted[key], rel=1e-9), key

    code, _, err = cli(capsys, "sample", out, "-n", 5, *trust)
    assert code == 0, err
    drawn = np.load(out / "samples" / "default-seed0-n5.npz")
    assert drawn["x"].shape[0] == 5 and int(drawn["n"]) == 5
    assert cli(capsys, "report", out)[0] == 0  # the page now shows the samples' figure too
    assert set(page_of(out).images) == on_disk(out)

    # every sampler the main help lists (models.SAMPLERS) is one the family runs
    from probdiff.models import SAMPLERS

    for listed in SAMPLERS.get(model, ()):
        sampler = listed.replace("[:STEPS]", ":3")
        code, _, err = cli(capsys, "sample", out, "-n", 4, "--sampler", sampler, *trust)
        assert code == 0, (sampler, err)
        assert (out / "samples" / f"{samples_name(sampler, 0, 4)}.npz").is_file(), sampler
    if model in SAMPLERS:
        code, _, err = cli(capsys, "sample", out, "-n", 4, "--sampler", "nonesuch", *trust)
        assert code != 0 and len(err.strip().splitlines()) == 1, err
        assert "sampler" in err, err  # unknown sampler, or: the model has one
