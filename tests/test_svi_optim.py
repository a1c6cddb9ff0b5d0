"""The Pyro backend's optimiser (probdiff/backends/optim.py) is Pyro's ClippedAdam: the same
parameters step for step, state that moves between the two, and no import of the compiler
(torch._dynamo) in a fit."""

import copy
import subprocess
import sys

import pyro
import torch
from pyro.optim import ClippedAdam as PyroClippedAdam

from probdiff.backends.optim import clipped_adam


def trajectory(make_optim, steps=25, state=None):
    pyro.clear_param_store()
    pyro.set_rng_seed(0)
    w = pyro.param("w", torch.linspace(-1.0, 1.0, 5))
    optim = make_optim({"lr": 0.05, "clip_norm": 0.3, "lrd": 0.99})
    out = []
    for i in range(steps):
        w = pyro.param("w").unconstrained()
        loss = ((w - torch.arange(5.0)) ** 4).sum() * (1 + i % 3)
        loss.backward()
        optim([w])
        w.grad = None
        out.append(w.detach().clone())
        if state is not None and i == 9:
            state["saved"] = copy.deepcopy(optim.get_state())  # live tensors otherwise
    return optim, out


def test_same_steps_as_pyros_clipped_adam():
    _, ours = trajectory(clipped_adam)
    _, pyros = trajectory(PyroClippedAdam)
    for a, b in zip(ours, pyros):
        assert torch.equal(a, b)
    assert not torch.equal(ours[0], ours[-1])  # it moved (clipped: 0.3 per entry at most)


def test_state_moves_between_the_two():
    """A checkpoint's optimiser state from Pyro's class resumes in probdiff's and the other
    way round, continuing exactly."""
    state: dict = {}
    _, full = trajectory(PyroClippedAdam, state=state)
    for make in (clipped_adam, PyroClippedAdam):
        pyro.clear_param_store()
        w = pyro.param("w", full[9].clone())
        optim = make({"lr": 0.05, "clip_norm": 0.3, "lrd": 0.99})
        optim.set_state(copy.deepcopy(state["saved"]))  # loading shares the tensors
        for i in range(10, 25):
            w = pyro.param("w").unconstrained()
            (((w - torch.arange(5.0)) ** 4).sum() * (1 + i % 3)).backward()
            optim([w])
            w.grad = None
            assert torch.equal(w.detach(), full[i])


def test_a_fit_does_not_import_the_compiler(tmp_path):
    code = (
        "import sys\n"
        "from probdiff.cli import main\n"
        f"main(['fit', 'gmm', '--data', 'blobs', '--steps', '3', '--checkpoint-every', '1',"
        f" '--quiet', '--out', {str(tmp_path / 'r')!r}])\n"
        "print('torch._dynamo' in sys.modules, 'torch' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.splitlines()[-1] == "False True", out.stdout
