"""Run `configs/quickstart.yaml` end to end on real data and write the wall time and test figures as JSON.

Usage: python benchmarks/quickstart.py --data ../shared/data/imdb/aclImdb.tar.xz [--out benchmarks/results/x.json]
       [override ...]   (dotted config overrides, e.g. classifier.epochs=2)
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import time
from pathlib import Path

import fastai
import torch

from ulmfit_lab import load_config, run_pipeline
from ulmfit_lab.logs import show_progress

ROOT = Path(__file__).resolve().parent.parent


def machine() -> dict:
    cpu = ""
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return {"cpu": cpu, "cores": os.cpu_count(), "torch_threads": torch.get_num_threads(),
            "gpu": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
            "python": platform.python_version(), "torch": torch.__version__, "fastai": fastai.__version__}


def epoch_seconds(run_dir: Path, stage: str) -> float:
    """The training time of a stage: the sum of its epochs' seconds in `metrics.jsonl` (validation included)."""
    rows = [json.loads(x) for x in (Path(run_dir) / stage / "metrics.jsonl").read_text().splitlines() if x.strip()]
    return round(sum(r["seconds"] for r in rows), 1)


def main() -> None:
    show_progress()  # the library's [ulmfit-lab] progress lines, as the command line prints them
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--data", required=True, help="aclImdb folder or .tar.gz/.tar.xz")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "quickstart_cpu.json"))
    ap.add_argument("--run-dir", default="runs/bench_quickstart")
    ap.add_argument("overrides", nargs="*")
    args = ap.parse_args()
    shutil.rmtree(args.run_dir, ignore_errors=True)  # cold: no stage is skipped (tokens may come from the cache)
    cfg = load_config(ROOT / "configs" / "quickstart.yaml",
                      [f"data.path={args.data}", f"run.dir={args.run_dir}", "run.progress=false", *args.overrides])
    t0 = time.time()
    res = run_pipeline(cfg)
    wall = time.time() - t0
    out = {"benchmark": "quickstart", "machine": machine(), "data": args.data, "overrides": args.overrides,
           "wall_seconds": round(wall, 1), "config": cfg.to_dict(),
           "stages": {n: getattr(res, n).metrics for n in ("data", "lm_finetune", "classifier", "evaluate")}}
    for name in ("lm_finetune", "classifier"):
        rows = [json.loads(x) for x in (Path(args.run_dir) / name / "metrics.jsonl").read_text().splitlines()]
        out["stages"][name]["epochs"] = [{k: r.get(k) for k in ("phase", "epoch", "train_loss", "valid_loss",
                                                                 "accuracy", "perplexity", "seconds",
                                                                 "train_tokens_per_s")} for r in rows]
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=2, default=str))
    ev = res.evaluate.metrics
    print(f"quickstart: {wall / 60:.1f} min, test accuracy {ev['accuracy']:.4f} (n={ev['n']}) -> {args.out}")


if __name__ == "__main__":
    main()
