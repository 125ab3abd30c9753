"""The serving path: load an exported classifier folder and predict on raw strings, in input order.

fastai's `SortedDL` reorders texts by length; here we sort for speed too, then put every result
back at its input position.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn

from .loaders import pad_batch
from .models import CheckpointError, build_classifier, load_weights, model_config_from_meta, read_checkpoint_meta
from .text import UNK, fast_tokenizer


class Predictor:
    """A trained classifier with its vocab, tokenizer settings and label names."""

    def __init__(self, model: nn.Module, vocab: list[str], meta: dict[str, Any], device: torch.device | None = None):
        self.device = device or torch.device("cuda" if torch.cuda.is_available() else "cpu")
        self.model = model.to(self.device).eval()
        self.vocab, self.meta = vocab, meta
        self.labels: list = list(meta["labels"])
        self.bptt = int(meta["model"]["bptt"])
        self.backwards = bool(meta["model"].get("backwards", False))
        self._tok = fast_tokenizer(meta.get("lang", "en"))  # fastai's tokens, memoized
        self._o2i = {w: i for i, w in enumerate(vocab) if w != "xxfake"}  # as fastai's Numericalize

    @classmethod
    def load(cls, folder: str | Path, device: torch.device | None = None) -> Predictor:
        """Load a folder written by the classifier stage or `SentimentClassifier.save` (no pickles)."""
        meta, vocab = read_checkpoint_meta(Path(folder))
        if meta.get("kind") != "classifier":
            raise CheckpointError(f"{folder}: holds a {meta.get('kind', 'unknown')!r} model, not a classifier")
        m = model_config_from_meta(meta)
        model = build_classifier(len(vocab), len(meta["labels"]), m, meta.get("drop_mult", 0.5),
                                 meta.get("head", [50]), meta.get("max_len", 1400))
        load_weights(model, Path(folder) / "model.safetensors")
        return cls(model, vocab, meta, device)

    def encode(self, texts: list[str]) -> list[np.ndarray]:
        return [np.fromiter((self._o2i.get(t, UNK) for t in toks), dtype=np.int64, count=len(toks))
                for toks in self._tok.tokens(texts)]

    @torch.inference_mode()
    def predict_proba(self, texts: Iterable[str] | pd.Series, bs: int = 64) -> np.ndarray:
        """Class probabilities, one row per text, in input order (columns follow `labels`)."""
        texts = _as_list(texts)
        if not texts:
            return np.zeros((0, len(self.labels)), dtype=np.float32)
        ids = self.encode(texts)
        order = np.argsort([-len(x) for x in ids], kind="stable")  # longest first, as BPT3C expects
        out = np.zeros((len(texts), len(self.labels)), dtype=np.float32)
        pad = pad_batch(self.bptt)
        for start in range(0, len(order), bs):
            idx = order[start:start + bs]
            samples = []
            for i in idx:
                t = torch.as_tensor(ids[i])
                samples.append((t.flip(0) if self.backwards else t,))
            x = torch.stack([s[0] for s in pad(samples)]).to(self.device)
            logits = self.model(x)[0]
            out[idx] = torch.softmax(logits.float(), dim=-1).cpu().numpy()
        return out

    def predict(self, texts: Iterable[str] | pd.Series, bs: int = 64) -> list:
        """The most probable label for each text, in input order."""
        proba = self.predict_proba(texts, bs)
        return [self.labels[i] for i in proba.argmax(axis=1)]


def _as_list(texts: Iterable[str] | pd.Series | str) -> list[str]:
    if isinstance(texts, str):
        raise TypeError("predict expects a list of strings (or a pandas Series), not one string; "
                        "wrap it: predict([text])")
    items = list(texts)
    bad = [i for i, t in enumerate(items) if not isinstance(t, str)]
    if bad:
        raise TypeError(f"predict expects strings; {len(bad)} item(s) are not (first positions: {bad[:5]})")
    return items
