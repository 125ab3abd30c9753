"""What the lab commands share: a one-direction config, one pretrained LM for every variant, variant runs,
copying finished upstream stages between variant run dirs, and writing tables.

Every variant (an ablation row, a learning-curve point) is the ordinary pipeline run on a config override,
in its own run directory under the command's output folder, so each one has the usual stage folders,
metrics, plots and stage keys.
"""

from __future__ import annotations

import json
import logging
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from ..config import Config
from ..data.sources import LabelledData
from ..fileio import atomic_folder, write_text
from ..pipeline import run_pipeline
from ..training.rundir import MARKER

log = logging.getLogger(__name__)


def one_direction(cfg: Config) -> Config:
    """The lab compares recipes, not ensembles: it runs the first of `model.directions` only."""
    if len(cfg.model.directions) > 1:
        log.info(f"lab: model.directions={cfg.model.directions}; the lab runs the {cfg.model.directions[0]} "
                 "models only")
    return cfg.for_direction(cfg.model.directions[0])


def shared_lm(cfg: Config) -> Config:
    """`cfg` with its general-domain LM pretrained once, in `run.dir` (the pipeline's cached `lm` stage).

    With `lm_pretrain.source: scratch` every variant would pretrain its own copy of the same LM; instead
    it is pretrained here once and the variants load it as `source: pretrained`.
    """
    if cfg.lm_pretrain.source != "scratch":
        return cfg
    log.info(f"lab: pretraining the general-domain LM once in {cfg.run.dir} (skipped when already done)")
    res = run_pipeline(cfg, until="lm")
    return cfg.replace("lm_pretrain.source=pretrained", f"lm_pretrain.weights={res.lm.weights}")


def reuse_stages(src: Path, dst: Path, names: Sequence[str] = ("data", "lm_finetune", "classifier", "evaluate")
                 ) -> None:
    """Copy finished stage folders of run `src` into run `dst` where `dst` has none yet.

    The copy's paths are rewritten to point inside `dst`. Whether a copied stage is reused is still
    decided by its key: a variant whose LM fine-tuning differs reruns it (in its own copy).
    """
    for name in names:
        s, d = Path(src) / name, Path(dst) / name
        if d.exists() or not (s / MARKER).is_file():
            continue
        with atomic_folder(d, replace=False) as tmp:
            shutil.copytree(s, tmp, dirs_exist_ok=True,  # not checkpoints, nor what a killed writer left
                            ignore=shutil.ignore_patterns("last.pt", ".*.tmp", ".*.tmp-*", ".*.old-*"))
            marker = json.loads((tmp / MARKER).read_text(encoding="utf-8"))
            marker["result"] = _rebase(marker["result"], str(s), str(d))
            (tmp / MARKER).write_text(json.dumps(marker, indent=2), encoding="utf-8")


def _rebase(obj: Any, old: str, new: str) -> Any:
    if isinstance(obj, dict):
        return {k: _rebase(v, old, new) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_rebase(v, old, new) for v in obj]
    if isinstance(obj, str) and (obj == old or obj.startswith(old + "/")):
        return new + obj[len(old):]
    return obj


def train_seconds(run_dir: Path, stages: Sequence[str] = ("lm_finetune", "classifier")) -> float:
    """Training time of a run's own stages: the epochs' seconds recorded in each stage's metrics.jsonl.

    Unlike the wall time of a call it stays the same when the run is found done and skipped (a stage copied
    from another variant counts as its own: the variant needs it). The shared general-domain LM is not counted.
    """
    total = 0.0
    for name in stages:
        f = Path(run_dir) / name / "metrics.jsonl"
        if f.is_file():
            total += sum(float(json.loads(line).get("seconds", 0.0)) for line in f.read_text().splitlines()
                         if line.strip())
    return round(total, 1)


@dataclass(frozen=True)
class RunOutcome:
    """One pipeline run's figures: validation accuracy (classifier stage), accuracy on the evaluated split, and
    `seconds`: the training time of its stages (`train_seconds`), also when the run was found done."""

    run_dir: str
    valid_accuracy: float
    eval_split: str
    eval_accuracy: float
    eval_macro_f1: float
    seconds: float
    skipped: bool


def run_variant(cfg: Config, overrides: Sequence[str], run_dir: Path, data: LabelledData | None = None,
                reuse_from: Path | None = None) -> RunOutcome:
    """The whole pipeline on `cfg` + `overrides`, in `run_dir` (stages already done there are skipped)."""
    vcfg = cfg.replace(*overrides, f"run.dir={run_dir}")
    if reuse_from is not None and Path(reuse_from) != Path(run_dir):
        reuse_stages(reuse_from, run_dir)
    res = run_pipeline(vcfg, data=data)
    write_text(Path(run_dir) / "overrides.txt", "\n".join(overrides) + "\n")
    ev = res.evaluate
    return RunOutcome(str(run_dir), float(res.classifier.metrics["valid_accuracy"]), ev.split,
                      float(ev.metrics["accuracy"]), float(ev.metrics["macro_f1"]), train_seconds(Path(run_dir)),
                      len(res.skipped()) == len(res.stages()))


def finished_result(out_dir: str | Path, name: str, what: str, command: str, rerun: str) -> Path:
    """`out_dir/name`, the file a finished lab command left there; a clear error when there is none."""
    path = Path(out_dir) / name
    if not path.is_file():
        raise FileNotFoundError(f"{path}: expected {what} of a finished `ulmfit-lab {command}`; found none. "
                                f"Run {rerun} first (or point at its --out folder)")
    return path


def existing_files(out: Path, names: dict[str, str]) -> dict[str, str]:
    """{key: path} for the result files of `names` that exist in `out`."""
    return {k: str(out / f) for k, f in names.items() if (out / f).is_file()}


def markdown_table(df: pd.DataFrame, floatfmt: str = "{:.4f}") -> str:
    """A GitHub Markdown table (no extra dependency)."""
    def cell(v: Any) -> str:
        if isinstance(v, float):
            return "" if pd.isna(v) else floatfmt.format(v)
        return str(v).replace("|", "\\|")

    lines = ["| " + " | ".join(map(str, df.columns)) + " |", "|" + "---|" * len(df.columns)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in df.itertuples(index=False)]
    return "\n".join(lines) + "\n"


def write_table(df: pd.DataFrame, stem: Path, title: str = "", notes: Sequence[str] = ()) -> dict[str, str]:
    """`stem`.csv and `stem`.md (with a title and notes above the table)."""
    stem = Path(stem)
    stem.parent.mkdir(parents=True, exist_ok=True)
    df.to_csv(stem.with_suffix(".csv"), index=False)
    head = (f"# {title}\n\n" if title else "") + "".join(f"{n}\n\n" for n in notes)
    write_text(stem.with_suffix(".md"), head + markdown_table(df))
    return {"csv": str(stem.with_suffix(".csv")), "md": str(stem.with_suffix(".md"))}
