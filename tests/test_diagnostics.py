"""Diagnostics: the label-switching check, PSIS k-hat and the ArviZ summary."""

import numpy as np
import pytest
import xarray as xr

from probdiff.diagnostics import label_switching, psis_khat


def mixture_posterior(rng, permute: bool, chains=4, draws=500):
    """Draws around fixed means (K=3, D=2); with ``permute`` each chain uses its own labelling."""
    truth = np.array([[-2.0, 0.0], [0.0, 1.0], [2.0, -1.0]])
    perms = [[0, 1, 2], [2, 0, 1], [1, 2, 0], [0, 2, 1]]
    locs = np.empty((chains, draws, 3, 2))
    for c in range(chains):
        order = perms[c % 4] if permute else [0, 1, 2]
        locs[c] = truth[order] + 0.05 * rng.standard_normal((draws, 3, 2))
    return xr.Dataset({"locs": (("chain", "draw", "k", "d"), locs)})


def test_label_switching_is_flagged_and_clean_chains_pass():
    rng = np.random.default_rng(0)
    (line,) = label_switching(mixture_posterior(rng, permute=True), "locs")
    assert line.startswith("WARNING label switching") and "--ordered" in line
    (line,) = label_switching(mixture_posterior(rng, permute=False), "locs")
    assert line.startswith("label switching: none seen")


def test_poor_mixing_is_not_blamed_on_label_switching():
    rng = np.random.default_rng(1)
    post = mixture_posterior(rng, permute=False)
    post["locs"][1] += 1.0  # one chain stuck elsewhere, same labels
    (line,) = label_switching(post, "locs")
    assert line.startswith("WARNING poor mixing")


def test_psis_khat_small_for_matched_and_large_for_heavy_tailed_weights():
    """Importance weights of N(0,1) under N(0,1) proposals are constant (k-hat ~ 0); a proposal
    N(0, 0.5^2) for a N(0,1) target has weights with a Pareto tail of shape k = 1 - 0.25 = 0.75
    (Vehtari et al. 2015: for normal target/proposal with variance ratio r, k = 1 - 1/r)."""
    rng = np.random.default_rng(2)
    z = rng.standard_normal(4000)
    _, k_same = psis_khat(np.zeros((4000, 1)) + 1e-9 * z[:, None])
    assert k_same[0] < 0.3
    z = 0.5 * rng.standard_normal(20000)
    lw = (-0.5 * z**2) - (-0.5 * (z / 0.5) ** 2 - np.log(0.5))
    _, k = psis_khat(lw[:, None])
    assert k[0] == pytest.approx(0.75, abs=0.15)
