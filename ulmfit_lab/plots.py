"""Plots written into the run directory: LR per layer group, losses, confusion matrix."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_confusion(cm: np.ndarray, labels: list, path: Path) -> None:
    plt = _plt()
    fig, ax = plt.subplots(figsize=(1.2 * len(labels) + 2.5, 1.2 * len(labels) + 2))
    ax.imshow(cm, cmap="Blues", vmin=0)
    ax.set_xticks(range(len(labels)), [str(x) for x in labels], rotation=45, ha="right")
    ax.set_yticks(range(len(labels)), [str(x) for x in labels])
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    for i in range(cm.shape[0]):
        for j in range(cm.shape[1]):
            ax.text(j, i, int(cm[i, j]), ha="center", va="center",
                    color="white" if cm[i, j] > 0.6 * cm.max() else "black")
    ax.set_title("Confusion matrix")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_stage(stage_dir: Path) -> list[Path]:
    """LR per layer group over the steps, and train/valid loss per epoch, from a stage's logs."""
    plt = _plt()
    stage_dir = Path(stage_dir)
    written = []
    trace_file = stage_dir / "lr_trace.jsonl"
    if trace_file.is_file():
        rows = [json.loads(line) for line in trace_file.read_text().splitlines() if line.strip()]
        # a frozen group's LR has no effect: leave it out of the plot (NaN) where the log says it was frozen
        lrs = np.array([[lr if on else np.nan for lr, on in zip(step, r["trainable"])]
                        for r in rows for step in r["lrs"]], dtype=float)
        if lrs.size:
            fig, ax = plt.subplots(figsize=(7, 4))
            for g in range(lrs.shape[1]):
                ax.plot(lrs[:, g], label=f"group {g}" + (" (lowest)" if g == 0 else ""))
            ax.set_yscale("log")
            ax.set_xlabel("training step")
            ax.set_ylabel("learning rate")
            ax.set_title(f"{stage_dir.name}: STLR x discriminative LRs (trained groups)")
            ax.legend(fontsize=8)
            fig.tight_layout()
            fig.savefig(stage_dir / "lr_schedule.png", dpi=100)
            plt.close(fig)
            written.append(stage_dir / "lr_schedule.png")
    metrics_file = stage_dir / "metrics.jsonl"
    if metrics_file.is_file():
        rows = [json.loads(line) for line in metrics_file.read_text().splitlines() if line.strip()]
        if rows:
            fig, ax = plt.subplots(figsize=(6, 4))
            x = np.arange(1, len(rows) + 1)
            for key in ("train_loss", "valid_loss"):
                ax.plot(x, [r.get(key) for r in rows], marker="o", label=key)
            ax.set_xlabel("epoch")
            ax.set_ylabel("loss")
            ax.set_title(f"{stage_dir.name}: loss")
            ax.legend()
            fig.tight_layout()
            fig.savefig(stage_dir / "loss.png", dpi=100)
            plt.close(fig)
            written.append(stage_dir / "loss.png")
        if rows and any(not all(r.get("trainable_groups", [True])) for r in rows):
            written.append(plot_unfreezing(rows, stage_dir / "unfreezing.png", stage_dir.name))
    return written


def plot_unfreezing(rows: list[dict], path: Path, title: str) -> Path:
    """Which layer groups trained in which epoch (gradual unfreezing), as a grid."""
    plt = _plt()
    grid = np.array([r["trainable_groups"] for r in rows], dtype=float).T  # groups x epochs
    fig, ax = plt.subplots(figsize=(1 + 0.6 * grid.shape[1], 1 + 0.5 * grid.shape[0]))
    ax.imshow(grid, cmap="Greens", vmin=0, vmax=1.4, aspect="auto", origin="lower")
    ax.set_xticks(range(grid.shape[1]), [str(i + 1) for i in range(grid.shape[1])])
    ax.set_yticks(range(grid.shape[0]), [f"group {g}" + (" (embedding)" if g == 0 else "")
                                         for g in range(grid.shape[0])])
    ax.set_xlabel("epoch")
    ax.set_title(f"{title}: trained (green) / frozen")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
