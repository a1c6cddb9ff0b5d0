"""probdiff: the tutorial's generative models as probabilistic programs.

The engine is model-agnostic: data (:mod:`probdiff.data`), the fitting loop
(:mod:`probdiff.svi`), backends (:mod:`probdiff.backends`), the run folder
(:mod:`probdiff.runfolder`), ArviZ output and diagnostics, plots and the command line. Model
families live in :mod:`probdiff.models` and their guides in :mod:`probdiff.guides`.
"""

__version__ = "0.1.0"

import warnings

# ArviZ 0.2x announces its 1.x refactor on import; probdiff pins <1, so the notice is noise
warnings.filterwarnings(
    "ignore", message="ArviZ is undergoing a major refactor", category=FutureWarning
)

# the public names, imported on first use (PEP 562): ``import probdiff`` and the command
# line's help load no framework (torch, JAX, ArviZ) until something needs it
_PUBLIC = {
    "fit": "probdiff.api",
    "open_run": "probdiff.api",
    "Run": "probdiff.run",
    "Dataset": "probdiff.data",
    "load_dataset": "probdiff.data",
    "train_test_split": "probdiff.data",
    "ProbdiffError": "probdiff.errors",
    "Family": "probdiff.family",
    "families": "probdiff.family",
    "get_family": "probdiff.family",
    "register": "probdiff.family",
    "Program": "probdiff.program",
    "SVIResult": "probdiff.svi",
    "SVISettings": "probdiff.svi",
    "run_svi": "probdiff.svi",
}
__all__ = sorted(_PUBLIC) + ["__version__"]


def __getattr__(name: str):
    if name in _PUBLIC:
        import importlib

        value = getattr(importlib.import_module(_PUBLIC[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'probdiff' has no attribute {name!r}")


def __dir__() -> list[str]:
    return __all__
