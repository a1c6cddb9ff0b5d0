"""Chapter 1b: the VAE, a Pyro model whose guide is the encoder (and its NumPyro twin)."""

LIKELIHOODS = ("gaussian", "bernoulli", "discretized")
