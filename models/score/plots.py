"""Figures of the score-based models: Langevin down the noise levels, samples by solver."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from probdiff.plots import plt, save


def _cloud(ax, data, cloud, lim, color="C3", title=None):
    ax.scatter(data[:, 0], data[:, 1], s=2, c="0.75", linewidths=0)
    ax.scatter(cloud[:, 0], cloud[:, 1], s=2, alpha=0.6, c=color, linewidths=0)
    ax.set_xlim(-lim, lim)
    ax.set_ylim(-lim, lim)
    ax.set_xticks([])
    ax.set_yticks([])
    if title:
        ax.set_title(title, fontsize=8)


def langevin_levels_figure(
    path: Path, data: np.ndarray, levels: list, sigmas: list[float], paths: int = 6
) -> str:
    """Annealed Langevin particles (first two coordinates) after selected noise levels, over
    the data in grey; the last panel draws the path of a few chains across all levels."""
    picks = sorted({0, len(levels) // 3, 2 * len(levels) // 3, len(levels) - 1})
    lim = max(3.0, float(np.percentile(np.abs(data[:, :2]), 99)) * 1.3)
    fig, axes = plt.subplots(1, len(picks) + 1, figsize=(2.3 * (len(picks) + 1), 2.5))
    for ax, i in zip(axes, picks):
        _cloud(ax, data, levels[i].numpy(), lim, title=f"after sigma = {sigmas[i]:.3g}")
    stack = np.stack([lv.numpy()[:paths, :2] for lv in levels])  # (L, paths, 2)
    _cloud(axes[-1], data, stack[-1], lim, title="chains across levels")
    for j in range(stack.shape[1]):
        axes[-1].plot(stack[:, j, 0], stack[:, j, 1], lw=0.8, marker=".", ms=3)
    fig.tight_layout()
    return save(fig, path)


def solver_samples_figure(
    path: Path, data: np.ndarray, samples: dict[str, np.ndarray], labels: dict[str, str]
) -> str:
    """One panel per sampler: its samples (first two coordinates) over the data."""
    lim = max(3.0, float(np.percentile(np.abs(data[:, :2]), 99)) * 1.3)
    fig, axes = plt.subplots(1, len(samples), figsize=(2.5 * len(samples), 2.7), squeeze=False)
    for ax, (name, x) in zip(axes[0], samples.items()):
        _cloud(ax, data, x, lim, title=labels.get(name, name))
    fig.tight_layout()
    return save(fig, path)
