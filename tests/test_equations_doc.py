"""docs/equations.md and the code agree: every equation a source file cites exists on the page,
every equation on the page is cited by the code (by one of the modules its ``Code:`` line
names), numbers are unique and in order within each section, the modules the page names exist,
and no source file cites the old working summary (MATH.md)."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PAGE = ROOT / "docs" / "equations.md"
SOURCE_DIRS = ("probdiff", "models", "guides")
SECTIONS = (1, 2, 3, 4)

HEADING = re.compile(r"^## (\d+)\. ")
LABEL = re.compile(r"^\*\*\((\d+)\.(\d+)\)\*\*")
CITATION = re.compile(r"docs/equations\.md((?:\s*,?\s*\(\d+\.\d+\))*)")
NUMBER = re.compile(r"\((\d+\.\d+)\)")
MODULE = re.compile(r"`([\w./-]+\.py)`")


def page_equations(text: str) -> list[dict]:
    """The numbered equations in page order: label, heading section, and the lines up to the
    next label or heading."""
    equations: list[dict] = []
    heading, current = None, None
    for line in text.splitlines():
        m = HEADING.match(line)
        if m:
            heading, current = int(m.group(1)), None
            continue
        m = LABEL.match(line)
        if m:
            current = {
                "label": f"{m.group(1)}.{m.group(2)}",
                "section": int(m.group(1)),
                "index": int(m.group(2)),
                "heading": heading,
                "lines": [],
            }
            equations.append(current)
        elif current is not None:
            current["lines"].append(line)
    return equations


def code_line(equation: dict) -> str | None:
    """The line that names the source and the modules of an equation."""
    for line in equation["lines"]:
        if line.startswith("Source:") and "Code:" in line:
            return line
    return None


def citations(text: str) -> tuple[set[str], int]:
    """(equation numbers cited as ``docs/equations.md (s.k), (s.k)``, citations without any
    number). A citation may wrap onto the next docstring or comment line."""
    flat = re.sub(r"\s*\n\s*(?:#\s*)?", " ", text)
    numbers, bare = set(), 0
    for m in CITATION.finditer(flat):
        found = NUMBER.findall(m.group(1))
        numbers.update(found)
        bare += not found
    return numbers, bare


def source_files() -> list[Path]:
    return sorted(p for d in SOURCE_DIRS for p in (ROOT / d).rglob("*.py"))


def cited_by_file() -> dict[str, set[str]]:
    out = {}
    for path in source_files():
        numbers, _ = citations(path.read_text(encoding="utf-8"))
        if numbers:
            out[path.relative_to(ROOT).as_posix()] = numbers
    return out


def test_the_page_numbers_equations_in_every_section():
    equations = page_equations(PAGE.read_text(encoding="utf-8"))
    assert {e["section"] for e in equations} == set(SECTIONS)


def test_numbers_are_unique_and_in_order_within_each_section():
    equations = page_equations(PAGE.read_text(encoding="utf-8"))
    labels = [e["label"] for e in equations]
    assert len(labels) == len(set(labels)), f"repeated numbers: {labels}"
    last: dict[int, int] = {}
    for e in equations:
        assert e["section"] == e["heading"], f"({e['label']}) sits under section {e['heading']}"
        assert e["index"] > last.get(e["section"], 0), f"({e['label']}) is out of order"
        last[e["section"]] = e["index"]


def test_every_equation_names_its_source_and_modules():
    for e in page_equations(PAGE.read_text(encoding="utf-8")):
        line = code_line(e)
        assert line is not None, f"({e['label']}) has no 'Source: ... Code: ...' line"
        assert MODULE.findall(line.split("Code:", 1)[1]), f"({e['label']}) names no module"
        assert any("$$" in ln for ln in e["lines"]), f"({e['label']}) has no displayed equation"


def test_the_modules_the_page_names_exist():
    named = set(MODULE.findall(PAGE.read_text(encoding="utf-8")))
    assert named
    missing = sorted(p for p in named if not (ROOT / p).is_file())
    assert not missing, f"docs/equations.md names modules that do not exist: {missing}"


def test_every_cited_number_exists_on_the_page():
    labels = {e["label"] for e in page_equations(PAGE.read_text(encoding="utf-8"))}
    unknown = {
        path: sorted(numbers - labels)
        for path, numbers in cited_by_file().items()
        if numbers - labels
    }
    assert not unknown, f"citations of equations docs/equations.md does not have: {unknown}"


def test_every_citation_gives_numbers():
    bare = {}
    for path in source_files():
        _, n = citations(path.read_text(encoding="utf-8"))
        if n:
            bare[path.relative_to(ROOT).as_posix()] = n
    assert not bare, f"'docs/equations.md' cited without an equation number: {bare}"


def test_every_equation_is_cited_by_a_module_it_names():
    cited = cited_by_file()
    everywhere = set().union(*cited.values())
    for e in page_equations(PAGE.read_text(encoding="utf-8")):
        assert e["label"] in everywhere, f"({e['label']}) is cited by no source file"
        named = MODULE.findall(code_line(e) or "")
        assert any(e["label"] in cited.get(p, ()) for p in named), (
            f"({e['label']}): none of the modules it names ({', '.join(named)}) cites it"
        )


def test_no_source_cites_the_old_summary():
    stale = [
        p.relative_to(ROOT).as_posix()
        for p in source_files()
        if "MATH.md" in p.read_text(encoding="utf-8")
    ]
    assert not stale, f"sources still citing MATH.md: {stale}"


def test_citations_are_found_across_wrapped_lines():
    text = (
        '"""A docstring (docs/equations.md (2.5),\n    (2.6)) and # docs/equations.md\n# (4.1)."""'
    )
    assert citations(text) == ({"2.5", "2.6", "4.1"}, 0)
    assert citations("see docs/equations.md for the maths") == (set(), 1)
