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
    "ddpm": ("ancestral", "ddim[:STEPS]", "ode_heun[:STEPS]"),
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

# what the report page shows of each family: a few sentences on what it demonstrates (with its
# equation numbers) and the model and guide source, read from the code
ABOUT = {
    "gmm": "The first latent-variable model: a datum's component z is the latent, the "
    "responsibilities p(z | x) are the encoder and drawing x from N(mu_z, sigma_z^2 I) the decoder "
    "(equations 1.6-1.7). Under SVI the assignment is enumerated, so the ELBO equals log p(x) at "
    "the optimum; EM and scikit-learn reach the same log-likelihood, and NUTS samples the "
    "Bayesian variant with ordered means.",
    "vae": "The decoder p(x | z) is the model and the encoder q(z | x) the guide, so SVI "
    "maximises the ELBO of equation 1.1 with reparameterised gradients (1.13-1.15). The "
    "importance-weighted bound IWAE_K (1.2) tightens it, and the Pareto k-hat of the weights says where the "
    "encoder misses the posterior.",
    "ddpm": "The reverse chain p(x_T) prod p(x_{t-1} | x_t) is the model and the forward "
    "noising process the guide (equations 2.3-2.6). Written backwards, each guide site meets its "
    "model site as two Gaussians whose KL is closed form (2.8-2.10), so timesteps can be "
    "subsampled without bias: one step per datum by default, Ho et al.'s Algorithm 1 as an "
    "unbiased ELBO (2.22); the bound is reported term by term and in bits per dimension.",
    "ncsn": "A noise-conditional score network trained by denoising score matching at several "
    "noise levels (equations 3.7-3.9), written as a program whose guide is the noising "
    "process; samples come from annealed Langevin dynamics (3.10).",
    "sde": "The score model of the SDE view: forward VP / VE / sub-VP diffusions (equations "
    "4.1-4.7), reverse-time SDE and probability-flow ODE samplers side by side, and the exact "
    "log-likelihood of the flow by the instantaneous change of variables (4.14).",
}
SOURCES = {
    "gmm": ("probdiff.models.gmm.model:GaussianMixture", "probdiff.guides.gmm:MixtureGuide"),
    "vae": ("probdiff.models.vae.model:VAEModel", "probdiff.guides.vae:VAEGuide"),
    "ddpm": (
        "probdiff.models.ddpm.chain:DDPMPerDatumModel",
        "probdiff.guides.ddpm:PerDatumGuide",
    ),
    "ncsn": (
        "probdiff.models.score.ncsn:NCSNModel",
        "probdiff.guides.score_matching:NoiseLevelGuide",
    ),
    "sde": ("probdiff.models.score.sde:ScoreSDEModel", "probdiff.guides.score_matching:SDEGuide"),
}

# the steps of ``probdiff tutorial`` (one fit per chapter), declared beside the models
TUTORIAL = "probdiff.models.tutorial"
