"""Forward + backward ensembles, as in the paper: the average of the members' class probabilities.

An ensemble folder holds `ensemble.json` (`{"members": {"fwd": PATH, "bwd": PATH}}`, paths relative to
the folder) and, once saved, the member classifier folders themselves. `load_model` opens either kind.
Each member runs through the fast exact path (`predict.Predictor`); members with the same vocab and
tokenizer share one tokenization of the texts.
"""

from __future__ import annotations

import itertools
import json
import os
import shutil
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import torch

from .fileio import write_json
from .models import CheckpointError

if TYPE_CHECKING:  # predict imports export, which reads ensemble folders: import Predictor lazily
    from .predict import Predictor

ENSEMBLE_FILE = "ensemble.json"


class EnsemblePredictor:
    """Several classifiers over the same labels; `predict_proba` averages their probabilities.

    The same streaming interface as `Predictor` (`predict`, `predict_proba`, `iter_proba`, `iter_chunks`).
    """

    def __init__(self, members: dict[str, Predictor]):
        labels = {name: p.labels for name, p in members.items()}
        first = next(iter(labels.values()))
        if any(lab != first for lab in labels.values()):
            raise CheckpointError(f"ensemble members disagree on the labels: {labels}; train them on the same data")
        self.members, self.labels = members, list(first)
        # members that tokenize alike (same spaCy language and vocab) get their token ids from one encoder
        groups: dict[tuple, list[Predictor]] = {}
        for p in members.values():
            groups.setdefault((p.lang, tuple(p.vocab)), []).append(p)
        self._groups = list(groups.values())

    @property
    def precision(self) -> str:
        return next(iter(self.members.values())).precision

    def iter_proba(self, texts: Iterable[str] | pd.Series, bs: int | None = None,
                   chunk_size: int = 8192) -> Iterator[np.ndarray]:
        """Mean probabilities chunk by chunk, each chunk's rows in input order (see `Predictor.iter_proba`)."""
        from .predict import text_chunks

        yield from self.iter_chunks(text_chunks(texts, chunk_size), bs)

    def iter_chunks(self, chunks: Iterable[list[str]], bs: int | None = None) -> Iterator[np.ndarray]:
        """Mean probabilities for each list of texts in `chunks`, in order."""
        streams = itertools.tee(chunks, len(self._groups))  # in lock step: tee holds one chunk at most
        id_streams = [group[0].iter_ids(s) for group, s in zip(self._groups, streams)]
        try:
            for ids_per_group in zip(*id_streams):
                yield np.mean([p.proba_of_ids(ids, bs) for ids, group in zip(ids_per_group, self._groups)
                               for p in group], axis=0)
        finally:
            for s in id_streams:
                s.close()  # ends the tokenizer pools

    def predict_proba(self, texts: Iterable[str] | pd.Series, bs: int | None = None) -> np.ndarray:
        parts = list(self.iter_proba(texts, bs))
        return np.concatenate(parts) if parts else np.zeros((0, len(self.labels)), dtype=np.float32)

    def predict(self, texts: Iterable[str] | pd.Series, bs: int | None = None) -> list:
        return [self.labels[i] for i in self.predict_proba(texts, bs).argmax(axis=1)]


def load_model(folder: str | Path, device: torch.device | str | None = None, precision: str = "auto",
               **kwargs) -> Predictor | EnsemblePredictor:
    """A classifier folder, an ensemble folder (`ensemble.json`) or a run directory, ready to predict.

    `precision` and `kwargs` go to each member's `Predictor.load`.
    """
    from .export import resolve_model_dir
    from .predict import Predictor

    folder = resolve_model_dir(folder)
    if not (folder / ENSEMBLE_FILE).is_file():
        return Predictor.load(folder, device, precision, **kwargs)
    return EnsemblePredictor({name: Predictor.load(path, device, precision, **kwargs)
                              for name, path in member_dirs(folder).items()})


def write_ensemble(dest: Path, members: dict[str, Path], copy: bool = False) -> Path:
    """Describe an ensemble in `dest`; with `copy`, the member folders are copied in (self-contained)."""
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    paths = {}
    for name, src in members.items():
        if copy:
            shutil.copytree(src, dest / name, dirs_exist_ok=True)
            paths[name] = name
        else:
            paths[name] = os.path.relpath(Path(src).resolve(), dest.resolve())
    write_json(dest / ENSEMBLE_FILE, {"format_version": 1, "combine": "mean of probabilities", "members": paths})
    return dest


def member_dirs(folder: Path) -> dict[str, Path]:
    """The member folders of an ensemble folder (one entry, the folder itself, for a single classifier)."""
    folder = Path(folder)
    spec = folder / ENSEMBLE_FILE
    if not spec.is_file():
        return {"model": folder}
    try:
        members = json.loads(spec.read_text(encoding="utf-8"))["members"]
        out = {str(name): (folder / path).resolve() for name, path in members.items()}
    except (ValueError, KeyError, TypeError, AttributeError) as e:
        raise CheckpointError(f"{spec}: corrupt ensemble description ({e}); re-save the model") from None
    if not out:
        raise CheckpointError(f"{spec}: the ensemble lists no members; re-save the model")
    return out
