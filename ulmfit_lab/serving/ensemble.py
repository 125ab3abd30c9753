"""Forward + backward ensembles, as in the paper: the average of the members' class probabilities.

An ensemble folder holds `ensemble.json` (`{"members": {"fwd": PATH, "bwd": PATH}}`, paths relative to
the folder) and, once saved, the member classifier folders themselves (written and read by `artifact.py`).
`load_model` opens either kind.
Each member runs through the fast exact path (`predict.Predictor`); members with the same vocab and
tokenizer share one tokenization of the texts.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np
import torch

from ..models.artifact import ENSEMBLE_FILE, CheckpointError, member_dirs, resolve_model_dir
from .base import BasePredictor
from .predict import Predictor


class EnsemblePredictor(BasePredictor):
    """Several classifiers over the same labels; `predict_proba` averages their probabilities.

    The same streaming interface as `Predictor` (`predict`, `predict_proba`, `iter_proba` from `BasePredictor`;
    `iter_chunks` here).
    """

    def __init__(self, members: dict[str, Predictor]):
        labels = {name: p.labels for name, p in members.items()}
        first = next(iter(labels.values()))
        if any(lab != first for lab in labels.values()):
            raise CheckpointError(f"ensemble members disagree on the labels: {labels}; train them on the same data")
        super().__init__(first, next(iter(members.values())).spec,
                         # multi-label: the mean of the members' thresholds, as the probabilities are their mean
                         np.mean([p.thresholds for p in members.values()], axis=0))
        if any(p.spec != self.spec for p in members.values()):
            raise CheckpointError(f"ensemble members disagree on the label mode: "
                                  f"{ {n: p.spec.mode for n, p in members.items()} }; train them on the same data")
        self.members = members
        # members that tokenize alike (same spaCy language and vocab) get their token ids from one encoder
        groups: dict[tuple, list[Predictor]] = {}
        for p in members.values():
            groups.setdefault((p.lang, tuple(p.vocab)), []).append(p)
        self._groups = list(groups.values())

    @property
    def precision(self) -> str:
        return next(iter(self.members.values())).precision

    def iter_chunks(self, chunks: Iterable[list[str]], bs: int | None = None) -> Iterator[np.ndarray]:
        """Mean probabilities for each list of texts in `chunks`, in order."""
        streams = itertools.tee(chunks, len(self._groups))  # in lock step: tee holds one chunk at most
        id_streams = [group[0].iter_ids(s) for group, s in zip(self._groups, streams)]
        try:
            for ids_per_group in zip(*id_streams):
                yield mean_proba([p.proba_of_ids(ids, bs) for ids, group in zip(ids_per_group, self._groups)
                                  for p in group])
        finally:
            for s in id_streams:
                s.close()  # ends the tokenizer pools


def mean_proba(probas: Iterable[np.ndarray]) -> np.ndarray:
    """How an ensemble combines its members: the mean of their class probabilities (one member: its own)."""
    return np.mean(list(probas), axis=0)


def load_model(folder: str | Path, device: torch.device | str | None = None, precision: str = "auto",
               **kwargs) -> Predictor | EnsemblePredictor:
    """A classifier folder, an ensemble folder (`ensemble.json`) or a run directory, ready to predict.

    `precision` and `kwargs` go to each member's `Predictor.load`.
    """
    folder = resolve_model_dir(folder)
    if not (folder / ENSEMBLE_FILE).is_file():
        return Predictor.load(folder, device, precision, **kwargs)
    return EnsemblePredictor({name: Predictor.load(path, device, precision, **kwargs)
                              for name, path in member_dirs(folder).items()})
