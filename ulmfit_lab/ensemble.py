"""Forward + backward ensembles, as in the paper: the average of the members' class probabilities.

An ensemble folder holds `ensemble.json` (`{"members": {"fwd": PATH, "bwd": PATH}}`, paths relative to
the folder) and, once saved, the member classifier folders themselves. `load_model` opens either kind.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from .models import CheckpointError
from .predict import Predictor
from .rundir import write_json

ENSEMBLE_FILE = "ensemble.json"


class EnsemblePredictor:
    """Several classifiers over the same labels; `predict_proba` averages their probabilities."""

    def __init__(self, members: dict[str, Predictor]):
        labels = {name: p.labels for name, p in members.items()}
        first = next(iter(labels.values()))
        if any(lab != first for lab in labels.values()):
            raise CheckpointError(f"ensemble members disagree on the labels: {labels}; train them on the same data")
        self.members, self.labels = members, list(first)

    def predict_proba(self, texts: Iterable[str] | pd.Series, bs: int = 64) -> np.ndarray:
        texts = list(texts) if not isinstance(texts, (list, pd.Series)) else texts
        return np.mean([p.predict_proba(texts, bs) for p in self.members.values()], axis=0)

    def predict(self, texts: Iterable[str] | pd.Series, bs: int = 64) -> list:
        return [self.labels[i] for i in self.predict_proba(texts, bs).argmax(axis=1)]


def load_model(folder: str | Path, device: torch.device | None = None) -> Predictor | EnsemblePredictor:
    """A classifier folder, or an ensemble folder (`ensemble.json`), ready to predict."""
    folder = Path(folder)
    if not (folder / ENSEMBLE_FILE).is_file():
        return Predictor.load(folder, device)
    return EnsemblePredictor({name: Predictor.load(path, device) for name, path in member_dirs(folder).items()})


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
    except (ValueError, KeyError, TypeError) as e:
        raise CheckpointError(f"{spec}: corrupt ensemble description ({e}); re-save the model") from None
    return {name: (folder / path).resolve() for name, path in members.items()}
