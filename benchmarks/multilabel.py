"""Multi-label ULMFiT vs TF-IDF + one-vs-rest logistic regression on a multi-label set built from AG News (issue 24).

The recipe (seeded, `build_examples`): AG News articles (title + description; a backslash, the source's
escaped newline, becomes a space) are drawn without replacement, one topic queue per class (World, Sports,
Business, Sci/Tech), each queue shuffled. Each example is, with probability 1/2, one article (label set
{topic}), else two articles of two different topics joined by a space (label set {topic1, topic2}); its
topic(s) drawn uniformly among the topics with articles left. So a text has one or two labels, about half
each, and every topic is about equally common.
  train: `--n-train` (2,000) examples from the 4,000 official-train articles of
         `ag_news/hf_subset_project-chimera/{train,validation}.parquet` (seed `--seed`)
  test:  `--n-test` (2,000) examples from the official test set `ag_news/test.csv` (seed `--seed` + 1)
ULMFiT (configs/quickstart.yaml + the overrides; label lists train a multi-label classifier, a sigmoid per
label, thresholds tuned on its validation texts, `data.valid_pct` of the train examples) and TF-IDF (1-2
grams) + one-vs-rest logistic regression (C by 5-fold cross-validation on micro-F1, threshold 0.5) see the
same train examples. Figures on the test examples: micro/macro F1, subset accuracy, per-label
precision/recall/F1, seconds.

Usage:
  python benchmarks/multilabel.py --data ../shared/data/ag_news [--n-train 2000] [--n-test 2000] [--seed 0]
      [--run-dir runs/bench_multilabel] [--out benchmarks/results/multilabel_agnews_cpu.json] [override ...]
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

from ulmfit_lab import SentimentClassifier, __version__, load_config
from ulmfit_lab.stages.evaluate import multilabel_metrics

sys.path.insert(0, str(Path(__file__).resolve().parent))
from quickstart import ROOT, epoch_seconds, machine  # noqa: E402

TOPICS = ["World", "Sports", "Business", "Sci/Tech"]  # AG News classes 1-4 (label 0-3 in the parquet files)


def read_articles(folder: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(official-train articles, official-test articles), columns text and topic."""
    sub = folder / "hf_subset_project-chimera"
    train = pd.concat([pd.read_parquet(sub / f"{s}.parquet") for s in ("train", "validation")], ignore_index=True)
    train = pd.DataFrame({"text": train.text, "topic": [TOPICS[i] for i in train.label]})
    test = pd.read_csv(folder / "test.csv", header=None, names=["cls", "title", "description"],
                       keep_default_na=False)
    test = pd.DataFrame({"text": test.title + " " + test.description, "topic": [TOPICS[i - 1] for i in test.cls]})
    for df in (train, test):
        df["text"] = df.text.str.replace("\\", " ", regex=False)
    return train, test


def build_examples(articles: pd.DataFrame, n: int, seed: int) -> pd.DataFrame:
    """`n` examples (columns text, labels: a sorted list): one article, or two of different topics joined.

    Raises:
        SystemExit: too few articles for `n` examples.
    """
    rng = np.random.default_rng(seed)
    queues = {t: list(rng.permutation(articles.index[articles.topic == t].to_numpy())) for t in TOPICS}
    rows = []
    while len(rows) < n:
        left = [t for t in TOPICS if queues[t]]
        k = 1 if rng.random() < 0.5 or len(left) < 2 else 2
        if not left:
            raise SystemExit(f"only {len(rows)} examples from {len(articles)} articles; lower the example count")
        topics = [str(t) for t in rng.choice(left, k, replace=False)]
        ids = [queues[t].pop() for t in topics]
        rows.append((" ".join(articles.text[i] for i in ids), sorted(topics, key=TOPICS.index)))
    return pd.DataFrame(rows, columns=["text", "labels"])


def binarize(label_sets: list) -> np.ndarray:
    return np.array([[int(t in set(s)) for t in TOPICS] for s in label_sets])


def tfidf_baseline(train: pd.DataFrame, test: pd.DataFrame, seed: int) -> tuple[dict, np.ndarray]:
    """TF-IDF + one-vs-rest logistic regression: (info, 0/1 predictions on test)."""
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import GridSearchCV
    from sklearn.multiclass import OneVsRestClassifier
    from sklearn.pipeline import make_pipeline

    t0 = time.time()
    pipe = make_pipeline(TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True, min_df=1),
                         OneVsRestClassifier(LogisticRegression(max_iter=2000, random_state=seed)))
    search = GridSearchCV(pipe, {"onevsrestclassifier__estimator__C": [1, 3, 10, 30, 100]}, cv=5, n_jobs=1,
                          scoring="f1_micro")
    search.fit(train.text, binarize(train.labels))
    pred = search.predict(test.text)
    return {"C": search.best_params_["onevsrestclassifier__estimator__C"], "seconds": round(time.time() - t0, 1)}, pred


def ulmfit(args, train: pd.DataFrame, test: pd.DataFrame) -> tuple[dict, np.ndarray]:
    """ULMFiT multi-label: (info, 0/1 predictions on test)."""
    run_dir = Path(args.run_dir)
    shutil.rmtree(run_dir, ignore_errors=True)  # cold: every stage runs
    cfg = load_config(args.config, [f"run.dir={run_dir}", "run.progress=false", *args.overrides])
    t0 = time.time()
    clf = SentimentClassifier(cfg, run_dir=run_dir).fit(train.text.tolist(), train.labels.tolist())
    wall = time.time() - t0
    pred = binarize(clf.predict(test.text.tolist()))
    info = {"seconds": round(wall, 1), "lm_finetune_seconds": epoch_seconds(run_dir, "lm_finetune"),
            "classifier_seconds": epoch_seconds(run_dir, "classifier"),
            "thresholds": clf.result.classifier.metrics.get("thresholds"),
            "valid": {k: v for k, v in clf.result.classifier.metrics.items() if k != "thresholds"}}
    return info, pred


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", required=True, help="the ag_news folder (../shared/data/ag_news)")
    ap.add_argument("--n-train", type=int, default=2000, help="train examples (from 4,000 articles)")
    ap.add_argument("--n-test", type=int, default=2000, help="test examples (from the 7,600 test articles)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--config", default=str(ROOT / "configs" / "quickstart.yaml"))
    ap.add_argument("--run-dir", default="runs/bench_multilabel")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "multilabel_agnews_cpu.json"))
    ap.add_argument("--skip-tfidf", action="store_true", help="ULMFiT only")
    ap.add_argument("overrides", nargs="*", help="dotted config overrides for the ULMFiT run")
    args = ap.parse_intermixed_args()
    arts_train, arts_test = read_articles(Path(args.data))
    train = build_examples(arts_train, args.n_train, args.seed)
    test = build_examples(arts_test, args.n_test, args.seed + 1)
    y_test = binarize(test.labels)
    data = {name: {"examples": len(df), "two_labels": int((df.labels.map(len) == 2).sum()),
                   "per_label": dict(zip(TOPICS, binarize(df.labels).sum(0).tolist()))}
            for name, df in (("train", train), ("test", test))}
    print(f"[bench] data: {data}", flush=True)

    results = {}
    if not args.skip_tfidf:
        info, pred = tfidf_baseline(train, test, args.seed)
        results["tfidf_ovr_lr"] = {**multilabel_metrics(y_test, pred, TOPICS), **info}
    info, pred = ulmfit(args, train, test)
    results["ulmfit"] = {**multilabel_metrics(y_test, pred, TOPICS), **info}
    for name, r in results.items():
        print(f"[bench] {name}: micro-F1 {r['micro_f1']:.4f}, macro-F1 {r['macro_f1']:.4f}, "
              f"subset accuracy {r['subset_accuracy']:.4f}, {r['seconds']} s", flush=True)
    import sklearn

    out = {"benchmark": "multilabel_agnews", "machine": {**machine(), "ulmfit_lab": __version__,
                                                         "sklearn": sklearn.__version__, "pandas": pd.__version__},
           "command": " ".join([Path(sys.executable).name, *sys.argv]), "data": args.data,
           "recipe": "one article (p=1/2) or two of different topics joined by a space; seeded; see the docstring",
           "seed": args.seed, "counts": data, "config": args.config, "overrides": args.overrides,
           "results": results}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=2, default=str))
    print(f"[bench] -> {args.out}")


if __name__ == "__main__":
    main()
