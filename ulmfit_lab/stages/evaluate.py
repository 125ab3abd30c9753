"""Stage 4: evaluate the classifier on the test split (valid when there is none).

Writes accuracy, macro-F1, the confusion matrix (JSON + PNG), a per-class report, and predictions.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from ..fileio import atomic_path, write_json
from ..plots import plot_confusion
from ..serving.ensemble import mean_proba
from ..serving.predict import Predictor, add_proba_columns
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


def run(ctx: Context, data: DataResult, clfs: dict[str, ClassifierResult]) -> EvalResult:
    """Score each direction's classifier and, with several, their ensemble (mean of probabilities)."""
    split = "test" if data.split("test") is not None else "valid"
    stage = ctx.stage("evaluate", VERSION, data.key, {d: c.key for d, c in clfs.items()}, split)

    def body() -> dict:
        ds = data.split(split)
        # exact fp32 also on GPU: the reported metrics do not depend on the device's autocast
        predictors = {d: Predictor.load(c.model_dir, ctx.device, precision="fp32") for d, c in clfs.items()}
        probas = {d: p.predict_proba(ds["text"], bs=ctx.cfg.classifier.bs) for d, p in predictors.items()}
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
