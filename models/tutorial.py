"""The steps of ``probdiff tutorial``: one fit per chapter section, on embedded data.

Each step is an ordinary ``probdiff fit`` request; ``quick`` overrides the settings for
``probdiff tutorial --quick`` (the README's first command).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from probdiff.models.ddpm.family import DDPMFamily
from probdiff.models.gmm.family import GMMFamily
from probdiff.models.score.ncsn_family import NCSNFamily
from probdiff.models.score.sde_family import SDEFamily
from probdiff.models.vae.family import VAEFamily


@dataclass
class Step:
    """One fit of the tutorial: a sub-folder name, a title and the request's settings."""

    folder: str
    title: str
    model: str
    data: str
    settings: dict
    quick: dict
    fit: dict = field(default_factory=dict)
    options: dict = field(default_factory=dict)


GMM_OPTIONS = GMMFamily.default_options()

STEPS = [
    Step(
        "gmm_em",
        "1a. Gaussian mixture by EM (the tutorial's encoder/decoder)",
        "gmm",
        "mixture2d",
        {"steps": 500, "restarts": 3},
        {},
        {"inference": "em"},
        GMM_OPTIONS,
    ),
    Step(
        "gmm_svi_pyro",
        "1a. Gaussian mixture by SVI, z enumerated (Pyro)",
        "gmm",
        "mixture2d",
        {"steps": 1000, "lr": 0.05, "restarts": 3},
        {"steps": 400, "restarts": 2},
        {},
        GMM_OPTIONS,
    ),
    Step(
        "gmm_svi_numpyro",
        "1a. Gaussian mixture by SVI, z enumerated (NumPyro)",
        "gmm",
        "mixture2d",
        {"steps": 1000, "lr": 0.05, "restarts": 3},
        {"steps": 400, "restarts": 2},
        {"backend": "numpyro"},
        GMM_OPTIONS,
    ),
    Step(
        "gmm_encoder",
        "1a. Gaussian mixture, amortised encoder q(z|x) as the guide (Pyro)",
        "gmm",
        "mixture2d",
        {"steps": 2000, "lr": 0.05, "restarts": 2},
        {"steps": 600, "restarts": 1},
        {},
        {**GMM_OPTIONS, "local_guide": "encoder"},
    ),
    Step(
        "gmm_nuts",
        "1a. Bayesian mixture, NUTS on the collapsed ordered model (NumPyro)",
        "gmm",
        "mixture2d:n=400",
        {},
        {},
        {"backend": "numpyro", "inference": "nuts"},
        {**GMM_OPTIONS, "prior": True, "globals_guide": "map", "ordered": True},
    ),
    Step(
        "vae_digits",
        "1b. VAE on 8x8 digits: decoder = model, encoder = guide (Pyro)",
        "vae",
        "digits",
        {"steps": 4000, "lr": 0.005},
        {"steps": 1500},
        {"posterior_samples": 20},
        VAEFamily.default_options(),
    ),
    Step(
        "ddpm_2d",
        "2. DDPM on the 2-D mixture: reverse chain = model, forward process = guide (Pyro)",
        "ddpm",
        "mixture2d",
        {"steps": 4000, "lr": 2e-3, "batch_size": 256},
        {"steps": 1500},
        {"posterior_samples": 2},
        DDPMFamily.default_options(T=100),
    ),
    Step(
        "ncsn_2d",
        "3. NCSN on the 2-D mixture: the NCSN loss as a program (guide = noising), "
        "annealed Langevin sampling (Pyro)",
        "ncsn",
        "mixture2d",
        {"steps": 4000, "lr": 2e-3, "batch_size": 256},
        {"steps": 1500},
        {},
        NCSNFamily.default_options(),
    ),
    Step(
        "sde_2d",
        "4. VP score SDE on the 2-D mixture: reverse-SDE and ODE samplers, exact "
        "likelihood by the probability-flow ODE (Pyro)",
        "sde",
        "mixture2d",
        {"steps": 4000, "lr": 2e-3, "batch_size": 256},
        {"steps": 1500},
        {},
        SDEFamily.default_options(),
    ),
]
