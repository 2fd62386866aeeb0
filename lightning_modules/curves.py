"""Training curves of a run as a PNG: training loss and validation mAP@10 per epoch, from CSVLogger's metrics.csv.

    python -m lightning_modules.curves runs/clip_ita/version_0/metrics.csv runs/clip_ita/version_0/curves.png

``train/loss`` is logged per step: the left panel draws every logged step faintly (x = fractional epoch) and the
epoch mean on top. ``val/map@10`` is logged once per validation: the right panel marks the best epoch. Either
panel says so when its metric is missing from the file (e.g. a run without validation).
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

LOSS = "train/loss"
VAL_MAP = "val/map@10"


def read_curves(metrics_csv: str | Path) -> dict[str, pd.DataFrame]:
    """The two curves from a CSVLogger ``metrics.csv``.

    Returns:
        ``{"loss_steps": [epoch, step, value], "loss_epochs": [epoch, value], "val_map": [epoch, step, value]}``
        (empty frames for missing metrics).
    """
    frame = pd.read_csv(metrics_csv)
    out: dict[str, pd.DataFrame] = {}
    empty = pd.DataFrame(columns=["epoch", "step", "value"])
    if LOSS in frame:
        steps = frame.loc[frame[LOSS].notna(), ["epoch", "step", LOSS]].rename(columns={LOSS: "value"})
        out["loss_steps"] = steps.reset_index(drop=True)
        out["loss_epochs"] = steps.groupby("epoch", as_index=False)["value"].mean()
    else:
        out["loss_steps"], out["loss_epochs"] = empty, pd.DataFrame(columns=["epoch", "value"])
    if VAL_MAP in frame:
        val = frame.loc[frame[VAL_MAP].notna(), ["epoch", "step", VAL_MAP]].rename(columns={VAL_MAP: "value"})
        out["val_map"] = val.drop_duplicates("epoch", keep="last").reset_index(drop=True)
    else:
        out["val_map"] = empty
    return out


def plot_training_curves(metrics_csv: str | Path, output_png: str | Path, title: str | None = None) -> Path:
    """Plot ``train/loss`` and ``val/map@10`` per epoch from a run's ``metrics.csv`` into a PNG.

    Args:
        metrics_csv: CSVLogger's ``metrics.csv`` (``<run>/version_N/metrics.csv``).
        output_png: the PNG to write (parent folders are created).
        title: figure title (default: the run folder, e.g. ``clip_ita/version_0``).

    Returns:
        The PNG path.
    """
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    metrics_csv, output_png = Path(metrics_csv), Path(output_png)
    curves = read_curves(metrics_csv)
    title = title or f"{metrics_csv.parent.parent.name}/{metrics_csv.parent.name}"
    fig, (ax_loss, ax_map) = plt.subplots(1, 2, figsize=(10, 3.6), dpi=110)

    steps, epochs = curves["loss_steps"], curves["loss_epochs"]
    if len(steps):
        # a step's fractional epoch: its position among the epoch's logged steps
        first = steps.groupby("epoch")["step"].transform("min")
        last = steps.groupby("epoch")["step"].transform("max")
        frac = (steps["step"] - first + 1) / (last - first + 1)
        ax_loss.plot(steps["epoch"] + frac, steps["value"], color="#9bb7d4", lw=0.8, label="logged steps")
        ax_loss.plot(
            epochs["epoch"] + 1, epochs["value"], "o-", color="#1f4e8c", lw=1.8, ms=4, label="epoch mean"
        )
        ax_loss.legend(frameon=False, fontsize=8)
    else:
        ax_loss.text(
            0.5, 0.5, f"no {LOSS} in this file", ha="center", va="center", transform=ax_loss.transAxes
        )
    ax_loss.set_xlabel("epochs completed")
    ax_loss.set_ylabel(LOSS)
    ax_loss.set_title("training loss", fontsize=10)

    val = curves["val_map"]
    if len(val):
        ax_map.plot(val["epoch"] + 1, val["value"], "o-", color="#2e7d32", lw=1.8, ms=4)
        best = val.loc[val["value"].idxmax()]
        ax_map.axvline(best["epoch"] + 1, color="#aaa", lw=0.8, ls="--")
        ax_map.annotate(
            f"best {best['value']:.4f} after {int(best['epoch']) + 1} epochs",
            (best["epoch"] + 1, best["value"]),
            textcoords="offset points",
            xytext=(4, -14),
            fontsize=8,
        )
    else:
        ax_map.text(
            0.5, 0.5, f"no {VAL_MAP} in this file", ha="center", va="center", transform=ax_map.transAxes
        )
    ax_map.set_xlabel("epochs completed")
    ax_map.set_ylabel(VAL_MAP)
    ax_map.set_title("validation mAP@10 (all settings)", fontsize=10)
    for ax in (ax_loss, ax_map):
        ax.grid(alpha=0.3)
        ax.spines[["top", "right"]].set_visible(False)
    fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    output_png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(output_png)
    plt.close(fig)
    return output_png


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Plot a run's training curves from its metrics.csv.")
    parser.add_argument("metrics_csv")
    parser.add_argument("output_png", nargs="?", help="default: curves.png beside metrics.csv")
    args = parser.parse_args(argv)
    out = args.output_png or str(Path(args.metrics_csv).with_name("curves.png"))
    print(plot_training_curves(args.metrics_csv, out))


if __name__ == "__main__":
    main()
