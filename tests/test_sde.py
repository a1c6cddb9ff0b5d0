"""The SDE view meets the DDPM (MATH.md section 4): VP marginals as T grows, the chain's own
SDE, and the probability-flow likelihood of a trained chain beside its ELBO."""

import json
import math

import numpy as np
import pytest
import torch

from probdiff.cli import main
from probdiff.schedules import Schedule
from probdiff.sde import ScheduleSDE, VPSDE, make_sde
from probdiff.errors import ProbdiffError


def vp_vs_ddpm(T: int) -> float:
    """max over t = i / T of the gap between the VP SDE's q(x_t|x_0) coefficients (beta(t) =
    0.1 + 19.9 t) and those of the DDPM with beta_i from 0.1 / T to 20 / T."""
    chain = Schedule.make("linear", T, beta_start=0.1 / T, beta_end=20.0 / T)
    a, std = VPSDE(0.1, 20.0).marginal(torch.arange(T + 1, dtype=torch.float64) / T)
    return max(np.abs(a.numpy() - np.sqrt(chain.abar)).max(),
               np.abs(std.numpy() - np.sqrt(1 - chain.abar)).max())


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


def test_ode_likelihood_of_a_trained_ddpm_is_above_its_elbo(tmp_path):
    """The flow ODE of the trained chain gives a log-likelihood; the chain's ELBO is a bound:
    on the same held-out rows the ODE value is not below the ELBO beyond 3 combined s.e."""
    out = tmp_path / "ddpm"
    assert main(["fit", "ddpm", "--data", "mixture2d", "--out", str(out), "--T", "50",
                 "--steps", "800", "--batch-size", "256", "--quiet", "--hidden", "64,64",
                 "--posterior-samples", "1"]) == 0
    m = json.loads((out / "metrics.json").read_text())
    se = math.hypot(m["test_elbo_stderr"], m["test_ode_log_likelihood_stderr"])
    assert m["test_ode_log_likelihood"] > m["test_elbo"] - 3 * se
    assert m["ode_bits_per_dim"] < m["bits_per_dim"] + 3 * se / (2 * math.log(2))
