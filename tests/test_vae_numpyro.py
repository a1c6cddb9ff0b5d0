"""The NumPyro twin of the VAE (docs/equations.md 1.13-1.17): same density as the Pyro program, and a CLI fit."""

import json

import jax.numpy as jnp
import numpy as np
import pytest

from probdiff.cli import main


def pyro_log_weights(program, x, z) -> np.ndarray:
    """log p(x_n, z_n) - log q(z_n | x_n) per datum under Pyro, at the given z."""
    import pyro
    from pyro import poutine

    total = 0.0
    for fn, sign in ((program.model, 1.0), (program.guide, -1.0)):
        tr = poutine.trace(poutine.condition(fn, data={"z": z})).get_trace(x)
        tr.compute_log_prob()
        total = total + sign * sum(
            site["log_prob"] for site in tr.nodes.values() if site["type"] == "sample"
        )
    pyro.clear_param_store()
    return total.detach().numpy()


def to_flax(value: np.ndarray) -> np.ndarray:
    """A torch weight as a Flax kernel: Linear (out, in) -> (in, out); Conv2d (out, in, kh, kw)
    -> (kh, kw, in, out). Biases and scales unchanged."""
    if value.ndim == 2:
        return value.T
    return value.transpose(2, 3, 1, 0) if value.ndim == 4 else value


@pytest.mark.parametrize(
    "sigma_dec,net,likelihood",
    [
        ("learn", "mlp", "gaussian"),
        ("0.3", "mlp", "gaussian"),
        ("learn", "mlp", "bernoulli"),
        ("learn", "mlp", "discretized"),
        ("learn", "conv", "gaussian"),
        ("0.2", "conv", "discretized"),
    ],
)
def test_numpyro_and_pyro_log_weights_agree_at_fixed_z(sigma_dec, net, likelihood):
    """With the torch weights copied into the Flax parameters (kernels transposed), the per-datum
    log p(x, z) - log q(z | x) at the same z agrees between the backends in float64, for every
    network and likelihood."""
    import pyro
    import torch
    from numpyro import handlers

    from probdiff.backends import get_backend
    from probdiff.data import load_dataset
    from probdiff.models.vae.family import VAEFamily, numpyro_to_pyro_params
    from probdiff.program import Program

    data = load_dataset("digits")
    fam = VAEFamily(
        VAEFamily.default_options(
            hidden="32,16",
            latent_dim=3,
            sigma_dec=sigma_dec,
            net=net,
            channels="4,6",
            likelihood=likelihood,
        ),
        data,
    )
    x = fam.prepare(data)[:40]
    pyro.clear_param_store()
    torch_prog = fam.program("pyro", x, seed=1, dtype="float64")
    with torch.no_grad():  # a learned scale away from its start at 0
        if likelihood != "bernoulli":
            torch_prog.model.decoder.log_scale.add_(-0.7 if sigma_dec == "learn" else 0.0)
    z = np.random.default_rng(0).normal(size=(len(x), 3))
    expected = pyro_log_weights(torch_prog, torch.as_tensor(x), torch.as_tensor(z))

    backend = get_backend("numpyro", "cpu", "float64")
    prog = fam.program("numpyro", x, seed=0, dtype="float64")
    data_j = backend.array(x)
    backend.start(prog, data_j, lr=1e-3, seed=0)
    names = numpyro_to_pyro_params(backend.params())  # flax names -> torch names, same order
    torch_values = {
        **{f"encoder$$${k}": v for k, v in torch_prog.guide.encoder.state_dict().items()},
        **{f"decoder$$${k}": v for k, v in torch_prog.model.decoder.state_dict().items()},
    }
    flat = {}
    for flax_name, torch_name in zip(backend.params(), names):
        value = torch_values[torch_name].numpy()
        flat[flax_name] = to_flax(value)
    if sigma_dec != "learn" or likelihood == "bernoulli":
        assert "decoder_log_scale" not in flat
    backend.set_params(prog, data_j, flat)
    for name, value in backend.params().items():  # the copy took
        np.testing.assert_array_equal(value, flat[name])

    # substitute, not condition: z stays a sampled site of the guide (SVI's init replays it)
    conditioned = Program(prog.model, handlers.substitute(prog.guide, data={"z": jnp.asarray(z)}))
    backend.start(conditioned, data_j, lr=1e-3, seed=0)
    backend.set_params(conditioned, data_j, flat)
    got = backend.local_log_weights(conditioned, data_j, num_samples=2, seed=0)
    assert got.shape == (2, len(x)) and got.dtype == np.float64
    np.testing.assert_allclose(got[0], expected, rtol=1e-5)
    np.testing.assert_allclose(got[1], expected, rtol=1e-5)


def test_numpyro_fit_through_the_cli(tmp_path):
    out = tmp_path / "vae"
    assert (
        main(
            [
                "fit",
                "vae",
                "--data",
                "digits",
                "--out",
                str(out),
                "--backend",
                "numpyro",
                "--steps",
                "200",
                "--quiet",
                "--iwae-k",
                "5",
                "--posterior-samples",
                "5",
            ]
        )
        == 0
    )
    m = json.loads((out / "metrics.json").read_text())
    assert m["backend"] == "numpyro"
    # on the same held-out rows IWAE_5 exceeds the ELBO unless q(z | x) is the exact posterior
    # (Burda et al. 2016), beyond the Monte Carlo errors of the two: a log-mean-exp of the
    # weights replaced by a mean of logs, or one particle, would make them equal
    se = np.hypot(m["test_iwae_stderr"], m["test_elbo_stderr"])
    assert m["iwae"] - m["test_elbo"] > 4 * se, (m["iwae"], m["test_elbo"], se)
