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

# what ``probdiff --help`` lists without importing any family: a line each, and the samplers
# ``probdiff sample --sampler`` accepts (the first is the default; NAME:STEPS sets the steps)
SUMMARIES = {
    "gmm": "Gaussian mixture (chapter 1): enumerated or encoder guide; SVI, EM or NUTS",
    "vae": "variational autoencoder (chapter 1): decoder as model, encoder as guide",
    "ddpm": "denoising diffusion (chapter 2): reverse chain as model, forward process as guide",
    "ncsn": "noise-conditional score network (chapter 3): annealed Langevin sampling",
    "sde": "score-based SDE, VP / VE / sub-VP (chapter 4): SDE and ODE samplers, ODE likelihood",
}
SAMPLERS = {
    "gmm": (),  # one sampler
    "vae": ("mean", "noisy"),
    "ddpm": ("ancestral", "ddim[:STEPS]"),
    "ncsn": ("annealed_langevin[:STEPS]",),
    "sde": (
        "ode_heun[:STEPS]",
        "ode_euler[:STEPS]",
        "ode",
        "em[:STEPS]",
        "reverse_diffusion[:STEPS]",
        "pc[:STEPS]",
    ),
}

# the steps of ``probdiff tutorial`` (one fit per chapter), declared beside the models
TUTORIAL = "probdiff.models.tutorial"
