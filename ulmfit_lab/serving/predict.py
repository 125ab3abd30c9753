"""The serving path: load an exported classifier folder and predict on raw strings, in input order.

Texts are read in chunks (so an input of any length streams), tokenized in worker processes, sorted by
length, batched by a token budget and run through `inference.FastClassifier` under
`torch.inference_mode`; every result goes back to its input position.

A multi-label model's probabilities are a sigmoid per label, a multi-task model's a softmax per task
(`label_mode` in model.json); `decode` turns them into predictions for every mode.
"""

from __future__ import annotations

import functools
import gc
import itertools
import multiprocessing as mp
import os
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn

from ..data.labels import DEFAULT_SEP, MULTI_LABEL, MULTI_TASK
from ..device import Precision, resolve_precision
from ..models.artifact import WEIGHTS, label_spec, read_artifact, resolve_model_dir, thresholds
from ..models.awd_lstm import activate, build_classifier
from ..models.checkpoint import load_weights, model_config_from_meta
from ..text.vocab import encode, fast_tokenizer, vocab_index
from .base import CHUNK, BasePredictor, check_strings, decode, text_chunks
from .inference import FastClassifier, ensure_nonempty, prepare, run_batches

__all__ = ["CHUNK", "MIN_PARALLEL_CHARS", "Predictor", "add_prediction_columns", "add_proba_columns", "decode",
           "decode_rows", "load_fastai_classifier", "text_chunks"]
# less text than this (about a CPU-second of tokenizing) is tokenized in-process: workers would cost more
MIN_PARALLEL_CHARS = 1_000_000


class Predictor(BasePredictor):
    """A trained classifier with its vocab, tokenizer settings and label names.

    `predict`, `predict_proba` and `iter_proba` come from `BasePredictor`; this class tokenizes (in worker
    processes for large inputs) and runs the model (`iter_chunks`).

    Args:
        model: fastai's classifier (`build_classifier`) or a `FastClassifier`.
        vocab: the token list.
        meta: the folder's model.json (`labels`, `model`, `lang`, ...).
        device: default CUDA when available, else CPU.
        precision: 'auto' (fp32 on CPU: equal to fastai to 1e-4; bf16/fp16 autocast on GPU), 'fp32',
            'bf16' (autocast; fast on CPUs with native bf16), 'fp16' (GPU), 'int8' (CPU dynamic quantization).
        num_workers: tokenizer processes for large inputs; default one per CPU core, 0 for none.
        max_tokens: padded token slots per batch (the batch-size budget); default 32k on CPU (about 100
            reviews of 300 tokens, ~1 GB of activations for the paper's model), 256k on GPU.
    """

    def __init__(self, model: nn.Module, vocab: list[str], meta: dict[str, Any], device: torch.device | None = None,
                 precision: Precision = "auto", num_workers: int | None = None, max_tokens: int | None = None):
        self.device = torch.device(device) if device is not None else torch.device(
            "cuda" if torch.cuda.is_available() else "cpu")
        self.fast = (model if isinstance(model, FastClassifier) else FastClassifier.from_fastai(model)).eval()
        self.precision = resolve_precision(precision, self.device)
        self.model = prepare(self.fast, self.precision, self.device)
        super().__init__(meta["labels"], label_spec(meta), thresholds(meta))  # multi-task labels: `task:class`
        self.vocab, self.meta = vocab, meta
        self.bptt = int(meta["model"]["bptt"])
        self.backwards = bool(meta["model"].get("backwards", False))
        self.lang = meta.get("lang", "en")
        self.num_workers = (os.cpu_count() or 1) if num_workers is None else num_workers
        self.max_tokens = max_tokens or (262144 if self.device.type == "cuda" else 32768)
        self._tok = fast_tokenizer(self.lang)  # fastai's tokens (training path), memoized
        self._o2i = vocab_index(vocab)

    @classmethod
    def load(cls, folder: str | Path, device: torch.device | str | None = None, precision: Precision = "auto",
             **kwargs) -> Predictor:
        """Load a folder written by the classifier stage, `SentimentClassifier.save` or `export_model`.

        Nothing is unpickled; a corrupt or mismatched folder raises `CheckpointError` saying what is wrong.
        """
        model, vocab, meta = load_fastai_classifier(folder)
        return cls(model.eval(), vocab, meta, device, precision, **kwargs)

    # ------------------------------------------------------------ tokens

    def encode(self, texts: list[str]) -> list[np.ndarray]:
        """Token ids per text (in this process)."""
        return encode(self._tok, self._o2i, texts)

    def _encode_chunk(self, texts: list[str], pool) -> list[np.ndarray]:
        if pool is None:
            return self.encode(texts)
        n = max(1, len(texts) // (self.num_workers * 4))  # a few pieces per worker balance uneven lengths
        parts = pool.map(_worker_encode, [texts[i:i + n] for i in range(0, len(texts), n)])
        return list(itertools.chain.from_iterable(parts))

    def _pool(self):
        global _WORKER
        if "fork" in mp.get_all_start_methods():
            # forked workers start in milliseconds and inherit this process's spaCy instead of loading their own
            self._tok.tokens([""])  # set spaCy up here, once, for the workers to inherit
            _WORKER = (self._tok, self._o2i)
            gc.freeze()  # the workers' garbage collector then leaves the parent's objects (and pages) alone
            try:
                return mp.get_context("fork").Pool(self.num_workers)
            finally:
                gc.unfreeze()
        return mp.get_context("spawn").Pool(self.num_workers, initializer=_worker_init,
                                            initargs=(self.lang, self.vocab))

    # ------------------------------------------------------------ predictions

    def iter_chunks(self, chunks: Iterable[list[str]], bs: int | None = None) -> Iterator[np.ndarray]:
        """Probabilities for each list of texts in `chunks`, in order; one tokenizer pool serves them all.

        `bs`: at most this many texts per batch (default: as many as `max_tokens` allows, up to 256).
        """
        ids_stream = self.iter_ids(chunks)
        try:
            for ids in ids_stream:
                yield self.proba_of_ids(ids, bs)
        finally:
            ids_stream.close()

    def iter_ids(self, chunks: Iterable[list[str]]) -> Iterator[list[np.ndarray]]:
        """Token ids for each list of texts in `chunks` (worker processes once the text is large enough)."""
        pool, seen = None, 0
        try:
            for chunk in chunks:
                check_strings(chunk, seen)
                if pool is None and self.num_workers > 1 and sum(map(len, chunk)) >= MIN_PARALLEL_CHARS:
                    pool = self._pool()
                seen += len(chunk)
                yield ensure_nonempty(self._encode_chunk(chunk, pool))
        finally:
            if pool is not None:
                pool.terminate()

    def proba_of_ids(self, ids: list[np.ndarray], bs: int | None = None) -> np.ndarray:
        """Probabilities (rows in the order of `ids`) for token ids in this model's reading order."""
        out = np.zeros((len(ids), len(self.labels)), dtype=np.float32)
        act = functools.partial(activate, sigmoid=self.spec.mode == MULTI_LABEL, bounds=self.spec.bounds())
        for idx, proba in run_batches(self.model, ids, self.precision, self.device, self.backwards,
                                      self.max_tokens, bs or 256, act):
            out[idx] = proba
        return out

def decode_rows(predictor, proba: np.ndarray) -> list:
    """One prediction per row of `proba`: a label; multi-label: a list of labels; multi-task: a dict task -> label."""
    pred = decode(predictor.spec, proba, predictor.thresholds)
    return pred.to_dict("records") if isinstance(pred, pd.DataFrame) else pred


def add_prediction_columns(df: pd.DataFrame, predictor, proba: np.ndarray) -> None:
    """What a prediction file adds to its rows: `prediction` (multi-label: the labels joined by the training
    separator, `|` by default; multi-task: `prediction_<task>` per task), then the `proba_*` columns."""
    pred = decode(predictor.spec, proba, predictor.thresholds)
    if predictor.spec.mode == MULTI_TASK:
        for task in pred.columns:
            df[f"prediction_{task}"] = pred[task].to_numpy()
    elif predictor.spec.mode == MULTI_LABEL:
        df["prediction"] = [(predictor.spec.sep or DEFAULT_SEP).join(map(str, labels)) for labels in pred]
    else:
        df["prediction"] = pred
    add_proba_columns(df, predictor.labels, proba)


def add_proba_columns(df: pd.DataFrame, labels: list, proba: np.ndarray) -> None:
    """One `proba_<label>` column per class, in `labels` order: how prediction files and evaluation write them."""
    for j, lab in enumerate(labels):
        df[f"proba_{lab}"] = proba[:, j]


def load_fastai_classifier(folder: str | Path) -> tuple[nn.Module, list[str], dict]:
    """(fastai's classifier model with the folder's weights, vocab, meta) from a checked model folder."""
    folder = resolve_model_dir(folder)
    meta, vocab = read_artifact(folder)
    model = build_classifier(len(vocab), len(meta["labels"]), model_config_from_meta(meta), meta.get("drop_mult", 0.5),
                             meta.get("head", [50]), meta.get("max_len", 1400))
    load_weights(model, folder / WEIGHTS)
    return model, vocab, meta


_WORKER: tuple | None = None


def _worker_init(lang: str, vocab: list[str]) -> None:
    global _WORKER
    _WORKER = (fast_tokenizer(lang), vocab_index(vocab))


def _worker_encode(texts: list[str]) -> list[np.ndarray]:
    return encode(*_WORKER, texts)
