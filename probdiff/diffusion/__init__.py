"""The mathematics of the tutorial's diffusion chapters, free of the engine: noise schedules
(beta_t, abar_t, posterior coefficients), SDEs (VP, VE, sub-VP) and their reverse-time
solvers, likelihoods through the probability-flow ODE, divergence estimators, score-matching
losses, Langevin dynamics (and a Pyro MCMC kernel), the discretised Gaussian likelihood, and
closed-form scores of Gaussian mixtures. Nothing here imports the engine (fitting, run folders,
backends); :mod:`probdiff.errors` is the one shared module.
"""

# names a command line offers, here so that listing them loads no framework
SDE_NAMES = ("vp", "ve", "subvp")
SOLVERS = ("em", "reverse_diffusion", "pc", "ode", "ode_euler", "ode_heun")
