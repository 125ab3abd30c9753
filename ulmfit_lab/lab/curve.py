"""Few-shot learning curves: test accuracy against the number of labelled examples N, for ULMFiT, the same
classifier trained from scratch, and TF-IDF + logistic regression (ULMFiT's paper, fig. 3).

Every point draws N labelled examples (stratified, per seed) from the labelled pool (all labelled texts
outside the test set); `data.valid_pct` of the N are the validation split, the rest train every method.
The test set is the same for every point.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from ..config import Config
from ..data.sources import LABEL, TEXT, DataError, LabelledData, _carve, _sample, load_data
from ..fileio import write_json
from ..pipeline import run_pipeline
from ..stages.common import default_cache_dir
from .common import existing_files, finished_result, one_direction, run_variant, shared_lm, write_table

log = logging.getLogger(__name__)

METHODS: tuple[str, ...] = ("ulmfit", "scratch", "tfidf")
DEFINITIONS = {
    "ulmfit": "the configured recipe (pretrained LM, LM fine-tuning, classifier)",
    "scratch": "the same classifier from random weights: lm_pretrain.source=none, lm_finetune.enabled=false, "
               "vocab from the N texts only",
    "tfidf": "TF-IDF of word 1-2 grams (sublinear tf) + L2 logistic regression (C=1), on the same training texts",
}


@dataclass(frozen=True)
class CurvePoint:
    method: str
    n: int
    seed: int
    n_train: int
    n_valid: int
    accuracy: float
    macro_f1: float
    seconds: float
    run_dir: str


@dataclass(frozen=True)
class CurveResult:
    """Every point, and `summary`: mean and std of test accuracy and macro-F1 per method and N; `majority`:
    the test accuracy of always predicting the most frequent test label (the floor to beat)."""

    points: list[CurvePoint]
    summary: pd.DataFrame
    definitions: dict[str, str]
    files: dict[str, str] = field(default_factory=dict)
    majority: float | None = None
    n_test: int | None = None

    def gain(self, method: str = "ulmfit", over: str = "scratch", metric: str = "accuracy") -> pd.Series:
        """Mean `metric` (accuracy or macro_f1) of `method` minus that of `over`, per N."""
        s = self.summary.set_index(["method", "n"])[f"{metric}_mean"]
        return (s[method] - s[over]).rename(f"{method} - {over}")


def tfidf_baseline(train: pd.DataFrame, test: pd.DataFrame) -> tuple[float, float]:
    """Test accuracy and macro-F1 of TF-IDF (1-2 grams) + logistic regression trained on `train`."""
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import f1_score
    from sklearn.pipeline import make_pipeline
    from threadpoolctl import threadpool_limits

    clf = make_pipeline(TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True), LogisticRegression(max_iter=1000))
    ytr, yte = train[LABEL].astype(str), test[LABEL].astype(str)
    with threadpool_limits(limits=1, user_api="blas"):  # small problem: spinning BLAS threads only slow it down
        clf.fit(train[TEXT], ytr)
        pred = clf.predict(test[TEXT])
    return float((pred == yte.values).mean()), float(f1_score(yte, pred, average="macro"))


MIN_STEPS = 200  # optimizer steps every neural point trains at least (see `small_n_overrides`)


def small_n_overrides(cfg: Config, n_train: int, min_steps: int = MIN_STEPS) -> list[str]:
    """Classifier overrides that let a small N train at least `min_steps` optimizer steps.

    The configured epochs suit the full data set: on 45 examples, 10 epochs of batches of 32 are 20 steps,
    too few for any model to leave the majority class. Small N gets smaller batches (down to n_train / 4,
    at least 8; never leaving a last batch of one) and then more epochs, the same for ULMFiT and from scratch;
    a large N keeps the config.
    """
    cc = cfg.classifier
    bs = min(cc.bs, max(8, n_train // 4))
    while bs > 2 and n_train % bs == 1 and bs != cc.bs:  # a last batch of 1 breaks the head's BatchNorm in training
        bs -= 1
    epochs = max(cc.epochs, math.ceil(min_steps / math.ceil(n_train / bs)))
    return ([f"classifier.bs={bs}"] if bs != cc.bs else []) + (
        [f"classifier.epochs={epochs}"] if epochs != cc.epochs else [])


def learning_curve(cfg: Config, sizes: list[int], seeds: list[int] = (0, 1, 2), methods: tuple[str, ...] = METHODS,
                   semi_supervised: bool = True, out_dir: str | Path | None = None,
                   min_steps: int = MIN_STEPS) -> CurveResult:
    """Train every method on N labelled examples for each N in `sizes` and seed, and test each on the same set.

    Args:
        cfg: the ULMFiT recipe; its data must have a test split (data.test, a test folder, or data.test_pct).
        sizes: the N values (labelled examples, validation included).
        seeds: each seed draws its own N examples and seeds training (`run.seed`).
        methods: some of `ulmfit`, `scratch`, `tfidf`.
        semi_supervised: ULMFiT's LM is fine-tuned once on every text of the labelled pool (labels unused)
            plus the unlabelled texts, as the paper's semi-supervised curve does, and each point then trains
            only the classifier (on a vocab from those texts). False: each point fine-tunes the LM on its own
            N texts plus the unlabelled ones (the paper's supervised curve).
        out_dir: default `run.dir/curve`; method M at size N and seed S runs in `out_dir/M/nN_seedS`.
        min_steps: a small N trains with smaller batches and more epochs, at least this many optimizer steps
            (`small_n_overrides`; 0: the config's epochs and batch size at every N).

    Returns:
        The points and their summary; writes curve_points.csv, curve.csv/.md and curve.png into `out_dir`.
    """
    bad = [m for m in methods if m not in METHODS]
    if bad or not methods:
        raise ValueError(f"methods {list(methods)}: expected some of {list(METHODS)}")
    cfg = one_direction(cfg)
    if "ulmfit" in methods:
        cfg = shared_lm(cfg)
    out = Path(out_dir) if out_dir else Path(cfg.run.dir) / "curve"
    cache = Path(cfg.run.cache_dir) if cfg.run.cache_dir else default_cache_dir()
    base = load_data(dataclasses.replace(cfg.data, max_train=None), cache)
    if base.test is None:
        raise DataError("curve: needs a fixed test set; found none. Set data.test, use data with a test split, "
                        "or set data.test_pct (e.g. 0.2)")
    pool = pd.concat([base.train, base.valid], ignore_index=True)
    pool["_row"] = np.arange(len(pool))
    too_big = [n for n in sizes if n > len(pool)]
    if too_big:
        raise DataError(f"curve: size(s) {too_big} exceed the {len(pool)} labelled texts outside the test set; "
                        "use smaller --sizes")
    definitions = dict(DEFINITIONS)
    ucfg, semi = cfg, "ulmfit" in methods and semi_supervised and cfg.lm_finetune.enabled
    if semi:
        ucfg = _finetune_once(cfg, pool, base.unlabelled, out / "lm_finetune")
        definitions["ulmfit"] += (": the LM fine-tuned once on the pool's texts and the unlabelled texts "
                                  "(semi-supervised), then the classifier on the N labels")
    scfg = cfg.replace("lm_pretrain.source=none", "lm_finetune.enabled=false")
    points = []
    for n in sorted(sizes):
        for seed in seeds:
            sample = _sample(pool, n, seed)
            tr, va = _carve(sample, cfg.data.valid_pct, seed)
            rest = pool[~pool["_row"].isin(sample["_row"])][TEXT].tolist()
            tr, va = tr.drop(columns="_row"), va.drop(columns="_row")
            for method in methods:
                t0 = time.time()
                if method == "tfidf":
                    acc, f1 = tfidf_baseline(tr, base.test)
                    run_dir = ""
                else:
                    # ULMFiT's vocab covers the texts its LM read; from scratch knows only the N texts
                    extra = ((rest if semi else []) + list(base.unlabelled)) if method == "ulmfit" else []
                    data = LabelledData(tr, va, base.test, extra)
                    run_dir = str(out / method / f"n{n}_seed{seed}")
                    res = run_variant(ucfg if method == "ulmfit" else scfg,
                                      [f"data.max_train={n}", f"run.seed={seed}", *small_n_overrides(cfg, len(tr),
                                                                                                    min_steps)],
                                      Path(run_dir), data=data)
                    acc, f1 = res.eval_accuracy, res.eval_macro_f1
                # neural methods: their training time, also when found done; TF-IDF: its fit
                secs = res.seconds if method != "tfidf" else round(time.time() - t0, 1)
                points.append(CurvePoint(method, n, seed, len(tr), len(va), acc, f1, secs, run_dir))
                log.info(f"curve: {method} N={n} seed {seed}: test accuracy {acc:.4f}")
    majority = float(base.test[LABEL].astype(str).value_counts(normalize=True).iloc[0])
    res = CurveResult(points, summarize(points), definitions, majority=majority, n_test=len(base.test))
    return dataclasses.replace(res, files=_write(res, out, len(base.test)))


def _finetune_once(cfg: Config, pool: pd.DataFrame, unlabelled: list[str], run_dir: Path) -> Config:
    """Fine-tune the LM once on the pool's texts + the unlabelled ones; the config that starts from it."""
    tr, va = _carve(pool.drop(columns="_row"), cfg.data.valid_pct, cfg.data.seed)
    log.info(f"curve: fine-tuning the LM once on {len(tr)} pool texts + {len(unlabelled)} unlabelled ({run_dir})")
    res = run_pipeline(cfg.replace(f"run.dir={run_dir}"), until="lm_finetune", data=LabelledData(tr, va, None,
                                                                                                    list(unlabelled)))
    return cfg.replace("lm_pretrain.source=pretrained", f"lm_pretrain.weights={res.lm_finetune.model_dir}",
                       "lm_finetune.enabled=false")


def summarize(points: list[CurvePoint]) -> pd.DataFrame:
    df = pd.DataFrame([asdict(p) for p in points])
    g, f = df.groupby(["method", "n"], sort=False)["accuracy"], df.groupby(["method", "n"], sort=False)["macro_f1"]
    out = pd.DataFrame({"accuracy_mean": g.mean(), "accuracy_std": g.std(ddof=0), "macro_f1_mean": f.mean(),
                        "macro_f1_std": f.std(ddof=0), "seeds": g.count()}).reset_index()
    order = {m: i for i, m in enumerate([*METHODS, *dict.fromkeys(df["method"])])}  # others (renamed) after
    return out.sort_values(["method", "n"], key=lambda s: s.map(order) if s.name == "method" else s,
                           ignore_index=True)


def merge_curves(results: Sequence[CurveResult], renames: Sequence[dict[str, str]] | None = None) -> CurveResult:
    """Several curves over the same samples (same data, sizes and seeds: the same N examples per point) as one.

    `renames[i]` renames methods of `results[i]`, e.g. `{"ulmfit": "ulmfit, reviews LM"}` for a curve run
    with `--methods ulmfit` and another pretrained LM, so both LMs share one table and plot with the first
    curve's scratch and TF-IDF points.
    """
    renames = list(renames) if renames else [{} for _ in results]
    points = [dataclasses.replace(p, method=rn.get(p.method, p.method)) for res, rn in zip(results, renames)
              for p in res.points]
    definitions = {rn.get(k, k): v for res, rn in zip(results, renames) for k, v in res.definitions.items()}
    return CurveResult(points, summarize(points), definitions, majority=results[0].majority,
                       n_test=results[0].n_test)


def plot_curve(res: CurveResult, path: str | Path) -> Path:
    """The learning curve (accuracy and macro-F1 against N, mean ± std over seeds) as a PNG."""
    return _plot(res.summary, Path(path), res.n_test or 0, res.majority)


def _write(res: CurveResult, out: Path, n_test: int) -> dict[str, str]:
    files = write_table(pd.DataFrame([asdict(p) for p in res.points]), out / "curve_points")
    wide = res.summary.pivot(index="n", columns="method", values="accuracy_mean")
    table = res.summary.copy()
    notes = [f"Test accuracy and macro-F1 (n_test = {n_test}; always predicting the most frequent label scores "
             f"accuracy {res.majority:.4f}) against N labelled examples (valid split included); mean and std over "
             "seeds."] + [f"- {k}: {v}" for k, v in res.definitions.items() if k in wide.columns]
    for other in ("scratch", "tfidf"):
        if {"ulmfit", other} <= set(wide.columns):
            for metric in ("accuracy", "macro_f1"):
                gain = res.gain(over=other, metric=metric)
                notes.append(f"ULMFiT minus {other} ({metric} points): "
                             + ", ".join(f"N={n}: {100 * g:+.1f}" for n, g in gain.items()))
    files.update(write_table(table, out / "curve", "Few-shot learning curve", notes))
    files["png"] = str(_plot(res.summary, out / "curve.png", n_test, res.majority))
    write_json(out / "curve.json", {"n_test": n_test, "majority_accuracy": res.majority,
                                    "definitions": res.definitions, "summary": res.summary.to_dict(orient="records")})
    files["json"] = str(out / "curve.json")
    return files


def read_curve(out_dir: str | Path) -> CurveResult:
    """The result of a finished `curve` from its folder (curve_points.csv), without training anything."""
    points_csv = finished_result(out_dir, "curve_points.csv", "the points", "curve", "the curve")
    out = points_csv.parent
    df = pd.read_csv(points_csv, keep_default_na=False, na_values=[""])
    df["run_dir"] = df["run_dir"].fillna("").astype(str)
    points = [CurvePoint(**r) for r in df.to_dict(orient="records")]
    meta = json.loads((out / "curve.json").read_text(encoding="utf-8")) if (out / "curve.json").is_file() else {}
    files = existing_files(out, {"csv": "curve.csv", "md": "curve.md", "png": "curve.png", "json": "curve.json",
                                 "points": "curve_points.csv"})
    return CurveResult(points, summarize(points), meta.get("definitions", dict(DEFINITIONS)), files,
                       meta.get("majority_accuracy"), meta.get("n_test"))


def _plot(summary: pd.DataFrame, path: Path, n_test: int, majority: float | None = None) -> Path:
    from matplotlib.ticker import NullFormatter

    from ..plots import _plt

    plt = _plt()
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    for ax, metric, name in zip(axes, ("accuracy", "macro_f1"), ("accuracy", "macro-F1")):
        for method, g in summary.groupby("method", sort=False):
            g = g.sort_values("n")
            m, sd = g[f"{metric}_mean"], g[f"{metric}_std"]
            ax.errorbar(g["n"], m, yerr=sd, marker="o", capsize=3, label=method)
            ax.fill_between(g["n"], m - sd, m + sd, alpha=0.15)
        if metric == "accuracy" and majority is not None:
            ax.axhline(majority, color="grey", ls="--", lw=1, label="majority class")
        ax.set_xscale("log")
        ns = sorted(summary["n"].unique())
        ax.set_xticks(ns, [str(n) for n in ns])
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.set_xlabel("labelled examples N (log scale)")
        ax.set_ylabel(f"test {name}" + (f" (n={n_test})" if n_test else ""))
        ax.set_title(f"{name} (mean ± std over seeds)")
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=8)
    fig.suptitle("Few-shot learning curve")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
