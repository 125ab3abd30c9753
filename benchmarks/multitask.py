"""Multi-task vs one model per task on Twitter US airline (issue 24): accuracy per task and training time.

Data: `--n-train` (2,000) seeded random tweets are the labelled rows (`data.valid_pct` of them, seeded, held
out for validation, as the config would); every other tweet is a test row. Tasks: `airline_sentiment` and
`negativereason` (given for negative tweets only: a partial label, `data/labels.py`), or `--tasks
airline_sentiment,airline`. Three classifiers on one encoder recipe (configs/quickstart.yaml + the overrides):
  (a) multi-task   every task at once (`data.label_column=[...]`)
  (b), (c) ...     one model per task, each on the labelled rows of its task only
LM fine-tuning does not depend on the labels, so it runs once (on the train texts, its validation the
valid texts) and the three classifiers start from that fine-tuned LM: its folder is passed as
`lm_pretrain.weights` with `lm_finetune.enabled=false` (the pipeline keys the LM fine-tuning stage by the
data, labels included, so three pipelines would otherwise fine-tune three times). (a) and (b) see the same
texts, so the same vocab; (c)'s vocab is a subset of it, mapped from the fine-tuned LM's.

Figures per task: accuracy and macro-F1 on the test rows labelled for the task; seconds of classifier
training per run (the epochs' own seconds, from `classifier/metrics.jsonl`; and the wall time of each
`fit`), LM fine-tuning seconds once; time of (a) / time of (b + c), without and with the LM fine-tuning.

Usage:
  python benchmarks/multitask.py --data ../shared/data/twitter_us_airline/Tweets.csv [--n-train 2000]
      [--tasks airline_sentiment,negativereason] [--seed 0] [--run-root runs/bench_multitask]
      [--out benchmarks/results/multitask_twitter_cpu.json] [override ...]
  e.g. overrides: model.emb_sz=256 model.n_hid=512 model.n_layers=3 lm_pretrain.source=pretrained
      lm_pretrain.weights=../shared/lm/reviews-fwd-pass1
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

from ulmfit_lab import SentimentClassifier, __version__, load_config, run_pipeline
from ulmfit_lab.data.labels import is_missing
from ulmfit_lab.data.sources import load_data

sys.path.insert(0, str(Path(__file__).resolve().parent))
from quickstart import ROOT, epoch_seconds, machine  # noqa: E402

TASKS = "airline_sentiment,negativereason"


def load_split(path: Path, tasks: list[str], n_train: int, valid_pct: float, seed: int
               ) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """(train, valid, test): `n_train` seeded random rows, `valid_pct` of them (seeded) held out; the rest test.

    A missing task cell (empty in the file: not labelled for the task) is NaN. A valid row whose label for
    some task never occurs in train is dropped (the pipeline would refuse it); test rows are all kept (an
    unseen class there is simply a wrong prediction).
    """
    df = pd.read_csv(path)
    missing = [c for c in ["text", *tasks] if c not in df.columns]
    if missing:
        raise SystemExit(f"{path}: no column(s) {missing}; columns found: {list(df.columns)}")
    df = df[["text", *tasks]].astype(object)
    df[tasks] = df[tasks].map(lambda v: np.nan if is_missing(v) else v)  # (blank strings too)
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(df))
    pool, test = df.iloc[order[:n_train]], df.iloc[order[n_train:]]
    n_valid = int(round(len(pool) * valid_pct))
    valid, train = pool.iloc[:n_valid], pool.iloc[n_valid:]  # (pool is already in random order)
    seen = {t: set(train[t].dropna()) for t in tasks}
    known = np.ones(len(valid), dtype=bool)
    for t in tasks:
        known &= valid[t].map(lambda v, t=t: is_missing(v) or v in seen[t]).to_numpy(dtype=bool)
    return (train.reset_index(drop=True), valid[known].reset_index(drop=True), test.reset_index(drop=True))


def task_scores(y_true: pd.Series, y_pred: list) -> dict:
    """Accuracy and macro-F1 over the rows labelled for the task."""
    from sklearn.metrics import accuracy_score, f1_score

    rows = y_true.notna().to_numpy()
    yt, yp = [str(v) for v in y_true[rows]], [str(v) for v, r in zip(y_pred, rows) if r]
    return {"n": int(rows.sum()), "accuracy": float(accuracy_score(yt, yp)),
            "macro_f1": float(f1_score(yt, yp, average="macro", zero_division=0))}


def finetune_lm(args, overrides: list[str], train: pd.DataFrame, valid: pd.DataFrame, tasks: list[str]) -> dict:
    """LM fine-tuning once, on the train texts (labels do not matter to it); its model folder and seconds."""
    run_dir = Path(args.run_root) / "lm_finetune"
    shutil.rmtree(run_dir, ignore_errors=True)
    cfg = load_config(args.config, [f"run.dir={run_dir}", f"data.label_column=[{', '.join(tasks)}]", *overrides])
    data = load_data(cfg.data, run_dir / "cache", train=train, valid=valid)
    t0 = time.time()
    res = run_pipeline(cfg, until="lm_finetune", data=data)
    return {"model_dir": res.lm_finetune.model_dir, "wall_seconds": round(time.time() - t0, 1),
            "train_seconds": epoch_seconds(run_dir, "lm_finetune"),
            "valid_perplexity_before": res.lm_finetune.metrics.get("valid_perplexity_before"),
            "valid_perplexity": res.lm_finetune.metrics.get("valid_perplexity")}


def train_classifier(args, name: str, overrides: list[str], tasks: list[str], train: pd.DataFrame,
                     valid: pd.DataFrame, test: pd.DataFrame) -> dict:
    """One classifier on the rows labelled for at least one of `tasks`, scored per task on the test rows."""
    run_dir = Path(args.run_root) / name
    shutil.rmtree(run_dir, ignore_errors=True)
    label = tasks[0] if len(tasks) == 1 else f"[{', '.join(tasks)}]"
    cfg = load_config(args.config, [f"run.dir={run_dir}", f"data.label_column={label}", *overrides])

    def rows(df: pd.DataFrame) -> pd.DataFrame:
        return df.loc[df[tasks].notna().any(axis=1), ["text", *tasks]].reset_index(drop=True)

    tr, va = rows(train), rows(valid)
    t0 = time.time()
    clf = SentimentClassifier(cfg, run_dir=run_dir).fit(tr, valid=va)
    wall = round(time.time() - t0, 1)
    pred = clf.predict(test.text.tolist())
    out = {"tasks": tasks, "n_train": len(tr), "n_valid": len(va), "fit_wall_seconds": wall,
           "train_seconds": epoch_seconds(run_dir, "classifier"),
           "valid": clf.result.classifier.metrics}
    out["scores"] = {t: task_scores(test[t], pred[t].tolist() if len(tasks) > 1 else list(pred)) for t in tasks}
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", required=True, help="Tweets.csv (../shared/data/twitter_us_airline/Tweets.csv)")
    ap.add_argument("--tasks", default=TASKS, help="two label columns, the first one labelled on every row")
    ap.add_argument("--n-train", type=int, default=2000, help="labelled tweets (valid held out of them)")
    ap.add_argument("--seed", type=int, default=0, help="the draw of the labelled tweets")
    ap.add_argument("--config", default=str(ROOT / "configs" / "quickstart.yaml"))
    ap.add_argument("--run-root", default="runs/bench_multitask")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "multitask_twitter_cpu.json"))
    ap.add_argument("overrides", nargs="*", help="dotted config overrides for every run")
    args = ap.parse_intermixed_args()
    tasks = args.tasks.split(",")
    overrides = ["run.progress=false", *args.overrides]
    base = load_config(args.config, overrides)
    train, valid, test = load_split(Path(args.data), tasks, args.n_train, base.data.valid_pct, args.seed)
    counts = {name: {"rows": len(df), **{t: int(df[t].notna().sum()) for t in tasks}}
              for name, df in (("train", train), ("valid", valid), ("test", test))}
    print(f"[bench] data: {counts}", flush=True)

    lm = finetune_lm(args, overrides, train, valid, tasks)
    print(f"[bench] LM fine-tuning: {lm['train_seconds']} s", flush=True)
    shared = [*overrides, "lm_pretrain.source=pretrained", f"lm_pretrain.weights={lm['model_dir']}",
              "lm_finetune.enabled=false"]
    runs = {"multi_task": train_classifier(args, "multi_task", shared, tasks, train, valid, test)}
    for t in tasks:
        runs[t] = train_classifier(args, t, shared, [t], train, valid, test)
    for name, r in runs.items():
        print(f"[bench] {name}: {r['train_seconds']} s, "
              + ", ".join(f"{t} {s['accuracy']:.4f}" for t, s in r["scores"].items()), flush=True)

    multi, single = runs["multi_task"], [runs[t] for t in tasks]
    t_multi, t_single = multi["train_seconds"], sum(r["train_seconds"] for r in single)
    figures = {
        "per_task": {t: {"multi_task": multi["scores"][t], "single_task": runs[t]["scores"][t],
                         "accuracy_gap_points": round(100 * (multi["scores"][t]["accuracy"]
                                                             - runs[t]["scores"][t]["accuracy"]), 2)}
                     for t in tasks},
        "classifier_seconds": {name: r["train_seconds"] for name, r in runs.items()},
        "lm_finetune_seconds": lm["train_seconds"],
        "time_ratio": round(t_multi / t_single, 3),  # (a) / (b + c), classifiers only
        # the LM fine-tuned once on either side; or, as separate pipelines would, once per single-task model
        "time_ratio_with_shared_lm": round((lm["train_seconds"] + t_multi) / (lm["train_seconds"] + t_single), 3),
        "time_ratio_with_lm_per_model": round((lm["train_seconds"] + t_multi)
                                              / (len(tasks) * lm["train_seconds"] + t_single), 3),
    }
    figures["bar"] = {"within_1_point": all(v["accuracy_gap_points"] >= -1 for v in figures["per_task"].values()),
                      "at_most_60pct_time": figures["time_ratio"] <= 0.6}
    import sklearn

    out = {"benchmark": "multitask_twitter", "machine": {**machine(), "ulmfit_lab": __version__,
                                                         "sklearn": sklearn.__version__, "pandas": pd.__version__},
           "command": " ".join([Path(sys.executable).name, *sys.argv]), "data": args.data, "tasks": tasks,
           "n_train": args.n_train, "seed": args.seed, "counts": counts, "config": args.config,
           "overrides": args.overrides, "lm_finetune": lm, "runs": runs, "figures": figures}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=2, default=str))
    print(json.dumps(figures, indent=2))
    print(f"[bench] -> {args.out}")


if __name__ == "__main__":
    main()
