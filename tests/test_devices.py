"""Networks and score functions keep every tensor on their input's device.

No GPU runs in CI, so the ``meta`` device stands in for one: a tensor created on the CPU
inside a forward pass (the bug a CUDA run found in ``time_features``) fails here exactly as
it would on ``cuda``. Pyro's sampling internals do not run on ``meta``, so whole programs
were run on a GPU by hand (README, "Score matching ...": the H200 check)."""

import pytest
import torch

from probdiff.diffusion.schedules import Schedule
from probdiff.diffusion.sde import ScheduleSDE, make_sde
from probdiff.models.ddpm.networks import TimeMLP, UNet
from probdiff.models.score.ncsn import NoiseConditionalScore
from probdiff.models.score.sde import TimeScore
from probdiff.models.vae.networks import ConvDecoderNet, ConvEncoderNet

META = "meta"


def on_meta(*shape):
    return torch.zeros(*shape, device=META)


@pytest.mark.parametrize("t", [3, "per-row", "float"])
def test_time_networks_on_another_device(t):
    mlp = TimeMLP(2, [8], 10).to(META)
    unet = UNet((1, 8, 8), [4, 8], 10).to(META)
    steps = {3: 3, "per-row": torch.arange(4), "float": torch.rand(4) * 10}[t]
    assert mlp(on_meta(4, 2), steps).device.type == META
    assert unet(on_meta(4, 64), steps).device.type == META


@pytest.mark.parametrize("sde", ["vp", "ve", "subvp", "schedule"])
def test_score_networks_on_another_device(sde):
    process = ScheduleSDE(Schedule.make("cosine", 10).abar) if sde == "schedule" else make_sde(sde)
    score = TimeScore(TimeMLP(2, [8], 1), process).to(META)
    assert score(on_meta(4, 2), torch.rand(4, device=META)).device.type == META
    ncsn = NoiseConditionalScore(TimeMLP(2, [8], 5), torch.linspace(1, 0.1, 5)).to(META)
    assert ncsn(on_meta(4, 2), torch.arange(4)).device.type == META


def test_vae_conv_networks_on_another_device():
    enc = ConvEncoderNet((1, 8, 8), [4, 8], 4).to(META)
    dec = ConvDecoderNet(2, (1, 8, 8), [4, 8]).to(META)
    assert enc(on_meta(3, 64)).device.type == META
    assert dec(on_meta(3, 2)).device.type == META


@pytest.mark.parametrize("variance", ["fixed_small", "fixed_large", "learned"])
def test_ddpm_chain_steps_stay_on_the_device(variance):
    """The reverse chain's mean and scale (ancestral sampling's one network call per step),
    at one step for every row and at a step per row."""
    from probdiff.models.ddpm.chain import ReverseChain

    outputs = 2 if variance == "learned" else 1
    net = TimeMLP(2, [8], 10, outputs=outputs)
    chain = ReverseChain(net, Schedule.make("linear", 10), "eps", variance).to(META)
    for t in (3, torch.arange(1, 5, device=META)):
        mean, scale = chain.mean_and_scale(on_meta(4, 2), t)
        assert mean.device.type == META
        assert not isinstance(scale, torch.Tensor) or scale.device.type == META


@pytest.mark.parametrize("importance", [False, True])
def test_ddpm_step_proposals_stay_on_the_device(importance):
    """The per-datum estimator's draw of each row's step and its weight: looked up on the
    device (a host round trip, e.g. ``bool(tensor)``, fails on ``meta``)."""

    from probdiff.models.ddpm.chain import ImportanceStepProposal, StepProposal

    weights = torch.linspace(1, 2, 11).numpy()
    proposal = (
        ImportanceStepProposal(10, weights) if importance else StepProposal(10, None, weights)
    )
    like = on_meta(4, 2)
    t = proposal.steps(torch.rand(4, device=META))
    assert t.device.type == META
    assert proposal.weights(t, like).device.type == META
    assert proposal.inverse(t, like).device.type == META
