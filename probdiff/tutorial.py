"""``probdiff tutorial``: every chapter implemented so far, on embedded data, with one report.

Each step is an ordinary ``probdiff fit`` into a sub-folder of ``--out``, followed by its
report; ``report.md`` collects the metrics side by side.
"""

from __future__ import annotations

from pathlib import Path

from probdiff.errors import ProbdiffError
from probdiff.fitting import fit
from probdiff.page import PAGE, comparison_table, run_section, write_page
from probdiff.request import FitRequest
from probdiff.runfolder import RunFolder
from probdiff.svi import SVISettings


def _steps() -> list:
    """The tutorial's chapters, declared beside the models they run (the module that
    :data:`probdiff.models.TUTORIAL` names)."""
    import importlib

    from probdiff.models import TUTORIAL

    return importlib.import_module(TUTORIAL).STEPS


def tutorial(out: str, quick: bool = False, seed: int = 0) -> str:
    """Run every step into ``out``; write ``out/report.md``; return its text."""
    root = Path(out)
    RunFolder.check_new(root)
    root.mkdir(parents=True, exist_ok=True)
    sections, rows, html_sections, compared = [], [], [], []
    for step in _steps():
        settings = {
            **step.settings,
            **(step.quick if quick else {}),
            "seed": seed,
            "progress": True,
        }
        options = dict(step.options)
        if quick and step.fit.get("inference") == "nuts":
            options.update(num_warmup=200, num_samples=200)
        print(f"== {step.title}", flush=True)
        req = FitRequest(
            model=step.model,
            data=step.data,
            out=str(root / step.folder),
            settings=SVISettings(**settings),
            options=options,
            **step.fit,
        )
        try:
            run = fit(req)
        except ProbdiffError as e:
            raise ProbdiffError(f"tutorial step {step.folder}: {e}") from None
        text = run.report()
        m = run.metrics
        rows.append(
            f"| {step.folder} | {m.get('backend')} | {m.get('inference')} | "
            f"{_fmt(m.get('elbo'))} | {_fmt(m.get('test_elbo'))} | {_fmt(m.get('iwae'))} | "
            f"{_fmt(m.get('log_likelihood'))} | "
            f"{_fmt(m.get('test_log_likelihood'))} | {_fmt(m.get('true_log_likelihood'))} | "
            f"{_fmt(m.get('bits_per_dim'))} | {_fmt(m.get('test_ode_log_likelihood'))} | "
            f"{_fmt(m.get('test_loss'))} | {m.get('seconds', 0):.2f} |"
        )
        sections.append(f"## {step.title}\n\n```\n{text}\n```\n")
        html_sections.append(
            run_section(run, text, anchor=step.folder, title=step.title, prefix=f"{step.folder}/")
        )
        compared.append((step.folder, m))
    header = (
        "# probdiff tutorial report\n\n"
        "Per datum, in nats. true = the data's own log density of the fitted data (known "
        "for mixture2d); bits/dim = -test ELBO / (D ln 2) of the diffusion bound; ODE = "
        "held-out log-likelihood through the probability-flow ODE; loss = held-out "
        "score-matching loss (chapters 3 and 4 train on it, not on an ELBO).\n\n"
        "| run | backend | inference | ELBO | test ELBO | IWAE | log-lik | test log-lik | true "
        "| bits/dim | ODE | loss | seconds |\n"
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|\n"
    )
    body = header + "\n".join(rows) + "\n\n" + "\n".join(sections)
    (root / "report.md").write_text(body)
    intro = (
        "<p>Every chapter of <i>Tutorial on Diffusion Models for Imaging and Vision</i> (S. H. "
        "Chan, 2024) fitted on embedded data, each a run folder of its own beside this page. "
        "Values are per datum in nats (bits/dim in bits); equation numbers are those of "
        "the project's page of equations, docs/equations.md (1.1) to (4.15). Pyro and NumPyro fits of the same model sit side by side "
        "in the table.</p>" + comparison_table(compared, COMPARED)
    )
    page = write_page(root / PAGE, "probdiff tutorial", html_sections, intro)
    return header + "\n".join(rows) + f"\n\nfull report: {root / 'report.md'}\npage: {page}"


# the columns of the tutorial page's comparison table, where any run has them
COMPARED = (
    "backend",
    "inference",
    "elbo",
    "test_elbo",
    "iwae",
    "log_likelihood",
    "test_log_likelihood",
    "true_log_likelihood",
    "bits_per_dim",
    "test_ode_log_likelihood",
    "test_loss",
    "seconds",
)


def _fmt(v) -> str:
    return f"{v:.4f}" if isinstance(v, float) else "-"
