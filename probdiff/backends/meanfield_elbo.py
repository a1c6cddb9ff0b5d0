"""``TraceMeanField_ELBO`` without the log-densities it never uses (docs/equations.md (1.1)).

Pyro's ``TraceMeanField_ELBO`` takes each latent site's KL in closed form where one is
registered, yet its traces first evaluate ``log_prob`` at every model and guide site (and the
guide's score parts). Here only what enters the bound is computed: the observed sites'
log-densities, each latent site's KL(q || p), scaled and masked as the guide site is, and,
where no closed form exists, log p - log q at the drawn value (what Pyro's fallback computes).
The value and its gradients equal Pyro's (tests/test_meanfield_elbo.py).
"""

from __future__ import annotations

import torch
from pyro import poutine
from pyro.distributions.util import scale_and_mask
from pyro.infer import TraceMeanField_ELBO
from pyro.infer.util import is_validation_enabled, torch_item
from pyro.poutine.util import prune_subsample_sites
from torch.distributions import kl_divergence


def _log_prob_sum(site) -> torch.Tensor:
    value = site["fn"].log_prob(site["value"])
    return scale_and_mask(value, site["scale"], site["mask"]).sum()


class MeanFieldELBO(TraceMeanField_ELBO):
    """Drop-in for ``TraceMeanField_ELBO`` (same arguments, same value) that evaluates only
    the terms of the bound."""

    def _get_trace(self, model, guide, args, kwargs):
        if is_validation_enabled():  # Pyro's checks, at Pyro's cost
            return super()._get_trace(model, guide, args, kwargs)
        guide_trace = poutine.trace(guide).get_trace(*args, **kwargs)
        model_trace = poutine.trace(poutine.replay(model, trace=guide_trace)).get_trace(
            *args, **kwargs
        )
        return prune_subsample_sites(model_trace), prune_subsample_sites(guide_trace)

    def _differentiable_loss_particle(self, model_trace, guide_trace):
        elbo = 0.0
        for name, site in model_trace.nodes.items():
            if site["type"] != "sample":
                continue
            if site["is_observed"]:
                elbo = elbo + _log_prob_sum(site)
                continue
            guide_site = guide_trace.nodes[name]
            try:
                kl = kl_divergence(guide_site["fn"], site["fn"])
            except NotImplementedError:
                elbo = elbo + _log_prob_sum(site) - _log_prob_sum(guide_site)
                continue
            kl = scale_and_mask(kl, guide_site["scale"], guide_site["mask"])
            if torch.is_tensor(kl):
                elbo = elbo - kl.sum()
            else:  # a constant KL (e.g. 0) over the site's batch
                elbo = elbo - kl * torch.Size(guide_site["fn"].batch_shape).numel()
        for name, site in guide_trace.nodes.items():
            if site["type"] == "sample" and name not in model_trace.nodes:
                elbo = elbo - _log_prob_sum(site)  # an auxiliary guide site
        loss = -elbo
        return torch_item(loss), loss
