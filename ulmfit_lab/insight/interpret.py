"""Interpret a trained classifier: its top losses with their text, the confusion matrix, errors per class, and
word attributions (integrated gradients on the embeddings) for chosen texts, on one HTML page.

fastai's `TextClassificationInterpretation` gives top losses; its attention view is gone in fastai 2. Here the
attributions are integrated gradients (Sundararajan et al. 2017) of the predicted class's probability with
respect to the token embeddings, from an all-zero embedding baseline, summed over the embedding dimension: a
token's score is how much it moves that probability, and the scores of a text add up to p(text) - p(baseline)
(the `delta` reported is how far they are from it; more `steps` make it smaller).
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from ..data.sources import DataError
from ..data.tables import read_table, require_columns
from ..fileio import write_json, write_text
from ..models.artifact import CheckpointError
from ..serving.inference import FastClassifier
from ..serving.predict import Predictor
from ..stages.evaluate import classification_metrics
from . import html as H


@dataclass(frozen=True)
class Attribution:
    """One text's tokens (fastai's, in reading order) and their integrated-gradients scores for `target`."""

    text: str
    tokens: list[str]
    scores: list[float]
    target: str
    label: str | None
    p_target: float
    p_baseline: float
    delta: float  # sum(scores) - (p_target - p_baseline): the integration error

    def top(self, k: int = 5, sign: int = 1) -> list[tuple[str, float]]:
        """The `k` tokens pushing most towards (`sign=1`) or against (`-1`) the target class."""
        order = np.argsort([-sign * s for s in self.scores])[:k]
        return [(self.tokens[i], round(self.scores[i], 4)) for i in order if sign * self.scores[i] > 0]


@dataclass
class Interpretation:
    """Predictions on a labelled split: `table` (text, label, prediction, p_label, loss; highest loss first),
    `metrics` (accuracy, macro-F1, confusion matrix, per-class report), and attributions."""

    table: pd.DataFrame
    metrics: dict
    per_class: pd.DataFrame
    attributions: list[Attribution]
    files: dict[str, str] = field(default_factory=dict)


# ---------------------------------------------------------------- integrated gradients


def _logits_from_embeddings(fast: FastClassifier, emb: torch.Tensor) -> torch.Tensor:
    """The classifier's logits for a batch of equal-length embedded texts (bs, L, E), as `FastClassifier`
    computes them from ids: the LSTMs over the whole text, [last, max, mean] pooled over fastai's BPT3C
    window (positions >= ceil((L - max_len) / bptt) * bptt), then the head."""
    x = emb
    for rnn in fast.lstms:
        x, _ = rnn(x)
    length = x.shape[1]
    start = math.ceil(max(length - fast.max_len, 0) / fast.bptt) * fast.bptt
    window = x[:, start:]
    return fast.head(torch.cat([x[:, -1], window.max(dim=1).values, window.mean(dim=1)], dim=1))


def integrated_gradients(fast: FastClassifier, ids: np.ndarray, target: int, steps: int = 32,
                         backwards: bool = False) -> tuple[np.ndarray, float, float]:
    """Integrated gradients of p(target) w.r.t. the token embeddings, from an all-zero embedding.

    Args:
        fast: the classifier (fp32).
        ids: token ids of one text, in reading order.
        target: the class index whose probability is explained.
        steps: points of the midpoint Riemann sum along the path (more: smaller integration error).
        backwards: the model reads right to left (the scores come back in reading order all the same).

    Returns:
        (one score per token, p(target) for the text, p(target) for the baseline).
    """
    fast = fast.eval()
    seq = torch.as_tensor(np.asarray(ids[::-1] if backwards else ids, dtype=np.int64))[None]
    with torch.no_grad():
        emb = fast.embedding(seq).float()  # (1, L, E)
        base = torch.zeros_like(emb)
        p_x = float(torch.softmax(_logits_from_embeddings(fast, emb), -1)[0, target])
        p_b = float(torch.softmax(_logits_from_embeddings(fast, base), -1)[0, target])
    total = torch.zeros_like(emb[0])
    alphas = (torch.arange(steps, dtype=torch.float32) + 0.5) / steps
    per_batch = max(1, 16384 // max(1, emb.shape[1]))  # bound the activations kept for backward
    with torch.enable_grad():
        for i in range(0, steps, per_batch):
            a = alphas[i:i + per_batch, None, None]
            path = (base + a * (emb - base)).detach().requires_grad_(True)
            p = torch.softmax(_logits_from_embeddings(fast, path), -1)[:, target]
            (grad,) = torch.autograd.grad(p.sum(), path)
            total += grad.sum(0)
    scores = ((emb - base)[0] * total / steps).sum(-1).numpy()
    return (scores[::-1] if backwards else scores).copy(), p_x, p_b


def attribute(predictor: Predictor, texts: Sequence[str], targets: Sequence | None = None,
              labels: Sequence | None = None, steps: int = 32) -> list[Attribution]:
    """Integrated-gradients word attributions for `texts`, for the class named in `targets` (default: the
    predicted class of each text)."""
    if predictor.precision != "fp32":
        raise ValueError("attributions need the fp32 model: load the Predictor with precision='fp32'")
    ids = predictor.encode(list(texts))
    toks = predictor._tok.tokens(list(texts))
    proba = predictor.proba_of_ids(ids)
    out = []
    for k, text in enumerate(texts):
        t = int(proba[k].argmax()) if targets is None else predictor.labels.index(targets[k])
        scores, p_x, p_b = integrated_gradients(predictor.fast, ids[k], t, steps, predictor.backwards)
        tokens = toks[k] if len(toks[k]) == len(ids[k]) else [predictor.vocab[i] for i in ids[k]]
        out.append(Attribution(text, list(tokens), [float(s) for s in scores], str(predictor.labels[t]),
                               None if labels is None else str(labels[k]), p_x, p_b,
                               float(scores.sum() - (p_x - p_b))))
    return out


# ---------------------------------------------------------------- the interpretation


def _model_and_data(run: str | Path, split: str, data: str | Path | None, text_column: str,
                    label_column: str) -> tuple[Path, pd.DataFrame]:
    run = Path(run)
    if data is not None:
        from ..models.artifact import resolve_model_dir

        model_dir = resolve_model_dir(run)
        df = read_table(data, text_column=text_column, label_column=label_column)
        require_columns(df, [text_column, label_column], str(data), "Use --text-column / --label-column")
        return model_dir, pd.DataFrame({"text": df[text_column].astype(str), "label": df[label_column]})
    model_dir = run / "classifier" / "model"
    done = run / "data" / "DONE.json"
    if not model_dir.is_dir() or not done.is_file():
        raise CheckpointError(f"{run}: expected a finished run directory (data/DONE.json and classifier/model); "
                              "found none. Train one (`ulmfit-lab train-classifier CONFIG`), or give a model "
                              "folder with --data FILE (a table with text and label columns)")
    import datasets

    classes = json.loads(done.read_text(encoding="utf-8"))["result"]["classes"]
    path = run / "data" / f"{split}.arrow"
    if not path.is_file():
        have = sorted(p.stem for p in (run / "data").glob("*.arrow") if p.stem != "unlabelled")
        raise DataError(f"{run}: no {split} split in this run (splits: {have}); use --split with one of them")
    ds = datasets.Dataset.from_file(str(path))
    return model_dir, pd.DataFrame({"text": ds["text"], "label": [classes[i] for i in ds["label"]]})


def interpret(run: str | Path, out_dir: str | Path | None = None, split: str = "valid",
              data: str | Path | None = None, texts: Sequence[str] = (), n_top: int = 20, n_attr: int = 5,
              steps: int = 32, text_column: str = "text", label_column: str = "label") -> Interpretation:
    """Top losses, confusion matrix, per-class errors and word attributions of a trained classifier.

    Args:
        run: a finished run directory (its `classifier/model` and the `split` of its data stage), or a model
            folder together with `data`.
        out_dir: where interpret.html, interpret.json, top_losses.csv and confusion_matrix.png go (default
            `run/interpret`).
        split: the run's split to read (valid or test).
        data: a labelled table to use instead of the run's split.
        texts: extra texts to attribute (besides the `n_attr` highest-loss ones).
        n_top: rows in the top-losses table of the page (the CSV has every row).
        n_attr: how many of the highest-loss texts get word attributions.
        steps: integration steps of integrated gradients.

    Returns:
        An `Interpretation`.
    """
    if n_top < 0 or n_attr < 0 or steps < 1:
        raise DataError(f"expected n_top >= 0, n_attr >= 0 and steps >= 1; found {n_top}, {n_attr}, {steps}")
    model_dir, df = _model_and_data(run, split, data, text_column, label_column)
    if len(df) == 0:
        raise DataError(f"{data or run}: no rows to interpret")
    predictor = Predictor.load(model_dir, device="cpu", precision="fp32")
    labels = [str(c) for c in predictor.labels]
    y = df["label"].astype(str).tolist()
    unknown = sorted(set(y) - set(labels))
    if unknown:
        raise DataError(f"label(s) {unknown[:5]} are not classes of the model ({labels}); check --label-column")
    proba = predictor.predict_proba(df["text"].tolist())
    idx = np.array([labels.index(v) for v in y])
    p_label = proba[np.arange(len(y)), idx]
    table = pd.DataFrame({"text": df["text"], "label": y, "prediction": [labels[i] for i in proba.argmax(1)],
                          "p_label": p_label, "p_prediction": proba.max(1),
                          "loss": -np.log(np.clip(p_label, 1e-12, None))})
    table = table.sort_values("loss", ascending=False, kind="stable").reset_index(names="row")
    metrics = classification_metrics(y, table.sort_values("row")["prediction"].tolist(), labels)
    cm = np.array(metrics["confusion_matrix"])
    per_class = pd.DataFrame([{"class": c, "support": int(cm[i].sum()), "errors": int(cm[i].sum() - cm[i, i]),
                               "precision": metrics["per_class"][c]["precision"],
                               "recall": metrics["per_class"][c]["recall"], "f1": metrics["per_class"][c]["f1-score"],
                               "most_confused_with": (labels[int(np.argmax(np.where(np.arange(len(labels)) == i, -1,
                                                                                     cm[i])))]
                                                      if cm[i].sum() > cm[i, i] else "")}
                              for i, c in enumerate(labels)])
    chosen = table.head(n_attr)
    attrs = attribute(predictor, chosen["text"].tolist(), labels=chosen["label"].tolist(), steps=steps)
    if texts:
        attrs += attribute(predictor, list(texts), steps=steps)
    res = Interpretation(table, metrics, per_class, attrs)
    out = Path(out_dir) if out_dir else Path(run) / "interpret"
    res.files = _write(res, out, n_top, str(model_dir), split if data is None else str(data))
    return res


def _write(res: Interpretation, out: Path, n_top: int, model_dir: str, source: str) -> dict[str, str]:
    from ..plots import plot_confusion

    out.mkdir(parents=True, exist_ok=True)
    files = {"html": str(out / "interpret.html"), "json": str(out / "interpret.json"),
             "csv": str(out / "top_losses.csv"), "png": str(out / "confusion_matrix.png")}
    labels = res.metrics["labels"]
    with H.atomic_png(out / "confusion_matrix.png") as tmp:
        plot_confusion(np.array(res.metrics["confusion_matrix"]), labels, tmp)
    H.write_csv(res.table, out / "top_losses.csv")
    write_json(out / "interpret.json", {
        "model": model_dir, "data": source,
        "metrics": {k: res.metrics[k] for k in ("n", "accuracy", "macro_f1", "confusion_matrix", "labels")},
        "per_class": res.per_class.to_dict(orient="records"),
        "top_losses": res.table.head(n_top).to_dict(orient="records"),
        "attributions": [{**asdict(a), "top_for": a.top(5, 1), "top_against": a.top(5, -1)}
                         for a in res.attributions],
        "method": "integrated gradients of p(target) w.r.t. token embeddings, zero-embedding baseline",
        "files": files})
    write_text(out / "interpret.html", render_html(res, out / "confusion_matrix.png", n_top, model_dir, source))
    return files


def highlight(a: Attribution) -> str:
    """The text's tokens as <span>s: green pushes towards the target class, red against; the stronger, the
    deeper. fastai's marker tokens (xxbos, xxmaj, ...) are shown small and grey-bordered."""
    peak = max((abs(s) for s in a.scores), default=0.0) or 1.0
    spans = []
    for tok, s in zip(a.tokens, a.scores):
        alpha = min(1.0, abs(s) / peak)
        rgb = "22,163,74" if s > 0 else "220,38,38"
        style = f"background: rgba({rgb},{alpha:.2f});"
        if tok.startswith("xx"):
            style += " font-size: .7em; color: #555; border: 1px dotted #aaa;"
        spans.append(f'<span style="{style}" title="{s:+.4f}">{H.esc(tok)}</span>')
    return '<div class="attr">' + " ".join(spans) + "</div>"


def render_html(res: Interpretation, confusion_png: Path, n_top: int, model_dir: str, source: str) -> str:
    m = res.metrics
    parts = [f"<p>{m['n']} labelled texts; accuracy <b>{m['accuracy']:.4f}</b>, macro-F1 <b>{m['macro_f1']:.4f}</b>."
             "</p>", "<h2>Confusion matrix</h2>", H.png_tag(confusion_png, "confusion matrix"),
             "<h2>Errors per class</h2>", H.table(res.per_class),
             f"<h2>Top losses (first {min(n_top, len(res.table))} of {len(res.table)}; all in top_losses.csv)</h2>",
             H.table(res.table.head(n_top)[["row", "label", "prediction", "p_label", "loss", "text"]]),
             "<h2>Word attributions</h2>",
             '<p class="small">Integrated gradients of the probability of the class named, with respect to the '
             "token embeddings (baseline: all-zero embeddings). <span style=\"background: rgba(22,163,74,.6)\">"
             "green</span> raises it, <span style=\"background: rgba(220,38,38,.6)\">red</span> lowers it; hover "
             "a word for its score. The scores of a text add up to p(text) - p(baseline), up to delta.</p>"]
    for a in res.attributions:
        head = (f"explaining <b>{H.esc(a.target)}</b> (p={a.p_target:.3f}; baseline {a.p_baseline:.3f}; delta "
                f"{a.delta:+.4f})" + (f"; true label <b>{H.esc(a.label)}</b>" if a.label is not None else ""))
        parts += [f"<p>{head}</p>", highlight(a)]
    return H.page("Model interpretation", parts, subtitle=f"model: {model_dir}; data: {source}")
