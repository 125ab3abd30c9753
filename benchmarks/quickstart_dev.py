"""Choose between quickstart settings on a DEV set of IMDb reviews, never on the test split.

Each arm is a finished run folder (`--run NAME=RUN_DIR`, e.g. a cell of `embedded_lm.py`) or a run of
`configs/quickstart.yaml` with dotted overrides (`--arm NAME=OVERRIDE[,OVERRIDE...]`, trained up to the
classifier; a finished folder is reused, its stages skipped when their keys match). Every arm is scored on the
same dev set: `--n-dev` IMDb *train* reviews that are neither train nor validation text of any arm. Also
reported per arm: validation accuracy, the share of dev tokens that are `xxunk`, and the LM fine-tuning and
classifier seconds (compare them only within one quiet run).

Usage:
  python benchmarks/quickstart_dev.py --data ../shared/data/imdb/aclImdb.tar.xz --run-dir runs/dev \
      --run p1=runs/bench_embedded_p1/imdb-embedded --arm noft=lm_finetune.enabled=false \
      --out benchmarks/results/x.json [override ...]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import datasets
import numpy as np
import pandas as pd

from ulmfit_lab import load_config, run_pipeline
from ulmfit_lab.config import DataConfig
from ulmfit_lab.data.sources import read_source
from ulmfit_lab.fileio import write_json
from ulmfit_lab.logs import show_progress
from ulmfit_lab.serving.predict import Predictor
from ulmfit_lab.stages.common import default_cache_dir
from ulmfit_lab.text.vocab import UNK

sys.path.insert(0, str(Path(__file__).resolve().parent))
from quickstart import ROOT, epoch_seconds, machine  # noqa: E402


def dev_set(archive: str, run_dirs: list[Path], n: int, seed: int = 7) -> pd.DataFrame:
    """`n` IMDb train reviews that are neither train nor validation text of any of `run_dirs`."""
    train = read_source(archive, DataConfig(), default_cache_dir())["train"]
    used = {t for d in run_dirs for s in ("train", "valid")
            for t in datasets.Dataset.from_file(str(Path(d) / "data" / f"{s}.arrow"))["text"]}
    rest = train[~train.text.isin(used)].reset_index(drop=True)
    return rest.iloc[np.random.default_rng(seed).choice(len(rest), n, replace=False)].reset_index(drop=True)


def train_arm(data: str, run_dir: Path, overrides: list[str]):
    """Run the quickstart with `overrides` up to the classifier (finished stages are skipped)."""
    cfg = load_config(ROOT / "configs" / "quickstart.yaml", [f"data.path={data}", f"run.dir={run_dir}", *overrides])
    return run_pipeline(cfg, until="classifier")


def score(run_dir: Path, dev: pd.DataFrame) -> dict:
    """Dev accuracy, the dev unknown-token rate and the training seconds of a finished run."""
    p = Predictor.load(run_dir / "classifier" / "model", precision="fp32")
    ids = p.encode(dev.text.tolist())
    pred = np.asarray(p.meta["labels"])[p.proba_of_ids(ids).argmax(1)]
    n_tok = sum(len(x) for x in ids)
    lm_ft = run_dir / "lm_finetune" / "metrics.jsonl"
    return {"dev_accuracy": float((pred == dev.label.values).mean()), "n_dev": len(dev),
            "dev_unknown_rate": float(sum(int((x == UNK).sum()) for x in ids) / n_tok),
            "lm_finetune_seconds": epoch_seconds(run_dir, "lm_finetune") if lm_ft.exists() else 0.0,
            "classifier_seconds": epoch_seconds(run_dir, "classifier")}


def compare(data: str, arms: dict[str, Path | tuple[Path, list[str]]], n_dev: int) -> dict:
    """Train the arms that need it, then score every arm on one dev set. An arm is a finished run folder, or
    (run folder, overrides) to train."""
    out: dict[str, dict] = {}
    for name, arm in arms.items():
        if isinstance(arm, tuple):
            t0 = time.time()
            res = train_arm(data, *arm)
            out[name] = {"overrides": arm[1], "valid_accuracy": res.classifier.metrics.get("valid_accuracy"),
                         "vocab_size": res.data.metrics["vocab_size"],
                         "vocab_from_lm": res.data.metrics.get("vocab_from_lm", 0),
                         "skipped_stages": res.skipped(), "seconds_this_call": round(time.time() - t0, 1)}
        else:
            out[name] = {"run": str(arm)}
    dirs = {name: arm[0] if isinstance(arm, tuple) else arm for name, arm in arms.items()}
    dev = dev_set(data, list(dirs.values()), n_dev)
    for name, run_dir in dirs.items():
        out[name].update(score(Path(run_dir), dev))
        print(name, out[name], flush=True)
    return out


def parse_arms(runs: list[str], arms: list[str], run_root: Path, common: list[str]) -> dict:
    parsed: dict = {}
    for spec in runs + arms:
        name, sep, value = spec.partition("=")
        if not sep or not name:
            sys.exit(f"error: an arm is NAME=VALUE, found {spec!r}")
        if name in parsed:
            sys.exit(f"error: two arms are named {name!r}")
        parsed[name] = (Path(value) if spec in runs else
                        (run_root / name, [o for o in value.split(",") if o] + common))
    return parsed


def main() -> None:
    show_progress()
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", required=True, help="aclImdb folder or .tar.gz/.tar.xz")
    ap.add_argument("--run", action="append", default=[], help="NAME=RUN_DIR: a finished run to score")
    ap.add_argument("--arm", action="append", default=[], help="NAME=OVERRIDE[,OVERRIDE...]: a quickstart to train")
    ap.add_argument("--run-dir", default="runs/bench_dev", help="one sub-folder per trained arm")
    ap.add_argument("--n-dev", type=int, default=2000)
    ap.add_argument("--out", required=True)
    ap.add_argument("overrides", nargs="*", help="dotted overrides for every trained arm")
    args = ap.parse_args()
    arms = parse_arms(args.run, args.arm, Path(args.run_dir), args.overrides)
    if not arms:
        sys.exit("error: no arm given: pass --run NAME=RUN_DIR and/or --arm NAME=OVERRIDES")
    write_json(Path(args.out), {"benchmark": "quickstart_dev", "machine": machine(),
                                "config": "configs/quickstart.yaml", "overrides": args.overrides, "data": args.data,
                                "arms": compare(args.data, arms, args.n_dev)})


if __name__ == "__main__":
    main()
