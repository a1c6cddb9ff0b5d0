"""probdiff's lean mean-field ELBO (probdiff/backends/meanfield_elbo.py) gives Pyro's
TraceMeanField_ELBO value and gradients on the same draws, on programs with closed-form KLs,
masks and scales (the DDPM per-datum program), a site without a registered KL (the
fallback log p - log q) and an auxiliary guide site."""

import numpy as np
import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro import poutine
from pyro.infer import TraceMeanField_ELBO

from probdiff.backends.meanfield_elbo import MeanFieldELBO
from probdiff.data import load_dataset
from probdiff.diffusion.schedules import Schedule
from probdiff.guides.ddpm import PerDatumGuide
from probdiff.models.ddpm.chain import DDPMPerDatumModel, ReverseChain
from probdiff.models.ddpm.networks import TimeMLP


def loss_and_grads(elbo, model, guide, params, *args):
    for p in params:
        p.grad = None
    loss = elbo.differentiable_loss(model, guide, *args)
    loss.backward()
    return float(loss.detach()), [p.grad.clone() for p in params]


def compare(model, guide, params, *args, seed=0):
    """Both ELBOs from one seed (so on the same draws: each runs the guide, then the model),
    validation off (the lean path) for probdiff's and on for Pyro's."""
    pyro.set_rng_seed(seed)
    with pyro.validation_enabled(True):
        want, want_g = loss_and_grads(TraceMeanField_ELBO(), model, guide, params, *args)
    pyro.set_rng_seed(seed)
    with pyro.validation_enabled(False):
        got, got_g = loss_and_grads(MeanFieldELBO(), model, guide, params, *args)
    assert got == pytest.approx(want, rel=1e-12)
    for a, b in zip(got_g, want_g):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)
    return got


@pytest.mark.parametrize("weighting", ["elbo", "simple"])
def test_ddpm_per_datum_program(weighting):
    torch.set_default_dtype(torch.float64)
    try:
        x = torch.tensor(load_dataset("mixture2d:n=300").flat())
        schedule = Schedule.make("linear", 20, beta_start=0.01, beta_end=0.2)
        torch.manual_seed(0)
        chain = ReverseChain(TimeMLP(2, [16], 20), schedule)
        model = DDPMPerDatumModel(chain, weighting)
        guide = PerDatumGuide(schedule, model.proposal)
        pyro.clear_param_store()
        params = list(chain.parameters())
        value = compare(model, guide, params, x, seed=3)
        assert abs(value) > 1.0
    finally:
        torch.set_default_dtype(torch.float32)


def test_fallback_and_auxiliary_sites():
    """A Gamma guide against a LogNormal prior has no registered KL (log p - log q at the
    draw); an auxiliary guide site contributes -log q; a masked and scaled observed site."""
    torch.set_default_dtype(torch.float64)
    try:
        data = torch.linspace(0.1, 3.0, 12)

        def model(y):
            s = pyro.sample("s", dist.LogNormal(0.0, 1.0))
            m = pyro.sample("m", dist.Normal(0.0, 2.0))
            with pyro.plate("data", len(y)), poutine.scale(scale=1.7):
                with poutine.mask(mask=y > 0.5):
                    pyro.sample("y", dist.Normal(m, s), obs=y)

        def guide(y):
            a = pyro.param("a", torch.tensor(2.0), constraint=dist.constraints.positive)
            loc = pyro.param("loc", torch.tensor(0.3))
            pyro.sample("s", dist.Gamma(a, 2.0))
            pyro.sample("m", dist.Normal(loc, 0.5))
            pyro.sample("aux", dist.Normal(loc, 1.0), infer={"is_auxiliary": True})

        pyro.clear_param_store()
        guide(data)
        params = [pyro.param("a").unconstrained(), pyro.param("loc").unconstrained()]
        for seed in range(3):
            compare(model, guide, params, data, seed=seed)
    finally:
        torch.set_default_dtype(torch.float32)


def test_training_steps_match_pyro_svi():
    """Ten SVI steps of the DDPM per-datum program from one seed follow the same parameters
    under probdiff's ELBO (validation off) as under Pyro's (float64, 1e-9)."""
    from pyro.infer import SVI
    from pyro.optim import Adam

    torch.set_default_dtype(torch.float64)
    try:
        x = torch.tensor(load_dataset("mixture2d:n=200").flat())
        schedule = Schedule.make("linear", 20, beta_start=0.01, beta_end=0.2)
        finals = []
        for elbo, validate in ((TraceMeanField_ELBO(), True), (MeanFieldELBO(), False)):
            pyro.clear_param_store()
            torch.manual_seed(0)
            chain = ReverseChain(TimeMLP(2, [16], 20), schedule)
            model = DDPMPerDatumModel(chain, "simple")
            svi = SVI(model, PerDatumGuide(schedule, model.proposal), Adam({"lr": 1e-2}), elbo)
            pyro.set_rng_seed(1)
            with pyro.validation_enabled(validate):
                losses = [svi.step(x) for _ in range(10)]
            finals.append((np.array(losses), [p.detach().clone() for p in chain.parameters()]))
        np.testing.assert_allclose(finals[0][0], finals[1][0], rtol=1e-9)
        for a, b in zip(finals[0][1], finals[1][1]):
            torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-12)
    finally:
        torch.set_default_dtype(torch.float32)
