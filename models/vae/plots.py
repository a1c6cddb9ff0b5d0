"""Figures of a fitted VAE: reconstructions, decoder samples, the latent space, PSIS k-hat."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from probdiff.plots import plt, save


def _as_images(x: np.ndarray, event_shape: tuple[int, ...]) -> np.ndarray | None:
    """(N, D) rows as (N, H, W) grey or (N, H, W, 3) colour images, else None."""
    if len(event_shape) != 3 or event_shape[0] not in (1, 3):
        return None
    x = x.reshape((len(x),) + tuple(event_shape))
    return x[:, 0] if event_shape[0] == 1 else x.transpose(0, 2, 3, 1)


def image_rows_figure(
    path: Path,
    rows: list[tuple[str, np.ndarray]],
    event_shape,
    value_range: tuple[float, float] | None = None,
) -> str | None:
    """Rows of images (e.g. data above reconstructions) on one grey scale (``value_range``,
    default the range of all rows); None if the data are not images."""
    imgs = [(label, _as_images(x, event_shape)) for label, x in rows]
    if any(v is None for _, v in imgs):
        return None
    if value_range is None:
        value_range = (min(float(v.min()) for _, v in imgs), max(float(v.max()) for _, v in imgs))
    lo, hi = value_range
    if event_shape[0] == 3:  # colour: imshow wants floats in [0, 1]
        imgs = [(label, np.clip((v - lo) / max(hi - lo, 1e-12), 0, 1)) for label, v in imgs]
        lo, hi = 0.0, 1.0
    cols = max(len(v) for _, v in imgs)
    fig, axes = plt.subplots(len(imgs), cols, figsize=(cols * 0.8, len(imgs) * 0.9), squeeze=False)
    for r, (label, v) in enumerate(imgs):
        for c in range(cols):
            ax = axes[r, c]
            ax.axis("off")
            if c < len(v):
                ax.imshow(v[c], cmap="gray", vmin=lo, vmax=hi)
        axes[r, 0].set_title(label, fontsize=8, loc="left")
    return save(fig, path)


def latent_figure(path: Path, mu: np.ndarray, labels: np.ndarray | None) -> str:
    """Encoder means mu(x), coloured by label when known: the two coordinates of a 2-D latent,
    else their projection on the first two principal components."""
    fig, ax = plt.subplots(figsize=(5, 4.5))
    if mu.shape[1] > 2:
        centred = mu - mu.mean(0)
        _, sv, vt = np.linalg.svd(centred, full_matrices=False)
        xy = centred @ vt[:2].T
        share = sv[:2] ** 2 / (sv**2).sum()
        names = [f"PC{i + 1} of mu(x) ({share[i]:.0%} of variance)" for i in range(2)]
    else:
        xy = np.column_stack([mu[:, 0], mu[:, 1] if mu.shape[1] > 1 else np.zeros(len(mu))])
        names = ["mu_1(x)", "mu_2(x)"]
    if labels is not None:
        sc = ax.scatter(xy[:, 0], xy[:, 1], c=labels, cmap="tab10", s=5)
        fig.colorbar(sc, ax=ax, label="label")
    else:
        ax.scatter(xy[:, 0], xy[:, 1], c="C0", s=5)
    ax.set_xlabel(names[0])
    ax.set_ylabel(names[1])
    ax.set_title(f"latent space: encoder means (L = {mu.shape[1]})", fontsize=9)
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
