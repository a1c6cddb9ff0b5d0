"""The Python API: :func:`fit` and :func:`open_run` (the command line is a thin layer over it).

>>> import numpy as np, pyro, pyro.distributions as dist, probdiff
>>> def model(x):
...     p = pyro.sample("p", dist.Beta(1.0, 1.0))
...     with pyro.plate("data", len(x)):
...         pyro.sample("obs", dist.Bernoulli(p), obs=x)
>>> flips = np.array([1.0, 0.0, 1.0, 1.0, 1.0, 0.0, 1.0, 1.0])
>>> run = probdiff.fit(model, "auto:normal", data=flips, steps=20, test_fraction=0,
...                    progress=False)
>>> sorted(run.idata.groups())[:3]
['log_likelihood', 'observed_data', 'posterior']
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from typing import Any

from probdiff.errors import ProbdiffError
from probdiff.run import Run, open_run

__all__ = ["fit", "open_run"]

_SETTINGS = ("batch_size", "restarts", "checkpoint_every", "eval_every", "eval_particles")
_REQUEST = (
    "device",
    "dtype",
    "inference",
    "test_fraction",
    "posterior_samples",
    "threads",
    "data_seed",
    "devices",
    "stream",
)


def fit(
    model: str | Callable,
    guide: str | Callable | None = None,
    *,
    data: Any,
    steps: int | None = None,
    lr: float | None = None,
    out: str | None = None,
    backend: str = "pyro",
    seed: int = 0,
    progress: bool = True,
    **options: Any,
) -> Run:
    """Fit ``model`` to ``data`` and return the :class:`~probdiff.run.Run`.

    ``model``: a Pyro or NumPyro model (a callable, called as ``model(x)`` for one array and
    ``model(**arrays)`` for a dict), ``"path/to/file.py:function"``, or a built-in name
    (``"gmm"``, ``"vae"``, ``"ddpm"``, ...) with its options as keyword arguments.
    ``guide``: a callable, ``"path/to/file.py:function"``, an autoguide name
    (``"auto:normal" | "auto:diagonal" | "auto:delta" | "auto:lowrank"``), or None for a
    model without latent sites. ``data``: an array (rows first), a dict of arrays, or a data
    spec as on the command line. ``out``: the run folder (new or empty; default a new
    temporary folder). Further keywords: ``batch_size``, ``restarts``, ``checkpoint_every``,
    ``eval_every``, ``device``, ``devices``, ``dtype``, ``inference``, ``test_fraction``,
    ``data_seed``, ``stream`` (True: keep a ``.npy`` file's rows or a PNG folder on disk,
    read per minibatch; default: when larger than 1 GiB as float64),
    ``posterior_samples``, ``threads``, and the model's options (a user's model: ``elbo``,
    ``max_plate_nesting``, ``particles``).
    """
    from probdiff.data import as_dataset
    from probdiff.family import get_family
    from probdiff.fitting import fit as run_fit
    from probdiff.request import FitRequest
    from probdiff.svi import SVISettings
    from probdiff.usermodel import (
        AUTOGUIDES,
        CodeRef,
        UserCode,
        UserFamily,
        is_reference,
    )

    settings = {k: options.pop(k) for k in _SETTINGS if k in options}
    request = {k: options.pop(k) for k in _REQUEST if k in options}
    if isinstance(model, str) and not is_reference(model):
        if guide is not None:
            raise ProbdiffError(f"built-in model {model!r} brings its own guide: drop guide=")
        family = get_family(model)
        options = family.default_options(**options)
        code = None
        label = model
    else:
        family = UserFamily
        unknown = set(options) - set(UserFamily.default_options())
        if unknown:
            raise ProbdiffError(f"unknown options for your model: {', '.join(sorted(unknown))}")
        options = UserFamily.default_options(**options)
        if (
            guide is not None
            and not callable(guide)
            and not is_reference(guide)
            and guide not in AUTOGUIDES
        ):
            raise ProbdiffError(
                f"guide must be a callable, path/to/file.py:function or one of "
                f"{', '.join(AUTOGUIDES)}; got {guide!r}"
            )
        code = UserCode(
            CodeRef.parse(model) if isinstance(model, str) else model,
            CodeRef.parse(guide) if isinstance(guide, str) and is_reference(guide) else guide,
        )
        options["guide"] = guide if isinstance(guide, str) else None
        label = code.label
    spec = data if isinstance(data, str) else ""
    data_seed = request.get("data_seed")
    dataset = as_dataset(
        data, seed=seed if data_seed is None else data_seed, stream=request.get("stream")
    )
    req = FitRequest(
        model=label if code is None or not isinstance(model, str) else model,
        data=spec,
        out=out or tempfile.mkdtemp(prefix="probdiff-"),
        backend=backend,
        settings=SVISettings(
            steps=family.default_steps if steps is None else steps,
            lr=family.default_lr if lr is None else lr,
            seed=seed,
            progress=progress,
            **{"batch_size": family.default_batch_size, **settings},
        ),
        options=options,
        **request,
    )
    return run_fit(req, code=code, dataset=dataset)
