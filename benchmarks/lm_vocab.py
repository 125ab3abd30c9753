"""Does `data.lm_vocab` (the pretrained LM's words appended to the texts' vocab) help the quickstart?

Both arms run `configs/quickstart.yaml` (the shipped LM) on the same 2,000 IMDb train reviews, up to the
classifier; each is scored on a DEV set: `--n-dev` IMDb *train* reviews outside the quickstart's train and
validation texts (never the test split: this chooses a default). Also reported: the share of dev tokens that
are `xxunk` in each arm's vocab, and each stage's training seconds (compare them only within one quiet run).
A finished run directory is reused (its stages are skipped when their keys match).

Usage:
  python benchmarks/lm_vocab.py --data ../shared/data/imdb/aclImdb.tar.xz --run-dir runs/vab \
      --out benchmarks/results/lm_vocab_cpu.json [override ...]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import datasets
import numpy as np

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

ARMS = {"own": "data.lm_vocab=false", "union": "data.lm_vocab=true"}


def dev_set(archive: str, run_dir: Path, n: int, seed: int = 7):
    """`n` IMDb train reviews that are neither the run's train nor its validation texts."""
    train = read_source(archive, DataConfig(), default_cache_dir())["train"]
    used = {t for s in ("train", "valid")
            for t in datasets.Dataset.from_file(str(run_dir / "data" / f"{s}.arrow"))["text"]}
    rest = train[~train.text.isin(used)].reset_index(drop=True)
    return rest.iloc[np.random.default_rng(seed).choice(len(rest), n, replace=False)].reset_index(drop=True)


def main() -> None:
    show_progress()
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", required=True, help="aclImdb folder or .tar.gz/.tar.xz")
    ap.add_argument("--run-dir", default="runs/bench_lm_vocab", help="one sub-folder per arm")
    ap.add_argument("--n-dev", type=int, default=2000)
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "lm_vocab_cpu.json"))
    ap.add_argument("overrides", nargs="*")
    args = ap.parse_args()
    out = {"benchmark": "lm_vocab", "machine": machine(), "config": "configs/quickstart.yaml",
           "overrides": args.overrides, "data": args.data, "arms": {}}
    for arm, setting in ARMS.items():
        run_dir = Path(args.run_dir) / arm
        cfg = load_config(ROOT / "configs" / "quickstart.yaml",
                          [f"data.path={args.data}", f"run.dir={run_dir}", setting, *args.overrides])
        t0 = time.time()
        res = run_pipeline(cfg, until="classifier")
        dev = dev_set(args.data, run_dir, args.n_dev)
        p = Predictor.load(res.classifier.model_dir, precision="fp32")
        ids = p.encode(dev.text.tolist())
        proba = p.proba_of_ids(ids)
        pred = np.asarray(p.meta["labels"])[proba.argmax(1)]
        n_tok = sum(len(x) for x in ids)
        out["arms"][arm] = {
            "setting": setting, "dev_accuracy": float((pred == dev.label.values).mean()), "n_dev": len(dev),
            "valid_accuracy": res.classifier.metrics.get("valid_accuracy"),
            "vocab_size": res.data.metrics["vocab_size"], "vocab_from_lm": res.data.metrics.get("vocab_from_lm", 0),
            "dev_unknown_rate": float(sum(int((x == UNK).sum()) for x in ids) / n_tok),
            "lm_finetune_seconds": epoch_seconds(run_dir, "lm_finetune"),
            "classifier_seconds": epoch_seconds(run_dir, "classifier"),
            "skipped_stages": res.skipped(), "seconds_this_call": round(time.time() - t0, 1)}
        print(arm, out["arms"][arm])
    write_json(Path(args.out), out)


if __name__ == "__main__":
    main()
