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

CHUNK = 8192  # texts read, tokenized and sorted together; results come back chunk by chunk


class BasePredictor(ABC):
    """Class probabilities and labels for texts, in input order, on top of `iter_chunks`.

    Args:
        labels: the class of each probability column.
    """

    def __init__(self, labels: Iterable):
        self.labels: list = list(labels)

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

    def predict(self, texts: Iterable[str] | pd.Series, bs: int | None = None) -> list:
        """The most probable label for each text, in input order."""
        proba = self.predict_proba(texts, bs)
        return [self.labels[i] for i in proba.argmax(axis=1)]


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
