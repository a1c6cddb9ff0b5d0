"""Figures every fit gets: the ELBO trace, trace/rank plots of MCMC posteriors, posterior and
predictive checks."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np


def save(fig, path: Path) -> str:
    """Save through a unique temporary name so a figure is never half-written."""
    from probdiff.runfolder import publish, temporary

    path = Path(path)
    tmp = temporary(path)
    try:
        fig.savefig(tmp, dpi=110, bbox_inches="tight", format=path.suffix.lstrip(".") or "png")
        publish(tmp, path)
    finally:
        plt.close(fig)
        tmp.unlink(missing_ok=True)
    return path.name


def elbo_trace_figure(
    path: Path,
    elbo: np.ndarray,
    reference: dict[str, float] | None = None,
    test: tuple[np.ndarray, np.ndarray] | None = None,
    objective: str = "ELBO",
    held_out: str = "ELBO",
) -> str:
    """The training objective (an ELBO unless named otherwise) per datum against step, one
    line per restart (chain), with reference levels; with ``test = (steps, values (chain,
    len(steps)))`` the held-out trace (``held_out`` names it) beside each training line."""
    fig, ax = plt.subplots(figsize=(6, 3.6))
    elbo = np.atleast_2d(elbo)
    many = len(elbo) > 1
    for i, row in enumerate(elbo):
        row = row[np.isfinite(row)]
        window = max(1, len(row) // 50)
        smooth = np.convolve(row, np.ones(window) / window, mode="valid") if len(row) else row
        ax.plot(
            np.arange(len(smooth)) + window,
            smooth,
            lw=1.2,
            color=f"C{i % 10}",
            label=f"restart {i + 1} train {objective}" if many else f"train {objective}",
        )
    shown = [elbo[np.isfinite(elbo)]]
    if test is not None:
        steps, values = test[0], np.atleast_2d(test[1])
        for i, row in enumerate(values):
            ok = np.isfinite(row)
            ax.plot(
                steps[ok],
                row[ok],
                ls="--",
                marker=".",
                ms=3,
                lw=1,
                color=f"C{i % 10}",
                label=f"restart {i + 1} held-out {held_out}" if many else f"held-out {held_out}",
            )
        shown.append(values[np.isfinite(values)])
    finite = np.concatenate(shown)
    if finite.size:
        ax.set_ylim(np.percentile(finite, 5), None)
    for (name, value), ls in zip((reference or {}).items(), ("--", ":", "-.")):
        ax.axhline(value, ls=ls, lw=1, color="k", alpha=0.7, label=f"{name} {value:.4f}")
    ax.set_xlabel("step")
    ax.set_ylabel("per datum (nats)" if objective != "ELBO" else "ELBO per datum (nats)")
    ax.legend(fontsize=8, loc="lower right")
    ax.grid(alpha=0.3)
    return save(fig, path)


def mcmc_figures(folder: Path, idata, var_names: list[str]) -> list[str]:
    """ArviZ trace and rank plots of the named posterior variables."""
    import arviz as az

    names = []
    axes = az.plot_trace(
        idata, var_names=var_names, compact=True, figsize=(9, 2.2 * len(var_names))
    )
    np.ravel(axes)[0].figure.tight_layout()
    names.append(save(np.ravel(axes)[0].figure, folder / "trace.png"))
    panels = sum(int(np.prod(idata.posterior[v].shape[2:])) for v in var_names)
    axes = az.plot_rank(
        idata, var_names=var_names, figsize=(11, 2.6 * int(np.ceil(panels / 3))), labeller=None
    )
    np.ravel(axes)[0].figure.tight_layout()
    names.append(save(np.ravel(axes)[0].figure, folder / "rank.png"))
    return names


def posterior_figures(folder: Path, idata, max_panels: int = 12) -> list[str]:
    """ArviZ's posterior densities of the global latent sites (``posterior.png``, at most
    ``max_panels`` scalar components) and its posterior-predictive check (``ppc.png``)."""
    import warnings

    import arviz as az

    names = []
    row_dim = idata.posterior.attrs.get("row_dim", "row") if "posterior" in idata.groups() else ""
    if "posterior" in idata.groups():
        post = idata.posterior
        small = [
            k
            for k, v in post.data_vars.items()
            if row_dim not in v.dims and np.prod(v.shape[2:], dtype=int) <= max_panels
        ]
        panels, chosen = 0, []
        for k in small:
            size = int(np.prod(post[k].shape[2:], dtype=int))
            if panels + size <= max_panels:
                chosen.append(k)
                panels += size
        if chosen:
            cols = min(3, panels)
            axes = az.plot_posterior(
                idata,
                var_names=chosen,
                figsize=(3.4 * cols, 2.6 * int(np.ceil(panels / cols))),
                textsize=9,
            )
            fig = np.ravel(axes)[0].figure
            fig.tight_layout()
            names.append(save(fig, folder / "posterior.png"))
    if {"posterior_predictive", "observed_data"} <= set(idata.groups()):
        shared = [k for k in idata.posterior_predictive.data_vars if k in idata.observed_data][:3]
        if shared:
            # integer-valued data (counts, 0/1) as integers: ArviZ then draws histograms
            pp, obs = idata.posterior_predictive[shared], idata.observed_data[shared]
            for k in shared:
                if np.array_equal(obs[k].values, np.round(obs[k].values)) and np.array_equal(
                    pp[k].values, np.round(pp[k].values)
                ):
                    pp[k], obs[k] = pp[k].astype(np.int64), obs[k].astype(np.int64)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                axes = az.plot_ppc(
                    az.InferenceData(posterior_predictive=pp, observed_data=obs),
                    num_pp_samples=min(50, pp.sizes["draw"]),
                    random_seed=0,
                    figsize=(5 * len(shared), 3.4),
                    textsize=9,
                )
            fig = np.ravel(axes)[0].figure
            names.append(save(fig, folder / "ppc.png"))
    return names


def samples_figure(path: Path, x: np.ndarray, data) -> str:
    """Samples over the data: a scatter for 2-D vectors, an image grid for images."""
    if x.ndim == 4:
        n = len(x)
        cols = int(np.ceil(np.sqrt(n)))
        rows = int(np.ceil(n / cols))
        fig, axes = plt.subplots(rows, cols, figsize=(cols * 0.9, rows * 0.9), squeeze=False)
        for ax in axes.ravel():
            ax.axis("off")
        # one scale for the grid: the data's integer range, else the samples' own range
        lo, hi = (
            (data.meta["low"], data.meta["high"])
            if data.meta.get("integer")
            else (float(x.min()), float(x.max()))
        )
        unit = np.clip((x - lo) / max(hi - lo, 1e-12), 0, 1)
        for ax, img in zip(axes.ravel(), unit):
            ax.imshow(np.moveaxis(img, 0, -1).squeeze(), cmap="gray", vmin=0, vmax=1)
        return save(fig, path)
    flat = x.reshape(len(x), -1)
    ref = data.flat()
    fig, ax = plt.subplots(figsize=(5, 4.5))
    ax.scatter(
        ref[:, 0], ref[:, 1] if ref.shape[1] > 1 else np.zeros(len(ref)), s=4, c="0.7", label="data"
    )
    ax.scatter(
        flat[:, 0],
        flat[:, 1] if flat.shape[1] > 1 else np.zeros(len(flat)),
        s=6,
        c="C3",
        label="samples",
    )
    ax.legend(fontsize=8)
    return save(fig, path)
