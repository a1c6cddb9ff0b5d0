"""DDPM as a Pyro program (docs/equations.md section 2): the ELBO estimators share one expectation."""

import numpy as np
import pyro
import pytest
import torch
from pyro.infer import SVI, Trace_ELBO, TraceMeanField_ELBO
from pyro.optim import Adam

from probdiff.data import load_dataset
from probdiff.diffusion.schedules import Schedule
from probdiff.guides.ddpm import BackwardGuide, ForwardGuide, MarginalGuide, PerDatumGuide
from probdiff.models.ddpm.chain import (
    DDPMModel,
    DDPMPerDatumModel,
    DDPMTermsModel,
    ReverseChain,
    StepProposal,
)
from probdiff.models.ddpm.networks import TimeMLP

T = 10


@pytest.fixture(scope="module")
def setup():
    x = torch.tensor(load_dataset("mixture2d:n=200").flat())
    schedule = Schedule.make("linear", T, beta_start=0.01, beta_end=0.3)
    return x, schedule


def estimates(model, schedule, x, repeats=40, copies=10):
    """Per-datum ELBO draws of (a) Trace_ELBO with the forward guide, (a) with the backward
    guide, (b) TraceMeanField_ELBO (closed-form KLs) with the backward guide, (c) the
    term-by-term form with 3 of the T - 1 steps subsampled, (d) one step per datum (Ho et
    al.'s Algorithm 1), uniform and from a skewed proposal. Each draw averages ``copies``
    independent chains per datum (the data stacked ``copies`` times)."""
    x = x.repeat(copies, 1)
    terms = DDPMTermsModel(model.chain, subsample=3)
    per_datum = DDPMPerDatumModel(model.chain)
    skewed = np.linspace(1.0, 3.0, schedule.T)
    skewed_model = DDPMPerDatumModel(model.chain, probs=skewed / skewed.sum())
    out = {}
    for name, mod, guide, elbo in (
        ("a_forward", model, ForwardGuide(schedule), Trace_ELBO()),
        ("a_backward", model, BackwardGuide(schedule), Trace_ELBO()),
        ("b_closed_form", model, BackwardGuide(schedule), TraceMeanField_ELBO()),
        ("c_subsampled", terms, MarginalGuide(schedule, 3), TraceMeanField_ELBO()),
        (
            "d_per_datum",
            per_datum,
            PerDatumGuide(schedule, per_datum.proposal),
            TraceMeanField_ELBO(),
        ),
        (
            "d_skewed",
            skewed_model,
            PerDatumGuide(schedule, skewed_model.proposal),
            TraceMeanField_ELBO(),
        ),
    ):
        with torch.no_grad():
            out[name] = np.array([-elbo.loss(mod, guide, x) / len(x) for _ in range(repeats)])
    return out


def two_chains(schedule, parameterisation, variance):
    """Two chains whose networks differ (seeds 0 and 1), for loss differences."""
    chains = []
    for seed in (0, 1):
        torch.manual_seed(seed)
        chains.append(ReverseChain(TimeMLP(2, [16], T), schedule, parameterisation, variance))
    return chains


def assert_same_mean(values):
    names = list(values)
    for i, a in enumerate(names):
        for b in names[i + 1 :]:
            va, vb = values[a], values[b]
            se = np.sqrt(va.var(ddof=1) / len(va) + vb.var(ddof=1) / len(vb))
            assert abs(va.mean() - vb.mean()) < 3 * se, (a, b, va.mean(), vb.mean(), se)


@pytest.mark.parametrize("parameterisation", ["eps", "x0", "score"])
def test_estimators_agree_before_and_after_training(setup, parameterisation):
    """Plain Trace_ELBO on the full chain (guide forwards or backwards), the rewritten ELBO
    with closed-form KLs and its timestep-subsampled form have one expectation (3 standard
    errors), at the initial weights and after 150 SVI steps on the rewritten bound."""
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


@pytest.mark.parametrize(
    "parameterisation,variance,subsample",
    [
        ("eps", "fixed_small", None),
        ("eps", "fixed_large", 3),
        ("x0", "fixed_small", 4),
        ("score", "fixed_large", None),
    ],
)
def test_unit_weights_give_l_simple_up_to_a_constant(setup, parameterisation, variance, subsample):
    """With weighting="simple" the SVI loss is sum_t ||eps - eps_theta(x_t, t)||^2 plus a
    constant: for two different networks and the same draws (same seed), the difference of the
    Pyro losses equals the difference of L_simple computed by hand from the guide's x_t."""
    from pyro import poutine

    torch.set_default_dtype(torch.float64)
    try:
        x, schedule = setup
        x = x[:50]
        nets = two_chains(schedule, parameterisation, variance)
        abar = torch.as_tensor(schedule.abar)

        def pyro_loss(chain):
            pyro.clear_param_store()
            pyro.set_rng_seed(7)
            model = DDPMTermsModel(chain, subsample, "simple")
            with torch.no_grad():
                return TraceMeanField_ELBO().loss(
                    model, MarginalGuide(schedule, subsample, model.step_weights), x
                )

        def by_hand(chain):
            pyro.set_rng_seed(7)
            tr = poutine.trace(MarginalGuide(schedule, subsample)).get_trace(x)
            t = tr.nodes["steps"]["value"] + 2
            xt, x1 = tr.nodes["x_t"]["value"], tr.nodes["x_1"]["value"]
            a = abar[t][:, None, None]
            eps = (xt - a.sqrt() * x) / (1 - a).sqrt()
            eps1 = (x1 - abar[1].sqrt() * x) / (1 - abar[1]).sqrt()
            with torch.no_grad():
                err = ((eps - chain.eps(xt, t[:, None].expand(len(t), len(x)))) ** 2).sum()
                err1 = ((eps1 - chain.eps(x1, 1)) ** 2).sum()
            return float(err1 + (T - 1) / len(t) * err)

        got = pyro_loss(nets[0]) - pyro_loss(nets[1])
        want = by_hand(nets[0]) - by_hand(nets[1])
        assert abs(want) > 1.0  # the two networks differ
        assert got == pytest.approx(want, rel=1e-9)
    finally:
        torch.set_default_dtype(torch.float32)


def test_step_proposal_draws_each_step_with_its_probability():
    """t = steps(u) over a fine grid of u hits each step in proportion to its probability, and
    weight 1/probs[t] makes the expected weight of every step exactly 1."""
    probs = np.arange(1.0, T + 1) ** 2
    probs /= probs.sum()
    for p in (None, probs):
        proposal = StepProposal(T, p)
        u = (torch.arange(100_000, dtype=torch.float64) + 0.5) / 100_000
        t = proposal.steps(u)
        assert int(t.min()) == 1 and int(t.max()) == T
        freq = np.bincount(t.numpy(), minlength=T + 1)[1:] / len(u)
        want = np.full(T, 1 / T) if p is None else p
        np.testing.assert_allclose(freq, want, atol=2e-5)
        np.testing.assert_allclose(freq * proposal.row_weights[1:], 1.0, atol=2e-3)
    with pytest.raises(ValueError, match="summing to 1"):
        StepProposal(T, np.full(T, 0.5))


@pytest.mark.parametrize(
    "parameterisation,variance", [("eps", "fixed_small"), ("x0", "fixed_large")]
)
def test_per_datum_simple_weighting_is_algorithm_1(setup, parameterisation, variance):
    """With weighting="simple" the per-datum program's loss is T sum_n ||eps_n -
    eps_theta(x_{t_n}, t_n)||^2 plus a constant (Ho et al.'s Algorithm 1 summed over the
    batch, times T): the difference of two networks' Pyro losses on the same draws equals the
    difference computed by hand from the guide's u and x_t, t = 1 included."""
    from pyro import poutine

    torch.set_default_dtype(torch.float64)
    try:
        x, schedule = setup
        x = x[:80]
        nets = two_chains(schedule, parameterisation, variance)
        abar = torch.as_tensor(schedule.abar)

        def pyro_loss(chain):
            pyro.clear_param_store()  # else pyro.module loads the other network's weights
            pyro.set_rng_seed(11)
            model = DDPMPerDatumModel(chain, "simple")
            with torch.no_grad():
                return TraceMeanField_ELBO().loss(model, PerDatumGuide(schedule, model.proposal), x)

        def by_hand(chain):
            pyro.set_rng_seed(11)
            tr = poutine.trace(PerDatumGuide(schedule, StepProposal(T))).get_trace(x)
            u, xt = tr.nodes["u_t"]["value"], tr.nodes["x_t"]["value"]
            t = torch.clamp((u * T).floor().long() + 1, max=T)
            a = abar[t][:, None]
            eps = (xt - a.sqrt() * x) / (1 - a).sqrt()
            assert set(t.tolist()) >= {1, T}  # the decoder's rows and the last step occur
            with torch.no_grad():
                return float(T * ((eps - chain.eps(xt, t)) ** 2).sum())

        got = pyro_loss(nets[0]) - pyro_loss(nets[1])
        want = by_hand(nets[0]) - by_hand(nets[1])
        assert abs(want) > 1.0
        assert got == pytest.approx(want, rel=1e-9)
    finally:
        torch.set_default_dtype(torch.float32)


@pytest.mark.parametrize("weighting", ["elbo", "simple"])
def test_numpyro_per_datum_twin_gives_the_same_elbo(setup, weighting):
    """The NumPyro per-datum model and guide, with the torch weights copied into Flax and the
    same u, x_T, x_t, x_prev substituted, give Pyro's estimate (float64, 1e-10)."""
    import jax.numpy as jnp
    from numpyro import handlers
    from pyro import poutine

    from probdiff.backends import get_backend
    from probdiff.guides.ddpm_numpyro import PerDatumGuide as NumPyroPerDatumGuide
    from probdiff.models.ddpm import chain_numpyro as dn
    from probdiff.program import Program

    torch.set_default_dtype(torch.float64)
    try:
        x, schedule = setup
        x = x[:60]
        torch.manual_seed(3)
        chain = ReverseChain(TimeMLP(2, [16, 8], T), schedule, "eps", "fixed_small")
        model = DDPMPerDatumModel(chain, weighting)
        guide = PerDatumGuide(schedule, model.proposal)
        pyro.set_rng_seed(5)
        tr = poutine.trace(guide).get_trace(x)
        with torch.no_grad():
            expected = -TraceMeanField_ELBO().loss(model, poutine.replay(guide, trace=tr), x)
        values = {k: tr.nodes[k]["value"].numpy() for k in ("u_t", f"x_{T}", "x_t", "x_prev")}

        backend = get_backend("numpyro", "cpu", "float64")
        module = dn.TimeMLP(2, (16, 8), T, dtype=jnp.float64)
        jmodel = dn.DDPMPerDatumModel(module, schedule, model.proposal)
        jguide = NumPyroPerDatumGuide(schedule, model.proposal)
        prog = Program(
            jmodel,
            handlers.substitute(jguide, data={k: jnp.asarray(v) for k, v in values.items()}),
            elbo="meanfield",
        )
        data = backend.array(x.numpy())
        backend.start(prog, data, lr=1e-3, seed=0)
        torch_state = {f"ddpm$$${k}": v.numpy() for k, v in chain.state_dict().items()}
        flat = {}
        for name, torch_name in zip(backend.params(), dn.numpyro_to_pyro_params(backend.params())):
            value = torch_state[torch_name]
            flat[name] = value.T if value.ndim == 2 else value
        backend.set_params(prog, data, flat)
        got, _ = backend.elbo(prog, data, num_particles=1, seed=0)
        assert got == pytest.approx(float(expected), rel=1e-10)
    finally:
        torch.set_default_dtype(torch.float32)


@pytest.mark.parametrize(
    "parameterisation,variance,weighting",
    [
        ("eps", "fixed_small", "elbo"),
        ("x0", "fixed_large", "elbo"),
        ("score", "fixed_small", "simple"),
    ],
)
def test_numpyro_twin_gives_the_same_elbo_at_the_same_weights(
    setup, parameterisation, variance, weighting
):
    """The NumPyro term-by-term model and guide, with the torch weights copied into Flax and
    the same x_1, x_T, x_t draws substituted, give Pyro's ELBO (all terms, float64, 1e-10)."""
    import jax
    import jax.numpy as jnp
    from numpyro import handlers
    from pyro import poutine

    from probdiff.backends import get_backend
    from probdiff.guides.ddpm_numpyro import MarginalGuide as NumPyroMarginalGuide
    from probdiff.models.ddpm import chain_numpyro as dn
    from probdiff.program import Program

    torch.set_default_dtype(torch.float64)
    try:
        x, schedule = setup
        x = x[:30]
        torch.manual_seed(3)
        chain = ReverseChain(TimeMLP(2, [16, 8], T), schedule, parameterisation, variance)
        model = DDPMTermsModel(chain, None, weighting)
        guide = MarginalGuide(schedule, None, model.step_weights)
        pyro.set_rng_seed(5)
        tr = poutine.trace(guide).get_trace(x)
        with torch.no_grad():
            expected = -TraceMeanField_ELBO().loss(model, poutine.replay(guide, trace=tr), x)
        values = {k: tr.nodes[k]["value"].numpy() for k in ("x_1", f"x_{T}", "x_t", "x_prev")}

        backend = get_backend("numpyro", "cpu", "float64")
        module = dn.TimeMLP(2, (16, 8), T, dtype=jnp.float64)
        jmodel = dn.DDPMTermsModel(
            module, schedule, parameterisation, variance, step_weights=model.step_weights
        )
        jguide = NumPyroMarginalGuide(schedule, None, model.step_weights)
        prog = Program(
            jmodel,
            handlers.substitute(jguide, data={k: jnp.asarray(v) for k, v in values.items()}),
            elbo="meanfield",
            max_plate_nesting=2,
        )
        data = backend.array(x.numpy())
        backend.start(prog, data, lr=1e-3, seed=0)
        torch_state = {f"ddpm$$${k}": v.numpy() for k, v in chain.state_dict().items()}
        flat = {}
        for name, torch_name in zip(backend.params(), dn.numpyro_to_pyro_params(backend.params())):
            value = torch_state[torch_name]
            flat[name] = value.T if value.ndim == 2 else value
        backend.set_params(prog, data, flat)
        got, _ = backend.elbo(prog, data, num_particles=1, seed=0)
        assert jax.config.jax_enable_x64
        assert got == pytest.approx(float(expected), rel=1e-10)
    finally:
        torch.set_default_dtype(torch.float32)


def test_importance_proposal_keeps_each_terms_last_values():
    """The history ring: rows sharing a step take consecutive slots, counts add up, pi is
    uniform until every step has ``history`` values, then proportional to the root mean
    square of each step's values (mixed with the floor), and weights are 1 / pi."""
    from probdiff.models.ddpm.chain import HISTORY_SITE, ImportanceStepProposal

    pyro.clear_param_store()
    prop = ImportanceStepProposal(4, history=3, floor=0.0)
    like = torch.zeros(())
    assert torch.allclose(prop.current_probs(like), torch.full((4,), 0.25))
    prop.record(torch.tensor([2, 2, 1, 2, 2]), torch.tensor([1.0, 2.0, 5.0, 3.0, 4.0]))
    h = pyro.param(HISTORY_SITE).detach()
    assert h[2].tolist() == [4.0, 2.0, 3.0, 4.0]  # slots 0,1,2 then 0 again; count 4
    assert h[1].tolist() == [5.0, 0.0, 0.0, 1.0]
    values = torch.tensor([[0.0] * 4, [1.0, 1, 1, 3], [2, 2, 2, 3], [3, 3, 3, 3], [0, 0, 6, 3]])
    pyro.get_param_store()[HISTORY_SITE] = values
    rms = torch.tensor([1.0, 2.0, 3.0, (36 / 3) ** 0.5])
    want = rms / rms.sum()
    torch.testing.assert_close(prop.current_probs(like), want)
    t = prop.steps(torch.tensor([0.0, 0.999]))
    assert t.tolist() == [1, 4]
    torch.testing.assert_close(prop.weights(t, like), 1 / want[t - 1])


def test_importance_sampled_steps_keep_the_expectation(setup):
    """With a learned (skewed) history the per-datum ELBO still estimates the closed bound
    (3 standard errors), and a training call records each row's closed-form KL (or the
    decoder's -log p), as the ELBO computes it, in the history."""
    from pyro import poutine

    from probdiff.models.ddpm.chain import HISTORY_SITE, elbo_terms

    torch.set_default_dtype(torch.float64)
    try:
        x, schedule = setup
        torch.manual_seed(0)
        chain = ReverseChain(TimeMLP(2, [16], T), schedule)
        pyro.clear_param_store()
        model = DDPMPerDatumModel(chain, timesteps="importance")
        guide = PerDatumGuide(schedule, model.proposal)
        history = torch.zeros(T + 1, 11)
        history[1:, :-1] = torch.linspace(0.1, 20.0, T)[:, None]
        history[:, -1] = 10
        pyro.param(HISTORY_SITE, history)
        probs = model.proposal.current_probs(history)
        assert probs.max() / probs.min() > 50
        closed = DDPMTermsModel(chain)
        xs = x.repeat(10, 1)
        with torch.no_grad():
            est = {
                name: np.array([-TraceMeanField_ELBO().loss(m, g, xs) / len(xs) for _ in range(60)])
                for name, m, g in (
                    ("importance", model, guide),
                    ("closed", closed, MarginalGuide(schedule)),
                )
            }
        assert_same_mean(est)

        # a training call (gradients on), from an empty history, records the rows' terms
        pyro.clear_param_store()
        model = DDPMPerDatumModel(chain, timesteps="importance")
        guide = PerDatumGuide(schedule, model.proposal)
        pyro.set_rng_seed(4)
        xb = x[:40]
        tr = poutine.trace(guide).get_trace(xb)
        poutine.replay(model, trace=tr)(xb)
        history = pyro.param(HISTORY_SITE).detach()
        t = model.proposal.steps(tr.nodes["u_t"]["value"])
        with torch.no_grad():
            terms = elbo_terms(model, poutine.replay(guide, trace=tr), xb)
        # elbo_terms scales a latent site's -KL by the guide's scale (T here), not the data's
        want = torch.where(t == 1, -terms["x_0"], -terms["x_prev"] / T)
        counts = torch.bincount(t, minlength=T + 1)
        assert torch.equal(history[:, -1], counts.double()) and counts.max() <= 10
        for step in range(1, T + 1):
            n = int(counts[step])
            torch.testing.assert_close(history[step, :n], want[t == step], rtol=1e-10, atol=0)
    finally:
        torch.set_default_dtype(torch.float32)
