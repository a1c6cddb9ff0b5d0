"""Generative programs, one folder per chapter of the tutorial: ``gmm`` (1a), ``vae`` (1b),
``ddpm`` (2), ``score`` (3 and 4: NCSN and the score SDE). Each holds its programs (a Pyro
model and its NumPyro twin), networks, family (the command-line glue), sampling and plots.

:data:`FAMILIES` names the module that registers each built-in family; the engine imports
one only when that family is asked for, so ``probdiff fit gmm --help`` loads the GMM alone.
"""

FAMILIES = {
    "gmm": "probdiff.models.gmm.family",
    "vae": "probdiff.models.vae.family",
    "ddpm": "probdiff.models.ddpm.family",
    "ncsn": "probdiff.models.score.ncsn_family",
    "sde": "probdiff.models.score.sde_family",
}

# the steps of ``probdiff tutorial`` (one fit per chapter), declared beside the models
TUTORIAL = "probdiff.models.tutorial"
