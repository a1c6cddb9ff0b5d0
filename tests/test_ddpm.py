"""DDPM as a Pyro program (MATH.md section 2): the ELBO estimators share one expectation."""

import numpy as np
import pyro
import pytest
import torch
from pyro.infer import SVI, Trace_ELBO, TraceMeanField_ELBO
from pyro.optim import Adam

from probdiff.data import load_dataset
from probdiff.guides.ddpm import BackwardGuide, ForwardGuide
from probdiff.models.ddpm import DDPMModel, ReverseChain
from probdiff.models.ddpm_networks import TimeMLP
from probdiff.schedules import Schedule

T = 10


@pytest.fixture(scope="module")
def setup():
    x = torch.tensor(load_dataset("mixture2d:n=200").flat())
    schedule = Schedule.make("linear", T, beta_start=0.01, beta_end=0.3)
    return x, schedule


def estimates(model, schedule, x, repeats=40, copies=10):
    """Per-datum ELBO draws of (a) Trace_ELBO with the forward guide, (a) with the backward
    guide, (b) TraceMeanField_ELBO (closed-form KLs) with the backward guide. Each draw
    averages ``copies`` independent chains per datum (the data stacked ``copies`` times)."""
    x = x.repeat(copies, 1)
    out = {}
    for name, guide, elbo in (("a_forward", ForwardGuide(schedule), Trace_ELBO()),
                              ("a_backward", BackwardGuide(schedule), Trace_ELBO()),
                              ("b_closed_form", BackwardGuide(schedule), TraceMeanField_ELBO())):
        with torch.no_grad():
            out[name] = np.array([-elbo.loss(model, guide, x) / len(x) for _ in range(repeats)])
    return out


def assert_same_mean(values):
    names = list(values)
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            va, vb = values[a], values[b]
            se = np.sqrt(va.var(ddof=1) / len(va) + vb.var(ddof=1) / len(vb))
            assert abs(va.mean() - vb.mean()) < 3 * se, (a, b, va.mean(), vb.mean(), se)


@pytest.mark.parametrize("parameterisation", ["eps", "x0", "score"])
def test_estimators_agree_before_and_after_training(setup, parameterisation):
    """Plain Trace_ELBO on the full chain (guide forwards or backwards) and the rewritten ELBO
    with closed-form KLs have one expectation (3 standard errors), at the initial weights and
    after 150 SVI steps on the rewritten bound."""
    torch.set_default_dtype(torch.float64)
    try:
        x, schedule = setup
        torch.manual_seed(0)
        model = DDPMModel(ReverseChain(TimeMLP(2, [32], T), schedule, parameterisation))
        pyro.set_rng_seed(0)
        before = estimates(model, schedule, x)
        assert_same_mean(before)
        svi = SVI(model, BackwardGuide(schedule), Adam({"lr": 0.01}), TraceMeanField_ELBO())
        for _ in range(150):
            svi.step(x)
        after = estimates(model, schedule, x)
        assert_same_mean(after)
        assert after["b_closed_form"].mean() > before["b_closed_form"].mean()
    finally:
        torch.set_default_dtype(torch.float32)
