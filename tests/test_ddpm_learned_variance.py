"""Learned reverse variances and the hybrid objective (docs/equations.md (2.24)): the
interpolation's ends are the fixed chains, the hybrid trains the mean by L_simple alone and
the variance by lambda L_vlb alone, the per-datum estimator keeps the bound's expectation,
and a fit runs end to end."""

import json

import numpy as np
import pyro
import pytest
import torch
from pyro.infer import TraceMeanField_ELBO
from torch import nn

from probdiff.cli import main
from probdiff.data import load_dataset
from probdiff.diffusion.schedules import Schedule
from probdiff.guides.ddpm import MarginalGuide, PerDatumGuide
from probdiff.models.ddpm.chain import (
    DDPMPerDatumModel,
    DDPMTermsModel,
    ReverseChain,
    elbo_terms,
    hybrid_weight,
)
from probdiff.models.ddpm.networks import TimeMLP
from probdiff.models.ddpm.sampling import ancestral

T = 10


class Both(nn.Module):
    """eps from one MLP and v from another (or a constant), side by side."""

    def __init__(self, eps: nn.Module, v: nn.Module | float):
        super().__init__()
        self.eps_net = eps
        self.v = v

    def forward(self, x, t):
        e = self.eps_net(x, t)
        v = self.v(x, t) if isinstance(self.v, nn.Module) else torch.full_like(e, self.v)
        return torch.cat([e, v], -1)


@pytest.fixture(scope="module")
def setup():
    x = torch.tensor(load_dataset("mixture2d:n=200").flat())
    return x, Schedule.make("linear", T, beta_start=0.01, beta_end=0.3)


@pytest.fixture
def float64():
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(torch.float32)


def test_the_ends_of_the_interpolation_are_the_fixed_chains(setup, float64):
    """v = +1 gives beta_t (fixed_large) in every term, the decoder's beta_1 included, and
    the same ancestral samples; v = -1 gives sigma_q(t)^2 (fixed_small) for t >= 2."""
    x, schedule = setup
    torch.manual_seed(0)
    eps = TimeMLP(2, [16], T)
    for v, fixed in ((1.0, "fixed_large"), (-1.0, "fixed_small")):
        learned = ReverseChain(Both(eps, v), schedule, "eps", "learned")
        plain = ReverseChain(eps, schedule, "eps", fixed)
        terms = {}
        for name, chain in (("learned", learned), ("fixed", plain)):
            pyro.clear_param_store()
            pyro.set_rng_seed(3)
            with torch.no_grad():
                terms[name] = elbo_terms(DDPMTermsModel(chain), MarginalGuide(schedule), x[:50])
        torch.testing.assert_close(
            terms["learned"]["x_prev"], terms["fixed"]["x_prev"], rtol=1e-10, atol=1e-12
        )
        if v == 1.0:
            torch.testing.assert_close(
                terms["learned"]["x_0"], terms["fixed"]["x_0"], rtol=1e-10, atol=0
            )
            a, _ = ancestral(
                None,
                schedule,
                100,
                2,
                torch.Generator().manual_seed(1),
                dtype=torch.float64,
                mean_and_scale=learned.mean_and_scale,
            )
            b, _ = ancestral(
                plain.eps,
                schedule,
                100,
                2,
                torch.Generator().manual_seed(1),
                fixed,
                dtype=torch.float64,
            )
            torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)


def grads(model, guide, x, params, seed):
    pyro.clear_param_store()
    pyro.set_rng_seed(seed)
    for p in params:
        p.grad = None
    TraceMeanField_ELBO().differentiable_loss(model, guide, x).backward()
    return [p.grad.clone() if p.grad is not None else torch.zeros_like(p) for p in params]


def test_hybrid_trains_the_mean_by_l_simple_and_the_variance_by_lambda_l_vlb(setup, float64):
    """On the same draws: the hybrid's gradient on the mean's network equals that of
    L_simple alone (a fixed_small chain on the same network), and its gradient on the
    variance's network equals lambda times that of the bound with learned variances."""
    x, schedule = setup
    torch.manual_seed(1)
    eps_net, v_net = TimeMLP(2, [16], T), TimeMLP(2, [8], T)
    learned = ReverseChain(Both(eps_net, v_net), schedule, "eps", "learned")
    lam = 0.37
    hybrid = DDPMPerDatumModel(learned, "simple", hybrid_lambda=lam)
    simple = DDPMPerDatumModel(ReverseChain(eps_net, schedule, "eps", "fixed_small"), "simple")
    bound = DDPMPerDatumModel(learned, "elbo")
    e_params, v_params = list(eps_net.parameters()), list(v_net.parameters())
    hg = grads(hybrid, PerDatumGuide(schedule, hybrid.proposal, lam), x, e_params + v_params, 5)
    sg = grads(simple, PerDatumGuide(schedule, simple.proposal), x, e_params, 5)
    bg = grads(bound, PerDatumGuide(schedule, bound.proposal), x, v_params, 5)
    for a, b in zip(hg[: len(e_params)], sg):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-12)
    for a, b in zip(hg[len(e_params) :], bg):
        torch.testing.assert_close(a, lam * b, rtol=1e-9, atol=1e-12)
    assert any(float(g.abs().max()) > 1e-6 for g in bg)  # the variance does learn
    assert any(float(g.abs().max()) > 1e-6 for g in sg)  # and the mean (a gradient reached it)
    # their 0.001 at T = 1000 in these units (nats, summed over steps and coordinates) is
    # 1 / ln 2 (docs/equations.md (2.24)); it scales with T as their T / 1000 rescaling does
    assert hybrid_weight(1000) == pytest.approx(1.0 / np.log(2))
    assert hybrid_weight(4000) == pytest.approx(4 * hybrid_weight(1000))
    assert hybrid_weight(50) == pytest.approx(hybrid_weight(1000) / 20)


def test_per_datum_estimator_keeps_the_bound_with_learned_variances(setup, float64):
    """The per-datum ELBO of a learning chain (v from a network) and the closed bound have
    one expectation (3 standard errors)."""
    x, schedule = setup
    torch.manual_seed(2)
    chain = ReverseChain(Both(TimeMLP(2, [16], T), TimeMLP(2, [8], T)), schedule, "x0", "learned")
    xs = x.repeat(10, 1)
    pyro.clear_param_store()
    per_datum = DDPMPerDatumModel(chain)
    with torch.no_grad():
        a = np.array(
            [
                -TraceMeanField_ELBO().loss(
                    per_datum, PerDatumGuide(schedule, per_datum.proposal), xs
                )
                / len(xs)
                for _ in range(60)
            ]
        )
        b = np.array(
            [
                -TraceMeanField_ELBO().loss(DDPMTermsModel(chain), MarginalGuide(schedule), xs)
                / len(xs)
                for _ in range(20)
            ]
        )
    se = np.hypot(a.std(ddof=1) / np.sqrt(len(a)), b.std(ddof=1) / np.sqrt(len(b)))
    assert abs(a.mean() - b.mean()) < 3 * se, (a.mean(), b.mean(), se)


def test_a_hybrid_fit_runs_end_to_end(tmp_path, capsys):
    """fit (hybrid), sample, and evaluate reproducing the reported bound; the saved network
    has both outputs (eps and v) and the help lists the hybrid's options."""
    out = tmp_path / "run"
    argv = ["fit", "ddpm", "--data", "mixture2d:n=600", "--T", "20", "--steps", "40"]
    argv += ["--variance", "learned", "--weighting", "simple", "--hidden", "16"]
    assert main([*argv, "--ode-rows", "20", "--quiet", "--out", str(out)]) == 0
    m = json.loads((out / "metrics.json").read_text())
    assert np.isfinite(m["test_sliced_wasserstein"])  # the samples are finite
    assert main(["sample", str(out), "-n", "5"]) == 0
    assert main(["evaluate", str(out), "--quiet"]) == 0
    again = json.loads((out / "metrics.json").read_text())
    assert again["test_elbo"] == pytest.approx(m["test_elbo"], rel=1e-9)
    params = np.load(out / "params.npz")
    assert params["ddpm$$$net.net.2.weight"].shape[0] == 4  # eps and v for D = 2
    capsys.readouterr()
    with pytest.raises(SystemExit) as done:
        main([*argv[:2], "--help"])
    assert done.value.code == 0 and "hybrid" in capsys.readouterr().out


def test_clipped_decoder_variance_is_the_learned_chains_lower_end(setup, float64):
    """--decoder-variance clipped gives the decoder sigma_q(2)^2 (the published code's
    convention), which is where the learned interpolation ends at t = 1 with v = -1: the two
    chains' decoder terms agree on the same draws; with beta1 they differ."""
    x, schedule = setup
    torch.manual_seed(0)
    eps = TimeMLP(2, [16], T)
    learned = ReverseChain(Both(eps, -1.0), schedule, "eps", "learned")
    clipped = ReverseChain(eps, schedule, "eps", "fixed_small", decoder_variance="clipped")
    beta1 = ReverseChain(eps, schedule, "eps", "fixed_small")
    # sigma_q(2)^2 = beta_2 (1 - abar_1) / (1 - abar_2), from the schedule's betas
    abar1, abar2 = 1 - schedule.betas[1], (1 - schedule.betas[1]) * (1 - schedule.betas[2])
    sigma2 = schedule.betas[2] * (1 - abar1) / (1 - abar2)
    assert clipped.step_scale(1) == pytest.approx(np.sqrt(sigma2), rel=1e-12)
    x1 = x[:50] * 0.9
    with torch.no_grad():
        a = learned.decoder_dist(x1).log_prob(x[:50])
        b = clipped.decoder_dist(x1).log_prob(x[:50])
        c = beta1.decoder_dist(x1).log_prob(x[:50])
    torch.testing.assert_close(a, b, rtol=1e-12, atol=0)
    assert float((a - c).abs().max()) > 1e-3
