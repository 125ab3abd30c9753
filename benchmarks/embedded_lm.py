"""The quickstart from a pretrained LM vs TF-IDF + logistic regression, on three datasets, in one run.

For each dataset, 2,000 labelled texts train (the quickstart holds out 10% of them for validation),
the rest (IMDb: 2,000 official test reviews) test; TF-IDF (1-2 grams) + logistic regression, with C
chosen by 5-fold cross-validation, sees the same 2,000 labels. ULMFiT variants (each a config override):
  embedded  the shipped general + review-domain LM (`lm_pretrain.weights=reviews-fwd`), or --lm
  wt2       an LM pretrained on WikiText-2 only (--lm-wt2 FOLDER: an `lm` stage's model folder)
  scratch   no pretrained LM (LM fine-tuning from random weights on the 2,000 texts)

Usage:
  python benchmarks/embedded_lm.py --shared ../shared/data --out benchmarks/results/embedded_lm_cpu.json \
      [--datasets imdb,twitter,cr] [--variants embedded,wt2,scratch] [--lm reviews-fwd] [--lm-wt2 DIR] [override ...]
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

from ulmfit_lab import SentimentClassifier, load_config
from ulmfit_lab.config import DataConfig
from ulmfit_lab.data.sources import read_source

sys.path.insert(0, str(Path(__file__).resolve().parent))
from quickstart import ROOT, machine  # noqa: E402

N_TRAIN = 2000


def load_dataset(name: str, shared: Path, seed: int, cache: Path,
                 n_train: int = N_TRAIN) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(train, test) DataFrames with columns text, label: `n_train` random train rows, the rest to test
    (IMDb: `n_train` random reviews of the official test split)."""
    rng = np.random.default_rng(seed)
    if name == "imdb":
        parts = read_source(str(shared / "imdb" / "aclImdb.tar.xz"), DataConfig(), cache)
        train, test = parts["train"], parts["test"]
        return (train.iloc[rng.choice(len(train), n_train, replace=False)].reset_index(drop=True),
                test.iloc[rng.choice(len(test), n_train, replace=False)].reset_index(drop=True))
    if name == "twitter":
        df = pd.read_csv(shared / "twitter_us_airline" / "Tweets.csv")
        df = df.rename(columns={"airline_sentiment": "label"})[["text", "label"]]
    elif name == "cr":
        rows = [(line.strip(), lab) for lab in ("pos", "neg")
                for line in (shared / "cr" / f"custrev.{lab}").read_text(encoding="utf-8").splitlines() if line.strip()]
        df = pd.DataFrame(rows, columns=["text", "label"])
    else:
        raise SystemExit(f"unknown dataset {name!r}: expected imdb, twitter or cr")
    idx = rng.permutation(len(df))
    return df.iloc[idx[:n_train]].reset_index(drop=True), df.iloc[idx[n_train:]].reset_index(drop=True)


def tfidf_baseline(train: pd.DataFrame, test: pd.DataFrame, seed: int) -> dict:
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import accuracy_score, f1_score
    from sklearn.model_selection import GridSearchCV
    from sklearn.pipeline import make_pipeline

    t0 = time.time()
    pipe = make_pipeline(TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True, min_df=1),
                         LogisticRegression(max_iter=2000, random_state=seed))
    search = GridSearchCV(pipe, {"logisticregression__C": [1, 3, 10, 30, 100]}, cv=5, n_jobs=1)
    search.fit(train.text, train.label)
    pred = search.predict(test.text)
    return {"accuracy": float(accuracy_score(test.label, pred)),
            "macro_f1": float(f1_score(test.label, pred, average="macro")),
            "C": search.best_params_["logisticregression__C"], "seconds": round(time.time() - t0, 1)}


def variant_overrides(variant: str, args: argparse.Namespace) -> list[str]:
    if variant == "embedded":
        return ["lm_pretrain.source=pretrained", f"lm_pretrain.weights={args.lm}"]
    if variant == "wt2":
        if not args.lm_wt2:
            raise SystemExit("variant wt2 needs --lm-wt2 FOLDER (an LM pretrained on WikiText-2 only)")
        return ["lm_pretrain.source=pretrained", f"lm_pretrain.weights={args.lm_wt2}"]
    if variant == "scratch":
        return ["lm_pretrain.source=none"]
    raise SystemExit(f"unknown variant {variant!r}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shared", required=True, help="the shared data folder (../shared/data)")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "embedded_lm_cpu.json"))
    ap.add_argument("--datasets", default="imdb,twitter,cr")
    ap.add_argument("--variants", default="embedded,wt2,scratch")
    ap.add_argument("--config", default=str(ROOT / "configs" / "quickstart.yaml"))
    ap.add_argument("--lm", default="reviews-fwd", help="the embedded LM: registry name or LM folder")
    ap.add_argument("--lm-wt2", default=None, help="LM folder pretrained on WikiText-2 only")
    ap.add_argument("--run-root", default="runs/bench_embedded")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--n-train", type=int, default=N_TRAIN, help="labelled texts per dataset")
    ap.add_argument("overrides", nargs="*", help="dotted overrides for every ULMFiT run")
    args = ap.parse_intermixed_args()
    shared, out_path = Path(args.shared), Path(args.out)
    results = json.loads(out_path.read_text()) if out_path.exists() else {}  # resume: keep finished cells
    results.update({"benchmark": "embedded_lm", "machine": machine(), "n_train": args.n_train, "config": args.config,
                    "overrides": args.overrides, "lm": args.lm, "lm_wt2": args.lm_wt2})
    cells = results.setdefault("results", {})
    cache = Path(args.run_root) / "cache"
    for ds in args.datasets.split(","):
        train, test = load_dataset(ds, shared, args.seed, cache, args.n_train)
        cell = cells.setdefault(ds, {"n_train": len(train), "n_test": len(test),
                                     "classes": sorted(train.label.unique().tolist())})
        if "tfidf" not in cell:
            cell["tfidf"] = tfidf_baseline(train, test, args.seed)
            print(f"[bench] {ds} tfidf: {cell['tfidf']['accuracy']:.4f}", flush=True)
        for variant in [v for v in args.variants.split(",") if v]:
            if variant in cell:
                continue
            run_dir = Path(args.run_root) / f"{ds}-{variant}"
            shutil.rmtree(run_dir, ignore_errors=True)
            cfg = load_config(args.config, [f"run.dir={run_dir}", "run.progress=false", "data.max_test=null",
                                            *variant_overrides(variant, args), *args.overrides])
            t0 = time.time()
            clf = SentimentClassifier(cfg, run_dir=run_dir).fit(train, test=test)  # reads run_dir's files below
            ev = clf.result.evaluate.metrics
            lm_ft = run_dir / "lm_finetune" / "metrics.jsonl"  # absent with lm_finetune.enabled=false
            rows = [json.loads(x) for x in lm_ft.read_text().splitlines()] if lm_ft.exists() else []
            cell[variant] = {"accuracy": ev["accuracy"], "macro_f1": ev["macro_f1"],
                             "seconds": round(time.time() - t0, 1),
                             "lm_valid_perplexity": rows[-1].get("perplexity") if rows else None,
                             "lm_valid_perplexity_before": (clf.result.lm_finetune.metrics.get(
                                 "valid_perplexity_before") if clf.result.lm_finetune else None)}
            print(f"[bench] {ds} {variant}: {ev['accuracy']:.4f} in {cell[variant]['seconds'] / 60:.1f} min "
                  f"(tfidf {cell['tfidf']['accuracy']:.4f})", flush=True)
            out_path.parent.mkdir(parents=True, exist_ok=True)
            out_path.write_text(json.dumps(results, indent=2, default=str))
    out_path.write_text(json.dumps(results, indent=2, default=str))
    print(json.dumps({ds: {k: v.get("accuracy") for k, v in c.items() if isinstance(v, dict)}
                      for ds, c in cells.items()}, indent=2))


if __name__ == "__main__":
    main()
