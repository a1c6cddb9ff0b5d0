"""Tutorial 2.9: InDI, restoration by small steps from a degraded image (Delbracio and
Milanfar 2023), on scikit-learn's digits.

    python examples/indi.py --out runs/indi                          # noise, 3000 steps
    python examples/indi.py --out runs/indi_blur --degradation blur
    python examples/indi.py --out /tmp/indi --steps 30 --quick       # smoke test

Trains F_theta(x_t, t) (the DDPM's U-Net, t in (0, 1]) to predict the clean image on the
path x_t = (1 - t) x + t y, restores held-out degraded digits in --restore-steps steps,
prints the PSNR before and after (mean +- standard error over held-out images) and writes a
before/after figure.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch

from probdiff.data import load_dataset, train_test_split
from probdiff.models.ddpm.indi import ContinuousTime, degrade, indi_loss, psnr, restore
from probdiff.models.ddpm.networks import UNet


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default="runs/indi")
    p.add_argument("--degradation", choices=("noise", "blur"), default="noise")
    p.add_argument("--sigma", type=float, default=0.5, help="noise level (in [-1, 1] units)")
    p.add_argument("--steps", type=int, default=3000)
    p.add_argument("--restore-steps", type=int, default=20)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--quick", action="store_true", help="a small U-Net")
    args = p.parse_args(argv)
    torch.manual_seed(args.seed)
    torch.set_num_threads(1)
    data = load_dataset("digits")
    train, test = train_test_split(data, 0.2, args.seed)
    scale = lambda d: torch.tensor(d.flat() / 8.0 - 1.0, dtype=torch.float32)  # noqa: E731
    x_train, x_test = scale(train), scale(test)
    shape = data.event_shape
    net = ContinuousTime(UNet(shape, [8, 16] if args.quick else [32, 64], 1000), 1000)
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    gen = torch.Generator().manual_seed(args.seed)
    for step in range(args.steps):
        idx = torch.randint(len(x_train), (128,), generator=gen)
        x = x_train[idx]
        y = degrade(x, shape, args.degradation, args.sigma, gen)
        opt.zero_grad()
        loss = indi_loss(net, x, y, gen)
        loss.backward()
        opt.step()
        if step % max(1, args.steps // 10) == 0:
            print(f"step {step:5d}  loss {loss.item():.4f}")
    y = degrade(x_test, shape, args.degradation, args.sigma, torch.Generator().manual_seed(1))
    restored, states = restore(net, y, args.restore_steps, record=True)
    before, after = psnr(y, x_test), psnr(restored, x_test)
    gain = (after - before).numpy()
    print(
        f"PSNR on {len(x_test)} held-out digits: degraded {before.mean():.2f} dB, restored "
        f"{after.mean():.2f} dB, gain {gain.mean():.2f} +- {gain.std(ddof=1) / np.sqrt(len(gain)):.2f} dB"
    )
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    from probdiff.plots import plt, save

    show = [0, len(states) // 4, len(states) // 2, len(states) - 1]
    fig, axes = plt.subplots(6, len(show) + 1, figsize=(1.3 * (len(show) + 1), 1.3 * 6))
    for r in range(6):
        for c, k in enumerate(show):
            axes[r, c].imshow(
                states[k][r].reshape(8, 8).clamp(-1, 1).numpy(), cmap="gray", vmin=-1, vmax=1
            )
            if r == 0:
                axes[r, c].set_title(
                    "degraded" if k == 0 else f"t = {1 - k / args.restore_steps:.2f}", fontsize=8
                )
        axes[r, -1].imshow(x_test[r].reshape(8, 8).numpy(), cmap="gray", vmin=-1, vmax=1)
        axes[0, -1].set_title("clean", fontsize=8)
    for ax in axes.ravel():
        ax.axis("off")
    print(f"wrote {out / save(fig, out / 'indi.png')}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
