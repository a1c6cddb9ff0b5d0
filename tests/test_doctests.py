"""The examples in docstrings run as written: every module of the installed package (engine,
models and guides) whose source holds a ``>>>`` example is imported and its doctests run."""

from __future__ import annotations

import doctest
import importlib
import importlib.util
import pkgutil

import pytest

PACKAGES = ("probdiff", "probdiff.models", "probdiff.guides")


def modules_with_examples() -> list[str]:
    names = set()
    for package in PACKAGES:
        path = importlib.import_module(package).__path__
        for info in pkgutil.walk_packages(path, prefix=package + "."):
            if info.name.endswith("__main__"):
                continue
            spec = importlib.util.find_spec(info.name)
            if spec and spec.origin and spec.origin.endswith(".py"):
                with open(spec.origin, encoding="utf-8") as f:
                    if ">>> " in f.read():
                        names.add(info.name)
    return sorted(names)


MODULES = modules_with_examples()


def test_examples_are_found():
    # the collection itself can fail silently (a renamed package): the engine has examples
    assert "probdiff.treefile" in MODULES and "probdiff.models.gmm.model" in MODULES


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name):
    module = importlib.import_module(name)
    finder = doctest.DocTestFinder(exclude_empty=True)
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    tests = [t for t in finder.find(module, name) if t.examples]
    assert tests, f"{name} has '>>> ' in its source but no doctest was found"
    for test in tests:
        runner.run(test)
    result = runner.summarize(verbose=False)
    assert result.failed == 0, f"{result.failed} of {result.attempted} examples failed in {name}"
