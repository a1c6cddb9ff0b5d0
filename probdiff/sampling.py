"""``probdiff sample`` and ``probdiff evaluate`` on a finished run folder (through
:class:`probdiff.run.Run`).

Samples go to ``DIR/samples/`` under a name that records how they were drawn,
``SAMPLER-seedSEED-nN.npz`` (with ``SAMPLER-seedSEED-nN.png`` where they look like the data);
the arrays carry the same facts (``sampler``, ``seed``, ``n``). An existing file is never
replaced: drawing again with the same sampler, seed and size is refused, as its result would be
the same draws.
"""

from __future__ import annotations

import io
import re

import numpy as np

from probdiff.errors import ProbdiffError
from probdiff.run import open_run
from probdiff.runfolder import atomic_write

SAMPLES_DIR = "samples"


def samples_name(sampler: str | None, seed: int, n: int) -> str:
    """The file stem of ``n`` draws from ``sampler`` (None: the model's default) and ``seed``."""
    label = re.sub(r"[^A-Za-z0-9_.-]", "_", sampler or "default")
    return f"{label}-seed{seed}-n{n}"


def sample(
    path: str, n: int, seed: int = 0, sampler: str | None = None, trust_model_code: bool = False
) -> str:
    """Write ``samples/SAMPLER-seedSEED-nN.npz`` (and ``.png`` where the samples look like the
    data) into the run folder; return a one-line summary."""
    run = open_run(path, trust_model_code=trust_model_code)
    stem = samples_name(sampler, seed, n)
    with run.folder.lock("sample"):
        folder = run.folder.path / SAMPLES_DIR
        target = folder / f"{stem}.npz"
        if target.exists():
            raise ProbdiffError(
                f"{target} exists (the same sampler, seed and n draw the same samples): "
                "give another --seed to draw new ones"
            )
        x = run.sample(n, seed, sampler)
        data = run.dataset
        arrays = dict(x) if isinstance(x, dict) else {"x": x}
        arrays.update(sampler=np.array(sampler or "default"), seed=np.array(seed), n=np.array(n))
        buf = io.BytesIO()
        np.savez(buf, **arrays)  # type: ignore[arg-type]
        folder.mkdir(exist_ok=True)
        atomic_write(target, buf.getvalue())
        written = [target]
        if data.x is not None and isinstance(x, np.ndarray) and x.shape[1:] == data.x.shape[1:]:
            from probdiff.plots import samples_figure

            samples_figure(folder / f"{stem}.png", x, data)
            written.append(folder / f"{stem}.png")
    return f"wrote {n} samples to " + " and ".join(str(p) for p in written)


def evaluate(
    path: str, data_spec: str | None = None, trust_model_code: bool = False, progress: bool = False
) -> dict:
    """The family's metrics on ``data_spec`` (default: the run's held-out split), merged into
    ``metrics.json``; with ``progress``, a line on stderr per phase."""
    run = open_run(path, trust_model_code=trust_model_code)
    return run.evaluate(data_spec, progress=progress)
