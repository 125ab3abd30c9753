"""Stage 4: evaluate the classifier on the test split (valid when there is none).

Writes accuracy, macro-F1, the confusion matrix (JSON + PNG), a per-class report, and predictions.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from ..plots import plot_confusion
from ..predict import Predictor
from ..rundir import write_json
from .classifier import ClassifierResult
from .common import Context, StageResult, run_cached
from .data import DataResult

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


def run(ctx: Context, data: DataResult, clf: ClassifierResult) -> EvalResult:
    split = "test" if data.split("test") is not None else "valid"
    stage = ctx.stage("evaluate", VERSION, data.key, clf.key, split)

    def body() -> dict:
        ds = data.split(split)
        predictor = Predictor.load(clf.model_dir, ctx.device, precision="fp32")  # exact, also on GPU
        labels = predictor.labels
        proba = predictor.predict_proba(ds["text"], bs=ctx.cfg.classifier.bs)
        y_true = [labels[i] for i in ds["label"]]
        y_pred = [labels[i] for i in proba.argmax(1)]
        metrics = classification_metrics(y_true, y_pred, labels)
        out = Path(stage.path)
        write_json(out / "metrics.json", metrics)
        preds = pd.DataFrame({"text": ds["text"], "label": y_true, "prediction": y_pred})
        for j, lab in enumerate(labels):
            preds[f"proba_{lab}"] = proba[:, j]
        preds.to_csv(out / "predictions.csv", index=False)
        plot_confusion(np.array(metrics["confusion_matrix"]), labels, out / "confusion_matrix.png")
        ctx.log(f"evaluate ({split}, n={metrics['n']}): accuracy {metrics['accuracy']:.4f}, "
                f"macro-F1 {metrics['macro_f1']:.4f}")
        return {"split": split, "metrics": {k: metrics[k] for k in ("n", "accuracy", "macro_f1",
                                                                      "confusion_matrix", "labels")}}

    return run_cached(ctx, stage, "evaluate", EvalResult, {"split": split}, body)
