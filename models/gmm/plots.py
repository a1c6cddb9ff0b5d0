"""Figures of a fitted Gaussian mixture: data coloured by responsibilities, posterior of the means."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from probdiff.data import Dataset
from probdiff.models.gmm import em as gmm_em
from probdiff.models.gmm.em import MixtureParams
from probdiff.plots import plt, save


def _projection(x: np.ndarray) -> tuple[np.ndarray, np.ndarray, str]:
    """(mean, 2 x D basis, label): identity for 2-D data, the top two principal axes otherwise."""
    mean = x.mean(0)
    if x.shape[1] <= 2:
        return np.zeros(x.shape[1]), np.eye(2, x.shape[1]), ""
    _, _, vt = np.linalg.svd(x - mean, full_matrices=False)
    return mean, vt[:2], " (first two principal axes)"


def mixture_figure(path: Path, data: Dataset, p: MixtureParams) -> str:
    """Data coloured by p(z | x) (each component a hue, mixed by responsibility), and each
    component's 1- and 2-sigma circles."""
    x = data.flat()
    resp = gmm_em.responsibilities(x, p)
    k = len(p.weights)
    hues = plt.get_cmap("tab10")(np.arange(k) % 10)[:, :3]
    colours = np.clip(resp @ hues, 0, 1)
    mean, basis, label = _projection(x)
    xy = (x - mean) @ basis.T
    if xy.shape[1] == 1:
        xy = np.column_stack([xy[:, 0], np.zeros(len(xy))])
    fig, ax = plt.subplots(figsize=(5.5, 5))
    ax.scatter(xy[:, 0], xy[:, 1], c=colours, s=6, alpha=0.7, linewidths=0)
    centres = (p.locs - mean) @ basis.T
    theta = np.linspace(0, 2 * np.pi, 100)
    for j in range(k):
        cx, cy = centres[j][0], centres[j][1] if centres.shape[1] > 1 else 0.0
        for r in (1, 2):
            ax.plot(
                cx + r * p.scales[j] * np.cos(theta),
                cy + r * p.scales[j] * np.sin(theta),
                color=hues[j],
                lw=1.4 if r == 1 else 0.8,
                alpha=0.9,
            )
        ax.annotate(
            f"{p.weights[j]:.2f}",
            (cx, cy),
            ha="center",
            va="center",
            fontsize=8,
            bbox={"boxstyle": "round", "fc": "white", "alpha": 0.7},
        )
    ax.set_title(
        f"mixture fit on {Path(str(data.name)).name}{label}\n"
        "colour = responsibilities p(z|x); circles = 1 and 2 sigma; labels = weights",
        fontsize=9,
    )
    ax.set_aspect("equal", adjustable="datalim")
    return save(fig, path)


def means_posterior_figure(path: Path, idata) -> str:
    """Posterior draws of the component means (first two coordinates), one colour per chain."""
    locs = idata.posterior["locs"].values  # (chain, draw, K, D)
    fig, ax = plt.subplots(figsize=(5, 4.5))
    for c in range(locs.shape[0]):
        pts = locs[c].reshape(-1, locs.shape[-1])
        ax.scatter(
            pts[:, 0],
            pts[:, 1] if pts.shape[1] > 1 else np.zeros(len(pts)),
            s=3,
            alpha=0.3,
            label=f"chain {c + 1}",
        )
    ax.set_xlabel("mu[:, 0]")
    ax.set_ylabel("mu[:, 1]")
    ax.set_title("posterior draws of the component means", fontsize=9)
    if locs.shape[0] > 1:
        ax.legend(fontsize=7, markerscale=3)
    return save(fig, path)
