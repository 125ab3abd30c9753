"""What every predictor offers (`predict`, `predict_proba`, `iter_proba`, `labels`), written once.

A predictor (`predict.Predictor`, `ensemble.EnsemblePredictor`, `onnx_export.OnnxPredictor`) implements one
method, `iter_chunks`: the class probabilities of each list of texts it is given. Reading the input in
chunks, checking it, and turning probabilities into labels is done here, so every predictor streams inputs
of any length, refuses the same mistakes with the same words, and returns the same shapes.
"""

from __future__ import annotations

import itertools
from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator

import numpy as np
import pandas as pd

from ..data.labels import MULTI_LABEL, MULTI_TASK, SINGLE, LabelSpec

CHUNK = 8192  # texts read, tokenized and sorted together; results come back chunk by chunk


class BasePredictor(ABC):
    """Class probabilities and labels for texts, in input order, on top of `iter_chunks`.

    Args:
        labels: the class of each probability column (multi-task: `task:class`).
        spec: the label mode (default: single-label over `labels`); `predict` decodes by it.
        thresholds: multi-label: the decision threshold of each label (default 0.5).
    """

    def __init__(self, labels: Iterable, spec: LabelSpec | None = None, thresholds: Iterable[float] | None = None):
        self.labels: list = list(labels)
        self.spec: LabelSpec = spec or LabelSpec(SINGLE, tuple(self.labels))
        self.thresholds = np.asarray([0.5] * len(self.labels) if thresholds is None else list(thresholds),
                                     dtype=np.float32)

    @abstractmethod
    def iter_chunks(self, chunks: Iterable[list[str]], bs: int | None = None) -> Iterator[np.ndarray]:
        """Probabilities (rows in input order, columns following `labels`) for each list of texts in `chunks`.

        Args:
            chunks: lists of texts, read one at a time (see `text_chunks`); an item that is not a string is
                refused with `check_strings`.
            bs: at most this many texts per batch (None: the predictor's default).
        """

    def iter_proba(self, texts: Iterable[str] | pd.Series, bs: int | None = None,
                   chunk_size: int = CHUNK) -> Iterator[np.ndarray]:
        """Probabilities chunk by chunk (each chunk's rows in input order): for inputs of any length.

        Args:
            texts: strings; a list, a pandas Series or any iterable (read `chunk_size` at a time).
            bs: at most this many texts per batch (default: the predictor's own).
            chunk_size: texts read, tokenized and length-sorted together.
        """
        yield from self.iter_chunks(text_chunks(texts, chunk_size), bs)

    def predict_proba(self, texts: Iterable[str] | pd.Series, bs: int | None = None) -> np.ndarray:
        """Class probabilities, one row per text, in input order (columns follow `labels`)."""
        parts = list(self.iter_proba(texts, bs))
        return np.concatenate(parts) if parts else np.zeros((0, len(self.labels)), dtype=np.float32)

    def predict(self, texts: Iterable[str] | pd.Series, bs: int | None = None) -> list | pd.DataFrame:
        """The most probable label for each text, in input order (multi-label: a list of labels per text;
        multi-task: a DataFrame with a column per task; see `decode`)."""
        return decode(self.spec, self.predict_proba(texts, bs), self.thresholds)


def decode(spec: LabelSpec, proba: np.ndarray, thresholds: np.ndarray | None = None) -> list | pd.DataFrame:
    """Predictions from probabilities: the most probable label per row (single-label); the labels at or above
    their `thresholds` (multi-label: a list per row); the most probable class of each task (multi-task: a
    DataFrame with a column per task)."""
    if spec.mode == MULTI_LABEL:
        on = proba >= (0.5 if thresholds is None else np.asarray(thresholds))[None, :]
        return [[c for c, hit in zip(spec.classes, row) if hit] for row in on]
    if spec.mode == MULTI_TASK:
        return pd.DataFrame({t: [classes[i] for i in proba[:, a:b].argmax(axis=1)]
                             for (t, classes), (a, b) in zip(spec.tasks, spec.bounds())})
    return [spec.classes[i] for i in proba.argmax(axis=1)]


def text_chunks(texts: Iterable[str] | pd.Series, chunk_size: int = CHUNK) -> Iterator[list[str]]:
    """Lists of at most `chunk_size` texts, read lazily from any iterable."""
    if isinstance(texts, str):
        raise TypeError("predict expects a list of strings (or a pandas Series), not one string; "
                        "wrap it: predict([text])")
    it = iter(texts)
    return iter(lambda: list(itertools.islice(it, chunk_size)), [])


def check_strings(items: list, offset: int) -> None:
    """Refuse a chunk holding anything but strings; `offset`: the chunk's first position in the whole input."""
    bad = [offset + i for i, t in enumerate(items) if not isinstance(t, str)]
    if bad:
        raise TypeError(f"predict expects strings; {len(bad)} item(s) are not (first positions: {bad[:5]})")
