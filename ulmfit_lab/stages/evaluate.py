"""Stage 4: evaluate the classifier on the test split (valid when there is none).

Writes accuracy, macro-F1, the confusion matrix (JSON + PNG), a per-class report, and predictions.
Multi-label: subset accuracy, micro/macro F1 and per-label precision/recall at the tuned thresholds.
Multi-task: each task's metrics and confusion matrix (`confusion_matrix_<task>.png`) over the texts labelled
for that task (partial labels, `data/labels.py`).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from ..data.labels import DEFAULT_SEP, IGNORE, MULTI_LABEL, MULTI_TASK, SINGLE, LabelSpec
from ..fileio import atomic_path, write_json
from ..plots import plot_confusion
from ..serving.ensemble import mean_proba
from ..serving.predict import Predictor, add_prediction_columns, add_proba_columns, decode
from ..training import distributed
from .classifier import ClassifierResult
from .common import Context, StageResult, run_cached
from .data import DataResult

log = logging.getLogger(__name__)
log.addFilter(distributed.main_only)  # every rank runs the stages; rank 0 alone reports them

VERSION = 1


@dataclass(frozen=True)
class EvalResult(StageResult):
    split: str = ""


def classification_metrics(y_true: list, y_pred: list, labels: list) -> dict:
    from sklearn.metrics import accuracy_score, classification_report, confusion_matrix, f1_score

    return {
        "n": len(y_true),
        "accuracy": float(accuracy_score(y_true, y_pred)),
        "macro_f1": float(f1_score(y_true, y_pred, labels=labels, average="macro", zero_division=0)),
        "confusion_matrix": confusion_matrix(y_true, y_pred, labels=labels).tolist(),
        "labels": labels,
        "per_class": classification_report(y_true, y_pred, labels=labels, output_dict=True, zero_division=0),
    }


def multilabel_metrics(y_true: np.ndarray, y_pred: np.ndarray, labels: list) -> dict:
    """Subset accuracy, micro/macro F1 and per-label precision/recall/F1 of 0/1 matrices (texts x labels)."""
    from sklearn.metrics import accuracy_score, f1_score, precision_recall_fscore_support

    p, r, f, n = precision_recall_fscore_support(y_true, y_pred, zero_division=0)
    return {
        "n": len(y_true),
        "subset_accuracy": float(accuracy_score(y_true, y_pred)),
        "micro_f1": float(f1_score(y_true, y_pred, average="micro", zero_division=0)),
        "macro_f1": float(f1_score(y_true, y_pred, average="macro", zero_division=0)),
        "labels": labels,
        "per_label": {str(c): {"precision": float(p[j]), "recall": float(r[j]), "f1": float(f[j]),
                               "support": int(n[j])} for j, c in enumerate(labels)},
    }


def multitask_metrics(y_true: np.ndarray, pred: pd.DataFrame, spec: LabelSpec) -> dict:
    """`classification_metrics` per task (`tasks`) over the texts labelled for it (`n` each), and their mean
    accuracy and macro-F1 (over the tasks with a labelled text; a task without: `n` 0, no figures)."""
    tasks = {}
    for k, (t, classes) in enumerate(spec.tasks):
        rows = np.flatnonzero(y_true[:, k] != IGNORE)
        if len(rows) == 0:
            tasks[t] = {"n": 0, "accuracy": None, "macro_f1": None, "labels": list(classes),
                        "confusion_matrix": np.zeros((len(classes),) * 2, dtype=int).tolist(), "per_class": {}}
            continue
        tasks[t] = classification_metrics([classes[i] for i in y_true[rows, k]], pred[t].iloc[rows].tolist(),
                                          list(classes))
    scored = [m for m in tasks.values() if m["n"]]
    return {"n": len(y_true), "mean_accuracy": float(np.mean([m["accuracy"] for m in scored])),
            "mean_macro_f1": float(np.mean([m["macro_f1"] for m in scored])), "tasks": tasks}


def run(ctx: Context, data: DataResult, clfs: dict[str, ClassifierResult]) -> EvalResult:
    """Score each direction's classifier and, with several, their ensemble (mean of probabilities)."""
    split = "test" if data.split("test") is not None else "valid"
    stage = ctx.stage("evaluate", VERSION, data.key, {d: c.key for d, c in clfs.items()}, split)

    def body() -> dict:
        ds = data.split(split)
        # exact fp32 also on GPU: the reported metrics do not depend on the device's autocast
        predictors = {d: Predictor.load(c.model_dir, ctx.device, precision="fp32") for d, c in clfs.items()}
        probas = {d: p.predict_proba(ds["text"], bs=ctx.cfg.classifier.bs) for d, p in predictors.items()}
        if next(iter(predictors.values())).spec.mode != SINGLE:
            return _evaluate_multi(ctx, split, ds, predictors, probas, Path(stage.path))
        labels = next(iter(predictors.values())).labels
        y_true = [labels[i] for i in ds["label"]]
        per_direction = {d: classification_metrics(y_true, [labels[i] for i in p.argmax(1)], labels)
                         for d, p in probas.items()}
        proba = mean_proba(probas.values())  # the ensemble; one direction: its own
        y_pred = [labels[i] for i in proba.argmax(1)]
        metrics = classification_metrics(y_true, y_pred, labels)
        if len(probas) > 1:
            metrics["per_direction"] = {d: {k: m[k] for k in ("accuracy", "macro_f1")}
                                        for d, m in per_direction.items()}
        out = Path(stage.path)
        write_json(out / "metrics.json", metrics)
        preds = pd.DataFrame({"text": ds["text"], "label": y_true, "prediction": y_pred})
        add_proba_columns(preds, labels, proba)
        with atomic_path(out / "predictions.csv") as tmp:
            preds.to_csv(tmp, index=False)
        plot_confusion(np.array(metrics["confusion_matrix"]), labels, out / "confusion_matrix.png")
        what = "+".join(probas) + (" ensemble" if len(probas) > 1 else "")
        extra = "".join(f"; {d} {m['accuracy']:.4f}" for d, m in per_direction.items()) if len(probas) > 1 else ""
        log.info(f"evaluate ({split}, n={metrics['n']}, {what}): accuracy {metrics['accuracy']:.4f}, "
                 f"macro-F1 {metrics['macro_f1']:.4f}{extra}")
        keep = ("n", "accuracy", "macro_f1", "confusion_matrix", "labels", "per_direction")
        return {"split": split, "metrics": {k: metrics[k] for k in keep if k in metrics}}

    return run_cached(ctx, stage, EvalResult, {"split": split, "directions": list(clfs)}, body)


def _evaluate_multi(ctx: Context, split: str, ds, predictors: dict[str, Predictor], probas: dict[str, np.ndarray],
                    out: Path) -> dict:
    """Multi-label or multi-task: the metrics of the ensemble's mean probabilities (one direction: its own),
    and of each direction; predictions.csv as `ulmfit-lab predict` writes it, plus the true labels."""
    first = next(iter(predictors.values()))
    spec, proba = first.spec, mean_proba(probas.values())
    th = np.mean([p.thresholds for p in predictors.values()], axis=0)  # as EnsemblePredictor
    y = np.asarray(list(ds["label"]))

    def score(pr: np.ndarray, thresholds: np.ndarray) -> dict:
        if spec.mode == MULTI_LABEL:
            return multilabel_metrics(y, (pr >= thresholds[None, :]).astype(int), list(spec.classes))
        return multitask_metrics(y, decode(spec, pr), spec)

    metrics = score(proba, th)
    head = ("subset_accuracy", "micro_f1", "macro_f1") if spec.mode == MULTI_LABEL else ("mean_accuracy",
                                                                                         "mean_macro_f1")
    if len(probas) > 1:
        metrics["per_direction"] = {d: {k: score(pr, predictors[d].thresholds)[k] for k in head}
                                    for d, pr in probas.items()}
    if spec.mode == MULTI_LABEL:
        metrics["thresholds"] = [float(t) for t in th]
    write_json(out / "metrics.json", metrics)
    preds = pd.DataFrame({"text": ds["text"]})
    if spec.mode == MULTI_LABEL:
        preds["label"] = [(spec.sep or DEFAULT_SEP).join(str(c) for c, on in zip(spec.classes, row) if on) for row in y]
    else:
        for k, (t, classes) in enumerate(spec.tasks):
            preds[f"label_{t}"] = [None if i == IGNORE else classes[i] for i in y[:, k]]  # (not labelled)
    add_prediction_columns(preds, first if len(predictors) == 1 else _Mean(spec, th, first.labels), proba)
    with atomic_path(out / "predictions.csv") as tmp:
        preds.to_csv(tmp, index=False)
    if spec.mode == MULTI_TASK:
        for t, m in metrics["tasks"].items():
            plot_confusion(np.array(m["confusion_matrix"]), m["labels"], out / f"confusion_matrix_{t}.png")
    shown = ", ".join(f"{k} {metrics[k]:.4f}" for k in head)
    log.info(f"evaluate ({split}, n={metrics['n']}, {'+'.join(probas)}{' ensemble' if len(probas) > 1 else ''}, "
             f"{spec.mode}): {shown}")
    keep = (*head, "n", "labels", "thresholds", "per_direction")
    summary = {k: metrics[k] for k in keep if k in metrics}
    if spec.mode == MULTI_TASK:
        summary["tasks"] = {t: {k: m[k] for k in ("n", "accuracy", "macro_f1", "confusion_matrix", "labels")}
                            for t, m in metrics["tasks"].items()}
    return {"split": split, "metrics": summary}


class _Mean:
    """What `add_prediction_columns` reads of a predictor, for the ensemble's mean probabilities."""

    def __init__(self, spec: LabelSpec, thresholds: np.ndarray, labels: list):
        self.spec, self.thresholds, self.labels = spec, thresholds, labels
