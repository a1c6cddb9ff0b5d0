"""The house as data flows through it: which probdiff modules a command loads, the import
edges between them, import cycles, the largest files, and how long ``fit --help`` takes.

    python benchmarks/import_graph.py [--command "fit ddpm --data mixture2d:n=200 ..."]

The modules are those of ``probdiff`` (models and guides included) in ``sys.modules`` after
the command ran in a fresh interpreter; an edge A -> B is an import of B written in A's
source (at any depth: module level or inside a function). Cycles are strongly connected
components of that graph over every module of the package.
"""

from __future__ import annotations

import argparse
import ast
import json
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEFAULT = (
    "fit ddpm --data mixture2d:n=200 --out {out} --T 10 --steps 5 --hidden 16 --quiet "
    "--posterior-samples 2 --ode-rows 0"
)


def module_files() -> dict[str, Path]:
    """Installed module name -> source file, for probdiff, probdiff.models, probdiff.guides."""
    out = {}
    for base, folder in (
        ("probdiff", ROOT / "probdiff"),
        ("probdiff.models", ROOT / "models"),
        ("probdiff.guides", ROOT / "guides"),
    ):
        for path in folder.rglob("*.py"):
            rel = path.relative_to(folder).with_suffix("")
            parts = [p for p in rel.parts if p != "__init__"]
            name = ".".join([base, *parts])
            if base == "probdiff" and parts and parts[0] in ("models", "guides"):
                continue
            out[name] = path
    return out


def imports(path: Path, name: str, known: set[str]) -> set[str]:
    """The package's modules that ``path`` imports (relative imports resolved)."""
    tree = ast.parse(path.read_text())
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    found = set()
    for node in ast.walk(tree):
        targets = []
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(
                    package.split(".")[: len(package.split(".")) - node.level + 1]
                    + ([base] if base else [])
                )
            subs = [f"{base}.{a.name}" for a in node.names]
            # ``from pkg import module`` imports the module; ``from pkg import name`` the package
            targets = subs + ([base] if not all(t in known for t in subs) else [])
        for t in targets:
            while t and t not in known:
                t = t.rsplit(".", 1)[0] if "." in t else ""
            if t and t != name:
                found.add(t)
    return found


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index, low, stack, on, out = {}, {}, [], set(), []
    counter = [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    sys.setrecursionlimit(10_000)
    for v in graph:
        if v not in index:
            visit(v)
    return out


def loaded_by(command: str) -> list[str]:
    import tempfile

    out = Path(tempfile.mkdtemp()) / "run"
    code = (
        "import sys, json\nfrom probdiff.cli import main\n"
        f"main({command.format(out=out).split()!r})\n"
        "print('MODULES ' + json.dumps(sorted(m for m in sys.modules "
        "if m == 'probdiff' or m.startswith('probdiff.'))))"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    line = [ln for ln in res.stdout.splitlines() if ln.startswith("MODULES ")]
    if not line:
        raise SystemExit(res.stdout[-2000:] + res.stderr[-2000:])
    return json.loads(line[0][8:])


def help_seconds(args: list[str], repeats: int = 3) -> float:
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-m", "probdiff", *args], capture_output=True, cwd=ROOT)
        best = min(best, time.perf_counter() - t0)
    return best


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--command", default=DEFAULT)
    args = p.parse_args(argv)
    files = module_files()
    known = set(files)
    graph = {name: imports(path, name, known) for name, path in files.items()}
    loaded = [m for m in loaded_by(args.command) if m in known]
    edges = sum(len(graph[m] & set(loaded)) for m in loaded)
    sizes = sorted(
        ((len(path.read_text().splitlines()), name) for name, path in files.items()), reverse=True
    )
    print(f"command: probdiff {args.command.split(' --out')[0]}")
    print(f"  modules loaded: {len(loaded)}, import edges among them: {edges}")
    print(f"package: {len(files)} modules, {sum(len(v) for v in graph.values())} edges")
    found = cycles(graph)
    print(f"  import cycles: {len(found)}" + "".join(f"\n    {' <-> '.join(c)}" for c in found))
    print("  largest files: " + ", ".join(f"{name} ({n} lines)" for n, name in sizes[:3]))
    print(
        f"probdiff fit gmm --help: {help_seconds(['fit', 'gmm', '--help']):.2f} s "
        f"(best of 3); probdiff --help: {help_seconds(['--help']):.2f} s"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
