"""probdiff: the tutorial's generative models as probabilistic programs.

The engine is model-agnostic: data (:mod:`probdiff.data`), the fitting loop
(:mod:`probdiff.svi`), backends (:mod:`probdiff.backends`), the run folder
(:mod:`probdiff.runfolder`), ArviZ output and diagnostics, plots and the command line. Model
families live in :mod:`probdiff.models` and their guides in :mod:`probdiff.guides`.
"""

__version__ = "0.1.0"

import warnings  # noqa: E402

# ArviZ 0.2x announces its 1.x refactor on import; probdiff pins <1, so the notice is noise
warnings.filterwarnings("ignore", message="ArviZ is undergoing a major refactor",
                        category=FutureWarning)

from probdiff.api import fit, open_run  # noqa: E402
from probdiff.data import Dataset, load_dataset, train_test_split  # noqa: E402
from probdiff.errors import ProbdiffError  # noqa: E402
from probdiff.family import Family, families, get_family, register  # noqa: E402
from probdiff.program import Program  # noqa: E402
from probdiff.run import Run  # noqa: E402
from probdiff.svi import SVIResult, SVISettings, run_svi  # noqa: E402

__all__ = [
    "Dataset", "Family", "Program", "ProbdiffError", "Run", "SVIResult", "SVISettings",
    "__version__", "families", "fit", "get_family", "load_dataset", "open_run", "register",
    "run_svi", "train_test_split",
]
