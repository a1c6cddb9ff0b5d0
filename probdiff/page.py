"""The report as a page: ``index.html`` of a run folder (``probdiff report``) or of the tutorial
(``probdiff tutorial``), static and self-contained apart from the figures, which lie beside it
and are linked by relative paths (no script, no network).

A section per run shows what the model demonstrates, its metrics, the ArviZ posterior summary,
every figure in the folder (and drawn samples), the model and guide source, and the text report.
"""

from __future__ import annotations

import html
import importlib
import inspect
from collections.abc import Iterable
from pathlib import Path

from probdiff.runfolder import atomic_write

PAGE = "index.html"

_STYLE = """
body { font: 15px/1.5 system-ui, sans-serif; margin: 0 auto; max-width: 72rem; padding: 1rem 2rem;
       color: #222; }
h1 { font-size: 1.6rem; } h2 { font-size: 1.3rem; border-bottom: 1px solid #ccc; margin-top: 2.5rem; }
h3 { font-size: 1.05rem; margin-bottom: .3rem; }
table { border-collapse: collapse; font-size: 13px; margin: .5rem 0; }
td, th { border: 1px solid #ddd; padding: 2px 8px; text-align: right; }
th { background: #f4f4f4; } td:first-child, th:first-child { text-align: left; }
.figures { display: flex; flex-wrap: wrap; gap: 1rem; }
figure { margin: 0; max-width: 34rem; } figure img { max-width: 100%; border: 1px solid #eee; }
figcaption { font-size: 12px; color: #555; }
details summary { cursor: pointer; margin: .3rem 0; font-family: monospace; }
pre { background: #f7f7f7; padding: .6rem; overflow-x: auto; font-size: 12px; }
.wide { overflow-x: auto; } nav a { margin-right: 1rem; } .about { max-width: 50rem; }
"""


def _esc(text) -> str:
    return html.escape(str(text), quote=True)


def _number(value) -> str:
    if isinstance(value, float):
        return f"{value:.6g}"
    return _esc(value)


def metrics_table(metrics: dict) -> str:
    """The scalar metrics as a two-column table."""
    rows = [
        f"<tr><td>{_esc(k)}</td><td>{_number(v)}</td></tr>"
        for k, v in sorted(metrics.items())
        if not isinstance(v, (list, dict))
    ]
    return "<table><tr><th>metric</th><th>value</th></tr>" + "".join(rows) + "</table>"


def comparison_table(rows: list[tuple[str, dict]], keys: Iterable[str]) -> str:
    """One row per run (its anchor name and metrics), one column per key present anywhere."""
    keys = [k for k in keys if any(k in m for _, m in rows)]
    head = "<tr><th>run</th>" + "".join(f"<th>{_esc(k)}</th>" for k in keys) + "</tr>"
    body = "".join(
        f'<tr><td><a href="#{_esc(name)}">{_esc(name)}</a></td>'
        + "".join(f"<td>{_number(m[k]) if k in m else '-'}</td>" for k in keys)
        + "</tr>"
        for name, m in rows
    )
    return f'<div class="wide"><table>{head}{body}</table></div>'


def figure_files(folder: Path) -> list[Path]:
    """Every PNG of a run folder (the ELBO trace first) and of its samples/ folder."""
    found = sorted(folder.glob("*.png"), key=lambda p: (p.name != "elbo_trace.png", p.name))
    return found + sorted((folder / "samples").glob("*.png"))


def sources(run) -> list[tuple[str, str]]:
    """(title, source) of the model and guide: a built-in's classes read from the installed
    code, or the copies of a user's files that the run folder keeps (read, never run)."""
    out = []
    code = run.config.get("code")
    if code:
        for role in ("model", "guide"):
            entry = code.get(role) or {}
            if entry.get("autoguide"):
                out.append((f"{role}: {entry['autoguide']}", "(an autoguide built by Pyro)"))
            elif entry.get("file") and run.folder.file(entry["file"]).is_file():
                text = run.folder.file(entry["file"]).read_text(errors="replace")
                out.append((f"{role}: {entry['file']} ({entry.get('function')})", text))
        return out
    from probdiff.models import SOURCES

    for role, ref in zip(("model", "guide"), SOURCES.get(run.request.model, ())):
        module, _, qualname = ref.partition(":")
        obj = importlib.import_module(module)
        for part in qualname.split("."):
            obj = getattr(obj, part)
        out.append((f"{role}: {ref}", inspect.getsource(obj)))
    return out


def run_section(run, text: str, *, anchor: str, title: str, prefix: str = "") -> str:
    """The HTML of one run: ``text`` is its text report; figure paths get ``prefix`` (the
    run's folder relative to the page)."""
    from probdiff.models import ABOUT

    metrics = run.metrics if run.status == "complete" else {}
    parts = [f'<section id="{_esc(anchor)}"><h2>{_esc(title)}</h2>']
    about = ABOUT.get(run.request.model)
    if about:
        parts.append(f'<p class="about">{_esc(about)}</p>')
    config = run.config
    data = config.get("data", {})
    parts.append(
        f"<p>model <b>{_esc(run.request.model)}</b> on {_esc(data.get('name'))} "
        f"({_esc(data.get('n'))} points), backend {_esc(run.request.backend)}, inference "
        f"{_esc(run.request.inference)}, status {_esc(run.status)}.</p>"
    )
    if metrics:
        parts.append("<h3>Metrics (per datum, nats unless named otherwise)</h3>")
        parts.append(metrics_table(metrics))
        table = _posterior_table(run)
        if table:
            parts.append("<h3>Posterior summary (ArviZ)</h3>" + table)
    figures = figure_files(run.folder.path)
    if figures:
        parts.append('<h3>Figures</h3><div class="figures">')
        for p in figures:
            rel = p.relative_to(run.folder.path).as_posix()
            parts.append(
                f'<figure><img src="{_esc(prefix + rel)}" alt="{_esc(rel)}">'
                f"<figcaption>{_esc(rel)}</figcaption></figure>"
            )
        parts.append("</div>")
    code = sources(run)
    if code:
        parts.append("<h3>Model and guide</h3>")
    for caption, source in code:
        parts.append(
            f"<details><summary>{_esc(caption)}</summary>"
            f"<pre><code>{_esc(source)}</code></pre></details>"
        )
    if text:
        parts.append(f"<details><summary>text report</summary><pre>{_esc(text)}</pre></details>")
    parts.append("</section>")
    return "\n".join(parts)


def _posterior_table(run) -> str | None:
    """The report's posterior summary (:func:`probdiff.diagnostics.posterior_table`) as HTML."""
    from probdiff.diagnostics import posterior_table

    table = posterior_table(run.idata, run.family_for_report().auxiliary_sites)
    return None if table is None else table.to_html(border=0)


def write_page(path: Path, title: str, sections: list[str], intro: str = "") -> Path:
    """Write the page atomically and return its path."""
    body = "\n".join(sections)
    page = (
        f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f'<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{_esc(title)}</title><style>{_STYLE}</style></head>\n"
        f"<body><h1>{_esc(title)}</h1>{intro}\n{body}\n</body></html>\n"
    )
    atomic_write(path, page.encode())
    return path
