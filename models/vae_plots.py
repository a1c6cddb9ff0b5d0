"""Figures of a fitted VAE: reconstructions, decoder samples, the latent space, PSIS k-hat."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from probdiff.plots import plt, save


def _as_images(x: np.ndarray, event_shape: tuple[int, ...]) -> np.ndarray | None:
    """(N, D) rows as (N, H, W) grey images when the data are images, else None."""
    if len(event_shape) != 3 or event_shape[0] != 1:
        return None
    return x.reshape((len(x),) + event_shape[1:])


def image_rows_figure(path: Path, rows: list[tuple[str, np.ndarray]], event_shape) -> str | None:
    """Rows of images (e.g. data above reconstructions); None if the data are not images."""
    imgs = [(label, _as_images(x, event_shape)) for label, x in rows]
    if any(v is None for _, v in imgs):
        return None
    cols = max(len(v) for _, v in imgs)
    fig, axes = plt.subplots(len(imgs), cols, figsize=(cols * 0.8, len(imgs) * 0.9), squeeze=False)
    for r, (label, v) in enumerate(imgs):
        for c in range(cols):
            ax = axes[r, c]
            ax.axis("off")
            if c < len(v):
                ax.imshow(v[c], cmap="gray")
        axes[r, 0].set_title(label, fontsize=8, loc="left")
    return save(fig, path)


def latent_figure(path: Path, mu: np.ndarray, labels: np.ndarray | None) -> str:
    """Encoder means mu(x) (first two latent coordinates), coloured by label when known."""
    fig, ax = plt.subplots(figsize=(5, 4.5))
    y = mu[:, 1] if mu.shape[1] > 1 else np.zeros(len(mu))
    if labels is not None:
        sc = ax.scatter(mu[:, 0], y, c=labels, cmap="tab10", s=5)
        fig.colorbar(sc, ax=ax, label="label")
    else:
        ax.scatter(mu[:, 0], y, c="C0", s=5)
    ax.set_xlabel("mu_1(x)")
    ax.set_ylabel("mu_2(x)")
    ax.set_title("latent space: encoder means", fontsize=9)
    return save(fig, path)


def khat_figure(path: Path, khat: np.ndarray) -> str:
    """Histogram of the per-datum PSIS k-hat of the encoder, with the 0.5 and 0.7 thresholds."""
    fig, ax = plt.subplots(figsize=(5, 3.4))
    ax.hist(khat, bins=40, color="C0", alpha=0.8)
    for t, ls in ((0.5, ":"), (0.7, "--")):
        ax.axvline(t, color="k", ls=ls, lw=1)
    ax.set_xlabel("PSIS k-hat of q(z|x) per datum")
    ax.set_ylabel("data points")
    ax.set_title(f"k-hat > 0.7 for {np.mean(khat > 0.7):.0%} of the data", fontsize=9)
    return save(fig, path)
