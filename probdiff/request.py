"""A fit request (every setting of ``probdiff fit``, as ``config.json`` records it), read back
and checked, and the model family it asks for."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from probdiff.backends import BACKENDS
from probdiff.data import Dataset
from probdiff.errors import ProbdiffError
from probdiff.family import Family, get_family
from probdiff.runfolder import CONFIG
from probdiff.svi import SVISettings
from probdiff.usermodel import CodeRef, UserCode, UserFamily, is_reference


@dataclass
class FitRequest:
    """Everything ``probdiff fit`` was asked, as written to ``config.json``.

    ``model`` is a built-in name, ``path/to/file.py:function``, or (through the Python API)
    the label of a callable; ``data`` a data spec (built-in or path).
    """

    model: str
    data: str
    out: str
    backend: str = "pyro"
    device: str = "cpu"
    dtype: str = "float32"
    inference: str = "svi"
    test_fraction: float = 0.2
    posterior_samples: int = 200
    threads: int | None = 1
    # the seed of built-in synthetic data and of the train/held-out split (None: --seed), so a
    # sweep over --seed can keep one data set
    data_seed: int | None = None
    devices: int = 1  # numpyro: minibatches split over this many JAX devices
    # a .npy file or PNG folder kept on disk and read per minibatch (None: when larger than
    # probdiff.data.files.STREAM_BYTES)
    stream: bool | None = None
    settings: SVISettings = field(default_factory=SVISettings)
    options: dict = field(default_factory=dict)

    @property
    def data_seed_value(self) -> int:
        """The seed of the data and its split: ``data_seed``, else the fit's ``--seed``."""
        return self.settings.seed if self.data_seed is None else self.data_seed

    def validate(self) -> None:
        self.settings.validate()
        if self.data_seed is not None:
            from probdiff.seeds import MAX_SEED
            from probdiff.svi import _integer

            _integer("--data-seed", self.data_seed, 0, MAX_SEED)
        for name in ("model", "data", "out", "backend", "device", "dtype", "inference"):
            if not isinstance(getattr(self, name), str):
                raise ProbdiffError(f"{name} must be a string, got {getattr(self, name)!r}")
        if not isinstance(self.options, dict):
            raise ProbdiffError(f"options must be a mapping, got {self.options!r}")
        if isinstance(self.test_fraction, bool) or not isinstance(self.test_fraction, (int, float)):
            raise ProbdiffError(f"--test-fraction must be a number, got {self.test_fraction!r}")
        for name in ("posterior_samples", "threads", "devices"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
                raise ProbdiffError(f"--{name.replace('_', '-')} must be an integer, got {value!r}")
        if self.backend not in BACKENDS:
            raise ProbdiffError(
                f"unknown --backend {self.backend!r}: choose {' or '.join(BACKENDS)}"
            )
        if self.dtype not in ("float32", "float64"):
            raise ProbdiffError(f"--dtype must be float32 or float64, got {self.dtype!r}")
        if not 0.0 <= self.test_fraction < 1.0:
            raise ProbdiffError(f"--test-fraction must be in [0, 1), got {self.test_fraction}")
        if self.threads is not None and self.threads < 1:
            raise ProbdiffError(f"--threads must be >= 1, got {self.threads}")
        if self.stream is not None and not isinstance(self.stream, bool):
            raise ProbdiffError(f"stream must be True, False or None, got {self.stream!r}")
        if self.devices < 1:
            raise ProbdiffError(f"--devices must be >= 1, got {self.devices}")
        if self.posterior_samples < 1:
            raise ProbdiffError(f"--posterior-samples must be >= 1, got {self.posterior_samples}")


def user_code_from_request(req: FitRequest) -> UserCode:
    """The code of a model given as ``file.py:function`` (and ``--guide``) on the command line."""
    guide = req.options.get("guide")
    if guide is not None and not isinstance(guide, str):
        raise ProbdiffError("--guide must be path/to/file.py:guide or an autoguide name")
    if req.model is None:
        raise ProbdiffError("no model given")
    return UserCode(
        CodeRef.parse(req.model),
        CodeRef.parse(guide) if isinstance(guide, str) and is_reference(guide) else guide,
    )


def make_family(
    model: str,
    options: dict,
    data: Dataset,
    *,
    code: UserCode | None = None,
    base_seed: int = 0,
    runtime: dict | None = None,
) -> Family:
    """A built-in family by name, or a user's model (``code``, or ``file.py:function``);
    ``runtime`` (``get_backend`` arguments) is where a user's model draws samples."""
    if code is None and is_reference(model):
        code = user_code_from_request(FitRequest(model=model, data="", out="", options=options))
    if code is not None:
        return UserFamily(options, data, code, base_seed, runtime)
    data.require_x()
    family = get_family(model)(options, data)
    family.device = (runtime or {}).get("device", "cpu")
    return family


def runtime(req: FitRequest) -> dict:
    """``get_backend`` arguments of a request."""
    return {
        "name": req.backend,
        "device": req.device,
        "dtype": req.dtype,
        "threads": req.threads,
        "devices": req.devices,
    }


def request_from_config(config: dict, out: str) -> FitRequest:
    """The request a run's config records, acting on the folder ``out`` where it now lies;
    every setting and option checked as if given on the command line."""
    where = Path(out) / CONFIG
    try:
        raw = dict(config["request"])
        raw["settings"] = SVISettings(**raw["settings"])
        raw["out"] = out
        req = FitRequest(**raw)
    except (KeyError, TypeError, ValueError) as e:
        raise ProbdiffError(f"{where} does not describe a fit: {type(e).__name__}: {e}") from None
    try:
        if not isinstance(req.model, str) or not isinstance(req.options, dict):
            raise ProbdiffError("the model is not a name or the options not an object")
        req.validate()
        check_options(req.model, req.options, user=config.get("code") is not None)
    except ProbdiffError as e:
        raise ProbdiffError(f"{where}: {e}") from None
    return req


def check_options(model: str, options: dict, user: bool = False) -> None:
    """Each recorded option known to the model's family and of its default's type."""
    family = UserFamily if user or is_reference(model) else get_family(model)
    defaults = family.default_options()
    defaults.update(getattr(family, "resolved_options", {}))
    for key, value in options.items():
        if key not in defaults:
            raise ProbdiffError(f"unknown option {key!r} for model {model}")
        default = defaults[key]
        if default is None or value is None:
            continue
        kind = float if isinstance(default, float) else type(default)
        ok = isinstance(value, kind) and not (isinstance(value, bool) and kind is not bool)
        if kind is float and isinstance(value, int) and not isinstance(value, bool):
            ok = True
        if not ok:
            raise ProbdiffError(f"option {key!r} is {value!r}, expected a {kind.__name__}")
