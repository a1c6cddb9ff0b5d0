"""Figures of a fitted DDPM: forward and reverse trajectories, samples against data."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from probdiff.plots import plt, save


def trajectories_figure(
    path: Path, schedule, x0: np.ndarray, reverse: dict, event_shape, scaling
) -> str | None:
    """Top: the forward process q(x_t | x_0) applied to the data; bottom: the reverse
    chain's x_t from x_T ~ N(0, I), at the same steps t (2-D clouds, or image rows)."""
    ts = sorted(reverse, reverse=True)
    rng = np.random.default_rng(0)
    fwd = {t: schedule.q_sample(x0, np.full(len(x0), t), rng.standard_normal(x0.shape)) for t in ts}
    if len(event_shape) == 3:
        return _image_trajectories(path, ts, fwd, reverse, event_shape, scaling)
    if x0.shape[1] < 2:
        return None
    fig, axes = plt.subplots(2, len(ts), figsize=(2.1 * len(ts), 4.4), squeeze=False)
    lim = max(3.0, float(np.percentile(np.abs(x0[:, :2]), 99)) * 1.2)
    for j, t in enumerate(ts):
        for i, (label, cloud) in enumerate(
            (("forward q(x_t|x_0)", fwd[t]), ("reverse p(x_t)", reverse[t].numpy()))
        ):
            ax = axes[i, j]
            ax.scatter(cloud[:, 0], cloud[:, 1], s=2, alpha=0.5, c=f"C{i}", linewidths=0)
            ax.set_xlim(-lim, lim)
            ax.set_ylim(-lim, lim)
            ax.set_xticks([])
            ax.set_yticks([])
            if i == 0:
                ax.set_title(f"t = {t}", fontsize=9)
            if j == 0:
                ax.set_ylabel(label, fontsize=8)
    fig.tight_layout()
    return save(fig, path)


def _image_trajectories(path, ts, fwd, reverse, event_shape, scaling):
    c, h, w = event_shape
    if c not in (1, 3):
        return None
    rows = 4
    fig, axes = plt.subplots(
        rows + 1, len(ts), figsize=(1.1 * len(ts), 1.15 * (rows + 1)), squeeze=False
    )

    def show(ax, v):
        img = np.clip((v.reshape(c, h, w) + 1) / 2, 0, 1)
        ax.imshow(img[0] if c == 1 else img.transpose(1, 2, 0), cmap="gray", vmin=0, vmax=1)
        ax.axis("off")

    for j, t in enumerate(ts):
        show(axes[0, j], fwd[t][0])
        axes[0, j].set_title(f"t = {t}", fontsize=8)
        for i in range(rows):
            show(axes[i + 1, j], reverse[t][i].numpy())
    axes[0, 0].text(
        -0.1,
        0.5,
        "forward",
        transform=axes[0, 0].transAxes,
        rotation=90,
        ha="right",
        va="center",
        fontsize=8,
    )
    axes[1, 0].text(
        -0.1,
        0.5,
        "reverse",
        transform=axes[1, 0].transAxes,
        rotation=90,
        ha="right",
        va="center",
        fontsize=8,
    )
    return save(fig, path)


def samples_vs_data_figure(path: Path, samples: np.ndarray, data: np.ndarray) -> str | None:
    """Reverse-chain samples beside the data (first two coordinates), same axes."""
    if data.shape[1] < 2:
        return None
    fig, axes = plt.subplots(1, 2, figsize=(8, 4), sharex=True, sharey=True)
    for ax, (label, v, c) in zip(axes, (("data", data, "0.4"), ("samples", samples, "C3"))):
        ax.scatter(v[:, 0], v[:, 1], s=3, alpha=0.5, c=c, linewidths=0)
        ax.set_title(f"{label} ({len(v)})", fontsize=9)
    fig.tight_layout()
    return save(fig, path)


def kl_profile_figure(path: Path, kl_per_step: np.ndarray, parts: dict) -> str:
    """KL(q(x_{t-1}|x_t,x_0) || p_theta(x_{t-1}|x_t)) per datum against t (log scale), with
    the bound's three parts (``parts``: decoder, kl, prior) in the title."""
    t = np.arange(2, len(kl_per_step) + 2)
    fig, ax = plt.subplots(figsize=(6, 3.4))
    ax.semilogy(t, np.maximum(kl_per_step, 1e-12), lw=1.2)
    ax.set_xlabel("t")
    ax.set_ylabel("KL per datum (nats)")
    ax.set_title(
        "bound per datum = " + " + ".join(f"{k} {v:.3f}" for k, v in parts.items()), fontsize=8
    )
    ax.grid(alpha=0.3)
    return save(fig, path)
