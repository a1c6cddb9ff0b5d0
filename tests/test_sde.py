"""The SDE view meets the DDPM (docs/equations.md section 4): VP marginals as T grows, the chain's own
SDE, and the probability-flow likelihood of a trained chain beside its ELBO."""

import math

import numpy as np
import pytest
import torch

from probdiff.cli import main
from probdiff.diffusion.schedules import Schedule
from probdiff.diffusion.sde import VPSDE, ScheduleSDE, make_sde
from probdiff.errors import ProbdiffError


def vp_vs_ddpm(T: int) -> float:
    """max over t = i / T of the gap between the VP SDE's q(x_t|x_0) coefficients (beta(t) =
    0.1 + 19.9 t) and those of the DDPM with beta_i from 0.1 / T to 20 / T."""
    chain = Schedule.make("linear", T, beta_start=0.1 / T, beta_end=20.0 / T)
    a, std = VPSDE(0.1, 20.0).marginal(torch.arange(T + 1, dtype=torch.float64) / T)
    return max(
        np.abs(a.numpy() - np.sqrt(chain.abar)).max(),
        np.abs(std.numpy() - np.sqrt(1 - chain.abar)).max(),
    )


def test_vp_sde_marginal_is_the_limit_of_the_ddpm_marginal():
    """sum_i log(1 - beta_i) -> -int beta with an O(1/T) error (the Riemann sum and the
    log(1 - b) = -b + O(b^2) term): each tenfold T divides the gap by about ten."""
    gaps = {T: vp_vs_ddpm(T) for T in (100, 1000, 10000)}
    for T in (100, 1000):
        assert 8 < gaps[T] / gaps[10 * T] < 12, gaps
    assert gaps[10000] < 2e-4


def test_from_schedule_recovers_the_vp_parameters():
    chain = Schedule.make("linear", 1000)  # Ho et al.: 1e-4 .. 0.02
    sde = VPSDE.from_schedule(chain.betas[1:])
    assert sde.beta_min == pytest.approx(0.1) and sde.beta_max == pytest.approx(20.0)


@pytest.mark.parametrize("name", ["linear", "cosine", "scaled_linear"])
def test_schedule_sde_equals_the_chain_at_every_step(name):
    chain = Schedule.make(name, 50)
    sde = ScheduleSDE(chain.abar)
    a, std = sde.marginal(torch.arange(51, dtype=torch.float64) / 50)
    assert np.allclose(a.numpy(), np.sqrt(chain.abar), atol=1e-12)
    assert np.allclose(std.numpy(), np.sqrt(1 - chain.abar), atol=1e-12)
    # beta(t) is d B / dt: a centred difference inside a step
    t = torch.tensor([0.31, 0.77], dtype=torch.float64)
    h = 1e-6
    slope = (sde.integral(t + h) - sde.integral(t - h)) / (2 * h)
    assert torch.allclose(slope, sde.beta(t), rtol=1e-6)


def test_make_sde_rejects_bad_parameters():
    with pytest.raises(ProbdiffError, match="unknown SDE"):
        make_sde("vpp")
    with pytest.raises(ProbdiffError, match="sigma_min < sigma_max"):
        make_sde("ve", sigma_min=2.0, sigma_max=1.0)


@pytest.mark.slow
def test_ode_likelihood_of_a_trained_ddpm_is_above_its_elbo(tmp_path):
    """The ELBO bounds the chain's log p(x); the flow ODE with the same network is another
    model (exact likelihood, same score), so ODE >= ELBO is an expected property, not a
    theorem. Checked per held-out row, paired: mean(ODE - ELBO) > -3 s.e. of the differences."""
    from probdiff import open_run
    from probdiff.diffusion.ode_likelihood import ode_log_likelihood

    out = tmp_path / "ddpm"
    assert (
        main(
            [
                "fit",
                "ddpm",
                "--data",
                "mixture2d",
                "--out",
                str(out),
                "--T",
                "50",
                "--steps",
                "800",
                "--batch-size",
                "256",
                "--quiet",
                "--hidden",
                "64,64",
                "--posterior-samples",
                "1",
                "--ode-rows",
                "0",
            ]
        )
        == 0
    )
    run = open_run(out)
    family, params = run.family, run.params
    _, test = run.split()
    x = family.prepare(test)
    bound = family.variational_bound(params, x, seed=1)["rows"]
    sde, score = family.continuous_score(family.fitted_chain(params))
    with torch.no_grad():
        ode = ode_log_likelihood(sde, score, torch.as_tensor(x, dtype=torch.float32)).log_prob
    diff = ode.numpy() - bound
    se = diff.std(ddof=1) / math.sqrt(len(diff))
    assert diff.mean() > -3 * se, (diff.mean(), se)


@pytest.mark.parametrize("param", ["x0", "score"])
def test_continuous_score_at_a_step_is_the_chains_score(param):
    """At t = i / T the continuous reading of any parameterisation is the chain's own
    -eps_theta(x, i) / sqrt(1 - abar_i)."""
    from probdiff.data import load_dataset
    from probdiff.models.ddpm.family import DDPMFamily
    from probdiff.request import make_family

    family = make_family(
        "ddpm",
        DDPMFamily.default_options(T=20, parameterisation=param),
        load_dataset("mixture2d:n=50"),
    )
    chain = family.chain(seed=3)
    torch.nn.init.normal_(chain.net.net[-1].weight)  # not the zero-ish start
    sde, score = family.continuous_score(chain)
    x = torch.randn(6, 2, generator=torch.Generator().manual_seed(0))
    for i in (1, 7, 20):
        t = torch.full((6,), i / 20)
        expected = -chain.eps(x, i) / math.sqrt(1 - family.schedule.abar[i])
        assert torch.allclose(score(x, t), expected, rtol=1e-4, atol=1e-5)
