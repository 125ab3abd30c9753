"""Ablations: the paper's ablation grid on the user's data, each variant a config override of one run.

ULMFiT's paper (sec. 5, tables 6-7) ablates pretraining, LM fine-tuning, discriminative fine-tuning, STLR
against other schedules, and gradual unfreezing. Each variant here changes one of these against the full
recipe as configured; the table lists validation and test error per variant.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from ..config import Config
from .common import existing_files, finished_result, one_direction, run_variant, shared_lm, write_table

log = logging.getLogger(__name__)

# name -> (what changes, overrides), each against the full recipe (the config as given)
VARIANTS: dict[str, tuple[str, list[str]]] = {
    "ulmfit": ("full recipe as configured", []),
    "no_pretraining": ("no general-domain LM: LM fine-tuning starts from random weights",
                       ["lm_pretrain.source=none"]),
    "no_lm_finetuning": ("classifier on the general-domain LM, no LM fine-tuning", ["lm_finetune.enabled=false"]),
    "from_scratch": ("neither pretraining nor LM fine-tuning: classifier from random weights",
                     ["lm_pretrain.source=none", "lm_finetune.enabled=false"]),
    "lm_ft_no_discr": ("LM fine-tuning without discriminative LRs (lr_decay 1.0)", ["lm_finetune.lr_decay=1.0"]),
    "lm_ft_constant_lr": ("LM fine-tuning with a constant LR instead of STLR", ["lm_finetune.schedule=constant"]),
    "clf_no_discr": ("classifier without discriminative LRs (lr_decay 1.0)", ["classifier.lr_decay=1.0"]),
    "clf_no_gradual_unfreezing": ("classifier with all layers trained from the first epoch",
                                  ["classifier.gradual_unfreezing=false"]),
    "clf_one_cycle": ("classifier with fastai's cosine one-cycle LR instead of STLR",
                      ["classifier.schedule=one_cycle"]),
    "clf_constant_lr": ("classifier with a constant LR instead of STLR", ["classifier.schedule=constant"]),
}
GRIDS: dict[str, list[str]] = {
    "paper": list(VARIANTS),
    "lm": ["ulmfit", "no_pretraining", "no_lm_finetuning", "from_scratch", "lm_ft_no_discr", "lm_ft_constant_lr"],
    "classifier": ["ulmfit", "clf_no_discr", "clf_no_gradual_unfreezing", "clf_one_cycle", "clf_constant_lr"],
}


@dataclass(frozen=True)
class AblationRow:
    variant: str
    change: str
    overrides: str
    seed: int
    valid_error: float
    test_error: float | None
    test_macro_f1: float | None
    seconds: float
    run_dir: str


@dataclass(frozen=True)
class AblationResult:
    """One row per variant and seed; `table` averages over seeds (mean and std of the errors)."""

    rows: list[AblationRow]
    table: pd.DataFrame
    files: dict[str, str] = field(default_factory=dict)


def ablate(cfg: Config, grid: str = "paper", variants: list[str] | None = None, seeds: list[int] | None = None,
           out_dir: str | Path | None = None) -> AblationResult:
    """Run each variant of `grid` (or the named `variants`) through the pipeline and tabulate the errors.

    Args:
        cfg: the full recipe; every variant is this config plus its overrides.
        grid: `paper` (all variants), `lm` (pretraining and LM fine-tuning) or `classifier`.
        variants: names from `VARIANTS` instead of a grid.
        seeds: run seeds (`run.seed`); several give mean and std per variant. Default: the config's.
        out_dir: default `run.dir/ablate`; variant V with seed S runs in `out_dir/V/seedS`.

    Returns:
        Rows per variant and seed, and the table written to ablation.csv / ablation.md (with
        ablation_runs.csv, every run).
    """
    names = list(variants) if variants else GRIDS.get(grid)
    if names is None:
        raise ValueError(f"grid {grid!r}: expected one of {list(GRIDS)} (or give variants)")
    unknown = [n for n in names if n not in VARIANTS]
    if unknown:
        raise ValueError(f"unknown variant(s) {unknown}; expected some of {list(VARIANTS)}")
    cfg = shared_lm(one_direction(cfg))
    out = Path(out_dir) if out_dir else Path(cfg.run.dir) / "ablate"
    rows = []
    for seed in seeds or [cfg.run.seed]:
        first: Path | None = None
        for name in names:
            change, overrides = VARIANTS[name]
            run_dir = out / name / f"seed{seed}"
            log.info(f"ablate: {name} (seed {seed}): {change}")
            # upstream stages a variant shares with the first one (data; often the fine-tuned LM) are copied
            # over, and reused only when their stage key matches
            res = run_variant(cfg, [*overrides, f"run.seed={seed}"], run_dir, reuse_from=first)
            first = first or run_dir
            test = res.eval_split == "test"
            rows.append(AblationRow(name, change, " ".join(overrides) or "-", seed, 1 - res.valid_accuracy,
                                    1 - res.eval_accuracy if test else None, res.eval_macro_f1 if test else None,
                                    res.seconds, res.run_dir))
    table = summarize(rows)
    files = write_table(pd.DataFrame([asdict(r) for r in rows]), out / "ablation_runs")
    notes = [f"Each variant changes one thing against the full recipe; error = 1 - accuracy; seeds: "
             f"{sorted({r.seed for r in rows})}; run dirs under {out}."]
    files.update(write_table(table, out / "ablation", "ULMFiT ablations", notes))
    files["png"] = str(plot_ablation(table, out / "ablation.png"))
    return AblationResult(rows, table, files)


def read_ablation(out_dir: str | Path) -> AblationResult:
    """The result of a finished `ablate` from its folder (ablation_runs.csv), without running anything."""
    runs = finished_result(out_dir, "ablation_runs.csv", "the runs table", "ablate", "the ablation")
    df = pd.read_csv(runs, keep_default_na=False, na_values=[""])
    rows = [AblationRow(**{k: (None if isinstance(v, float) and np.isnan(v) else v) for k, v in r.items()})
            for r in df.to_dict(orient="records")]
    files = existing_files(runs.parent, {k: f"ablation.{k}" for k in ("csv", "md", "png")})
    return AblationResult(rows, summarize(rows), files)


def plot_ablation(table: pd.DataFrame, path: Path) -> Path:
    """Test error (valid error without a test split) per variant, the full recipe's as a reference line."""
    from ..plots import _plt

    plt = _plt()
    col = "test_error" if "test_error" in table else "valid_error"
    t = table.iloc[::-1]  # the grid's first variant (the full recipe) on top
    err = t[f"{col}_std"] if f"{col}_std" in t else None
    fig, ax = plt.subplots(figsize=(7.5, 0.38 * len(t) + 1.4))
    colors = ["tab:orange" if v == "ulmfit" else "tab:blue" for v in t["variant"]]
    ax.barh(range(len(t)), 100 * t[col], xerr=None if err is None else 100 * err, color=colors, capsize=3)
    if "ulmfit" in set(t["variant"]):
        ax.axvline(100 * float(t.loc[t["variant"] == "ulmfit", col].iloc[0]), color="tab:orange", ls="--", lw=1)
    for i, v in enumerate(t[col]):
        ax.text(100 * v, i, f" {100 * v:.1f}", va="center", fontsize=8)
    ax.set_yticks(range(len(t)), t["variant"])
    ax.set_xlim(0, 100 * float(t[col].max()) * 1.15)
    seeds = int(table["seeds"].max())
    ax.set_xlabel(f"{col.replace('_', ' ')} (%)" + (f", mean ± std over {seeds} seeds" if seeds > 1 else ", one seed"))
    ax.set_title("ULMFiT ablations: each variant changes one thing")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return Path(path)


def summarize(rows: list[AblationRow]) -> pd.DataFrame:
    """Mean (and std over seeds) of the errors per variant, in grid order."""
    df = pd.DataFrame([asdict(r) for r in rows])
    out = []
    for name, g in df.groupby("variant", sort=False):
        row = {"variant": name, "change": g["change"].iloc[0], "overrides": g["overrides"].iloc[0],
               "seeds": len(g), "valid_error": g["valid_error"].mean()}
        if len(g) > 1:
            row["valid_error_std"] = g["valid_error"].std()
        if g["test_error"].notna().all():
            row["test_error"] = g["test_error"].astype(float).mean()
            if len(g) > 1:
                row["test_error_std"] = g["test_error"].astype(float).std()
        row["train_minutes"] = round(float(np.sum(g["seconds"])) / 60, 2)  # LM fine-tuning + classifier, all seeds
        out.append(row)
    return pd.DataFrame(out)
