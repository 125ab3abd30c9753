"""Which texts to label next: uncertain ones, spread over the encoder's feature space.

The selection is Zhdanov's "diverse mini-batch active learning" (2019): keep the `beta * n` texts the model is
least sure of (smallest margin between its two most probable classes), cluster them into `n` groups with
k-means weighted by that uncertainty, and take from each cluster the text nearest its centre. Uncertainty
alone picks many near-identical texts from one confusing region; the clusters spread the picks out. With an
LM instead of a classifier (nothing labelled yet) there is no uncertainty, and the picks are a plain random
sample: on dev splits (30 seeds, the shipped LM's features, 50 labels) the texts nearest k-means centres were
2.5 points below a random sample on CR (one random text per cluster: 2.2 below; both give each small,
odd cluster as many picks as a large one), within a point of it on IMDb (benchmarks/README.md, "Simulated
labelling").

Features are what the classifier's head reads: [last, max, mean] pooling of the encoder's top layer
(`FastClassifier.features`): fine-tuned for the labels. For an LM (frozen, never fine-tuned on labels) they are
the mean over each text's tokens of every layer (the embedding and each LSTM), side by side: an LM's top layer
is specialised to predicting the next token (its last state says what comes next, not what the text is about),
and on IMDb and CR dev splits the every-layer means held more of the label than the top layer's pooling
(logistic regression on 400 random labels: 0.68 vs 0.65 on IMDb, 0.68 vs 0.65 on CR; benchmarks/README.md,
"Simulated labelling").
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd
import torch

from ..data.sources import DataError
from ..fileio import write_json
from ..models.artifact import (
    ENSEMBLE_FILE,
    META,
    CheckpointError,
    member_dirs,
    read_checkpoint_meta,
    resolve_model_dir,
)
from . import html as H
from .report import normalize

BETA = 10  # candidates per pick: Zhdanov (2019) found 10 a good default between pure uncertainty and diversity

# What to do with the labels. Texts picked near the decision boundary are nearer balance than the data (CR: 57%
# positive against 64%), and a classifier trained on them learns that as its prior: on CR dev splits its
# predictions were 4.6 points less often positive than a random-label classifier's (benchmarks/README.md,
# "Simulated labelling"). The first batch, a random sample, gives the data's class shares to train for.
ADVICE_RANDOM = ("a random sample (nothing labelled yet): once labelled, its class shares estimate your data's; "
                 "keep them: texts suggested later are not a random sample, so train on those with "
                 "classifier.class_prior={label: share, ...} set to these shares")
ADVICE_SELECTED = ("not a random sample: texts near the decision boundary, their classes nearer balance than your "
                   "data's. Train on them with your data's class shares, e.g. those of your first (random) batch: "
                   "classifier.class_prior={label: share, ...}")


@dataclass
class Suggestion:
    """`table`: the picked texts, most uncertain first, with an empty `label` column to fill in; `advice`: how to
    train on them once labelled (a random sample, or selected texts that want `classifier.class_prior`)."""

    table: pd.DataFrame
    files: dict[str, str] = field(default_factory=dict)
    advice: str = ""


# ---------------------------------------------------------------- features


@torch.inference_mode()
def classifier_features(predictor, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """(features the head reads, class probabilities) for `texts` with a `Predictor` (fp32 or not)."""
    from ..serving.inference import _autocast, collate, plan_batches

    ids = predictor.encode(list(texts))
    lens = np.fromiter((len(x) for x in ids), dtype=np.int64, count=len(ids))
    feats, proba = None, None
    for idx in plan_batches(lens, predictor.max_tokens):
        x, ln = collate(ids, idx, predictor.backwards)
        with _autocast(predictor.precision, predictor.device):
            f = predictor.model.features(x.to(predictor.device), ln)
        p = torch.softmax(predictor.model.head(f.float()).float(), -1)
        if feats is None:
            feats = np.zeros((len(ids), f.shape[1]), dtype=np.float32)
            proba = np.zeros((len(ids), p.shape[1]), dtype=np.float32)
        feats[idx], proba[idx] = f.float().cpu().numpy(), p.cpu().numpy()
    return feats, proba


def lm_features(folder: str | Path, texts: Sequence[str], max_len: int = 1400, bs: int = 64,
                layers: Literal["all", "top"] = "all") -> np.ndarray:
    """Frozen features of an LM folder's encoder for `texts`, over each text's last `max_len` tokens.

    Args:
        folder: an LM folder (`model.json` of kind lm).
        texts: the texts.
        max_len: keep each text's last `max_len` tokens, as the classifier's pooling does.
        bs: texts per batch.
        layers: `all` (default): the mean over the tokens of the embedding and of each LSTM layer, concatenated
            (emb_sz + sum of the layers' widths); `top`: [last, max, mean] of the top LSTM layer (3 x emb_sz),
            the pooling a classifier's head reads (see the module docstring for why `all` is the default).

    Returns:
        (len(texts), dim) float32 features, in the order of `texts`.
    """
    from ..lab.probe import layer_features
    from ..models.checkpoint import load_lm_checkpoint
    from ..text.vocab import encode, fast_tokenizer, vocab_index

    if layers not in ("all", "top"):
        raise ValueError(f"layers: expected 'all' or 'top'; found {layers!r}")
    model, vocab, meta = load_lm_checkpoint(Path(folder))
    backwards = bool(meta.get("model", {}).get("backwards", False))
    ids = encode(fast_tokenizer("en"), vocab_index(vocab), list(texts))
    per_layer = layer_features(model[0], ids, bs=bs, max_len=max_len, backwards=backwards)
    if layers == "top":
        return per_layer[-1]
    # each layer's block is [last, max, mean] of equal widths: keep the mean
    return np.concatenate([f[:, 2 * f.shape[1] // 3:] for f in per_layer], axis=1)


def model_kind(model: str | Path) -> str:
    """'classifier' (a model folder, ensemble or run directory) or 'lm' (an LM folder)."""
    folder = Path(model)
    if (folder / META).is_file() and read_checkpoint_meta(folder)[0].get("kind") == "lm":
        return "lm"
    return "classifier"


# ---------------------------------------------------------------- selection


def margin_uncertainty(proba: np.ndarray) -> np.ndarray:
    """1 - (p_first - p_second): 1 where the two most probable classes tie, 0 where one is certain."""
    top2 = np.sort(proba, axis=1)[:, -2:]
    return 1.0 - (top2[:, 1] - top2[:, 0])


def kmeans_clusters(features: np.ndarray, n: int, seed: int = 0, weight: np.ndarray | None = None
                    ) -> tuple[np.ndarray, np.ndarray]:
    """(cluster of each row, its distance to that cluster's centre) for `n` k-means clusters of `features`,
    standardised and, when wider than 50, in their 50 principal directions; `weight`: k-means sample weights."""
    from sklearn.cluster import KMeans
    from sklearn.decomposition import PCA
    from sklearn.preprocessing import StandardScaler
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=1, user_api="blas"):  # small problems: spinning BLAS threads only slow them down
        x = StandardScaler().fit_transform(features.astype(np.float64))
        if x.shape[1] > 50 and len(x) > 50:  # k-means distances in 50 principal directions: faster, less noise
            x = PCA(50, random_state=seed).fit_transform(x)
        km = KMeans(n_clusters=n, n_init=3, random_state=seed).fit(x, sample_weight=weight)
    return km.labels_, np.linalg.norm(x - km.cluster_centers_[km.labels_], axis=1)


def select(features: np.ndarray, n: int, proba: np.ndarray | None = None, seed: int = 0, beta: int = BETA,
           exclude: np.ndarray | None = None) -> np.ndarray:
    """Indices of `n` texts to label: uncertainty-weighted k-means over the `beta * n` most uncertain (see the
    module docstring); without `proba` (nothing labelled yet), a random sample of the pool. Most uncertain first.

    Args:
        features: (n_texts, d) encoder features.
        n: how many to pick.
        proba: (n_texts, n_classes) class probabilities of the current model, or None.
        seed: k-means initialisation.
        beta: candidates per pick.
        exclude: boolean mask of texts not to pick (already labelled).
    """
    avail = np.flatnonzero(~exclude) if exclude is not None else np.arange(len(features))
    if n <= 0 or len(avail) == 0:
        return np.array([], dtype=np.int64)
    if n >= len(avail):
        return avail
    rng = np.random.default_rng(seed)
    if proba is None:  # nothing to be uncertain about: a random sample (see the module docstring)
        return np.sort(rng.choice(avail, n, replace=False))
    unc = margin_uncertainty(proba)
    order = avail[np.lexsort((rng.random(len(avail)), -unc[avail]))]  # most uncertain first, ties at random
    cand = order[:min(len(order), beta * n)]
    labels, dist = kmeans_clusters(features[cand], n, seed, weight=unc[cand] + 1e-6)
    picks = []
    for c in range(n):
        members = np.flatnonzero(labels == c)
        if len(members):
            picks.append(cand[members[np.argmin(dist[members])]])
    picks = np.array(picks, dtype=np.int64)
    if len(picks) < n:  # an empty cluster (identical features): fill up with the next most uncertain
        taken = set(picks.tolist())
        rest = [i for i in cand if i not in taken]
        picks = np.concatenate([picks, np.array(rest[:n - len(picks)], dtype=np.int64)])
    return picks[np.argsort(-unc[picks], kind="stable")]


# ---------------------------------------------------------------- the command


def suggest(model: str | Path, unlabelled: str | Path | Sequence[str], n: int = 100, out: str | Path | None = None,
            text_column: str = "text", exclude: str | Path | None = None, seed: int = 0, beta: int = BETA
            ) -> Suggestion:
    """Pick `n` texts of `unlabelled` to label next and write them as a CSV ready to label.

    Args:
        model: a trained classifier (model folder or run directory), or an LM folder when nothing is labelled
            yet (then diversity alone decides).
        unlabelled: a table (CSV/TSV/JSONL/parquet, or .txt with one text per line) or a list of texts.
        n: how many texts to suggest.
        out: the CSV to write (default: `<unlabelled>_to_label.csv` beside the input; none for a list).
        text_column: the column holding the texts.
        exclude: a table whose texts are already labelled (same text column): never suggested.
        seed: k-means initialisation.
        beta: candidates per pick (see `select`).

    Returns:
        A `Suggestion`: the input's columns for the picked rows plus `label` (empty), `rank`, `prediction`,
        `confidence`, `uncertainty` and `row` (the input row); its `advice` says how to train on them.
    """
    if n < 1:
        raise DataError(f"--n: expected at least 1 text to suggest; found {n}")
    _check_model(model)
    if isinstance(unlabelled, (str, Path)):
        from ..data.tables import iter_table

        df = pd.concat(list(iter_table(unlabelled, text_column)), ignore_index=True)
    else:
        df = pd.DataFrame({text_column: list(unlabelled)})
    if len(df) == 0:
        raise DataError(f"{unlabelled}: no texts to choose from")
    keys = df[text_column].map(normalize)
    skip = keys.duplicated().to_numpy() | (keys == "").to_numpy()  # one copy of each text; no blank ones
    if exclude is not None:
        from ..data.tables import iter_table

        done = {normalize(t) for chunk in iter_table(exclude, text_column) for t in chunk[text_column]}
        skip |= keys.isin(done).to_numpy()
    texts = df[text_column].tolist()
    if model_kind(model) == "lm":  # nothing labelled yet: a random sample, no features needed
        feats, proba, labels = np.zeros((len(texts), 1), dtype=np.float32), None, None
    else:
        from ..serving.ensemble import load_model

        folder = resolve_model_dir(model)
        if (folder / ENSEMBLE_FILE).is_file():  # the features of one member: the forward model
            folder = next(iter(member_dirs(folder).values()))
        predictor = load_model(folder)
        feats, proba = classifier_features(predictor, texts)
        labels = [str(c) for c in predictor.labels]
    if int((~skip).sum()) == 0:
        raise DataError(f"{unlabelled}: every text is blank, a repeat, or already labelled (--exclude)")
    picks = select(feats, n, proba, seed, beta, exclude=skip)
    table = df.iloc[picks].copy()
    table.insert(table.columns.get_loc(text_column) + 1, "label", "")
    table.insert(0, "rank", np.arange(1, len(picks) + 1))
    table["row"] = picks
    if proba is not None:
        table["prediction"] = [labels[i] for i in proba[picks].argmax(1)]
        table["confidence"] = proba[picks].max(1).round(4)
        table["uncertainty"] = margin_uncertainty(proba[picks]).round(4)
    res = Suggestion(table.reset_index(drop=True), advice=ADVICE_RANDOM if proba is None else ADVICE_SELECTED)
    if out is None and isinstance(unlabelled, (str, Path)):
        p = Path(unlabelled)
        out = p.with_name(p.name.split(".")[0] + "_to_label.csv")
    if out is not None:
        out = Path(out)
        H.write_csv(res.table, out)
        meta = out.with_suffix(".json")
        write_json(meta, {"model": str(model), "unlabelled": str(unlabelled) if isinstance(unlabelled, (str, Path))
                          else f"{len(df)} texts", "n": int(len(picks)), "pool": int((~skip).sum()),
                          "method": "margin uncertainty, top beta*n, uncertainty-weighted k-means, nearest to centre"
                          if proba is not None else "a random sample (no classifier yet: nothing to be uncertain "
                          "about)", "features": "the classifier head's input" if proba is not None else None,
                          "beta": beta, "seed": seed, "advice": res.advice})
        res.files = {"csv": str(out), "json": str(meta)}
    return res


def _check_model(model: str | Path) -> None:
    if not Path(model).exists():
        raise CheckpointError(f"model not found: {model}; expected a classifier folder, a run directory or an LM "
                              "folder")
