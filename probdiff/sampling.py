"""``probdiff sample`` and ``probdiff evaluate`` on a finished run folder (through
:class:`probdiff.run.Run`)."""

from __future__ import annotations

import io

import numpy as np

from probdiff.run import open_run
from probdiff.runfolder import atomic_write


def sample(
    path: str, n: int, seed: int = 0, sampler: str | None = None, trust_model_code: bool = False
) -> str:
    """Write ``samples.npz`` (and ``samples.png`` where the samples look like the data) into
    the run folder; return a one-line summary."""
    run = open_run(path, trust_model_code=trust_model_code)
    with run.folder.lock("sample"):
        x = run.sample(n, seed, sampler)
        data = run.dataset
        arrays = x if isinstance(x, dict) else {"x": x}
        buf = io.BytesIO()
        np.savez(buf, **arrays)
        atomic_write(run.folder.file("samples.npz"), buf.getvalue())
        written = [run.folder.file("samples.npz")]
        if data.x is not None and isinstance(x, np.ndarray) and x.shape[1:] == data.x.shape[1:]:
            from probdiff.plots import samples_figure

            samples_figure(run.folder.file("samples.png"), x, data)
            written.append(run.folder.file("samples.png"))
    return f"wrote {n} samples to " + " and ".join(str(p) for p in written)


def evaluate(path: str, data_spec: str | None = None, trust_model_code: bool = False) -> dict:
    """The family's metrics on ``data_spec`` (default: the run's held-out split), merged into
    ``metrics.json``."""
    return open_run(path, trust_model_code=trust_model_code).evaluate(data_spec)
