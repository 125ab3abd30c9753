"""`SentimentClassifier`: fit on texts + labels, predict on raw strings, save and load."""

from __future__ import annotations

import tempfile
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from .config import Config, load_config
from .data import LABEL, TEXT, DataError, load_data
from .ensemble import EnsemblePredictor, load_model
from .export import export_model
from .inference import Precision
from .pipeline import PipelineResult, run_pipeline
from .predict import Predictor

QUICKSTART = Path(__file__).resolve().parent.parent / "configs" / "quickstart.yaml"


class SentimentClassifier:
    """ULMFiT text classifier with a scikit-learn-like API.

    Example:
        >>> clf = SentimentClassifier.from_config("configs/quickstart.yaml", ["classifier.epochs=2"])
        >>> clf.fit(train_df)                 # columns `text` and `label`
        >>> clf.predict(["a great film"])     # -> ["pos"]
        >>> clf.save("my_model"); SentimentClassifier.load("my_model")
    """

    def __init__(self, config: Config | None = None):
        # the default is the quickstart recipe (minutes on a laptop CPU), not the paper's full size
        self.config = config or (load_config(QUICKSTART) if QUICKSTART.is_file() else Config())
        self.predictor: Predictor | EnsemblePredictor | None = None
        self._model_dir: str | None = None
        self.result: PipelineResult | None = None

    @classmethod
    def from_config(cls, path: str | Path, overrides: Iterable[str] = ()) -> SentimentClassifier:
        """Build from a YAML config with dotted overrides (`"classifier.epochs=2"`)."""
        return cls(load_config(path, overrides))

    def fit(self, texts: pd.DataFrame | Sequence[str], labels: Sequence | None = None, *,
            valid: pd.DataFrame | None = None, test: pd.DataFrame | None = None,
            unlabelled: Sequence[str] | None = None, run_dir: str | Path | None = None) -> SentimentClassifier:
        """Run the three stages (LM, LM fine-tuning, classifier) on labelled texts.

        Args:
            texts: a DataFrame with the text and label columns named in `config.data`
                (default `text` and `label`), or a list of strings with `labels`.
            labels: the labels, when `texts` is a list.
            valid: optional validation DataFrame; otherwise `data.valid_pct` of the training rows.
            test: optional test DataFrame, evaluated after training.
            unlabelled: extra texts used only for LM fine-tuning.
            run_dir: where the stages write; defaults to `config.run.dir`.

        Returns:
            self, trained.
        """
        train = _frame(texts, labels, self.config)
        cfg = self.config
        if run_dir is not None:
            cfg = cfg.replace(f"run.dir={run_dir}")
        data = load_data(cfg.data, Path(tempfile.gettempdir()), train=train, valid=valid, test=test,
                         unlabelled=list(unlabelled or []))
        until = "evaluate" if test is not None else "classifier"
        self.result = run_pipeline(cfg, until=until, data=data)
        self._model_dir = self.result.model_dir
        self.predictor = load_model(self._model_dir)
        return self

    def _need_model(self) -> Predictor | EnsemblePredictor:
        if self.predictor is None:
            raise RuntimeError("this classifier is not trained: call fit(...) or SentimentClassifier.load(path)")
        return self.predictor

    @property
    def classes(self) -> list:
        return self._need_model().labels

    def predict_proba(self, texts: Iterable[str] | pd.Series, bs: int | None = None) -> np.ndarray:
        """Probabilities per class (columns in `classes` order), rows in input order.

        `texts` may be a list, a pandas Series or any iterable (read in chunks, so it need not fit in
        memory); `bs` caps the texts per batch (default: a token budget decides).
        """
        return self._need_model().predict_proba(texts, bs)

    def predict(self, texts: Iterable[str] | pd.Series, bs: int | None = None) -> list:
        """The predicted label of each text, in input order."""
        return self._need_model().predict(texts, bs)

    def predict_iter(self, texts: Iterable[str], chunk_size: int = 8192) -> Iterator[tuple[Any, np.ndarray]]:
        """Stream `(label, probabilities)` per text, in input order, for inputs of any length."""
        p = self._need_model()
        for proba in p.iter_proba(texts, chunk_size=chunk_size):
            for row in proba:
                yield p.labels[int(row.argmax())], row

    def save(self, path: str | Path, torchscript: bool = False) -> Path:
        """Write a self-contained model folder: weights (safetensors), vocab, tokenizer settings, labels,
        config, checksum and version as JSON; no pickles (`export.export_model`). An ensemble is saved
        as one folder holding its members."""
        self._need_model()
        return export_model(self._model_dir, path, torchscript=torchscript)

    @classmethod
    def load(cls, path: str | Path, device=None, precision: Precision = "auto") -> SentimentClassifier:
        """Load a folder written by `save` (or a run's `classifier/model`).

        `precision`: 'auto' (exact fp32 on CPU, mixed precision on GPU), 'fp32', 'bf16', 'fp16' or 'int8'
        (see `Predictor`).
        """
        obj = cls()
        obj.predictor = load_model(path, device, precision)
        obj._model_dir = str(path)
        return obj


def _frame(texts, labels, cfg: Config) -> pd.DataFrame:
    if isinstance(texts, pd.DataFrame):
        if labels is not None:
            raise DataError("pass either a DataFrame with a label column, or texts and labels, not both")
        return texts
    if labels is None:
        raise DataError("fit(texts, labels): labels are missing; pass a list of labels, one per text")
    texts, labels = list(texts), list(labels)
    if len(texts) != len(labels):
        raise DataError(f"fit: {len(texts)} texts but {len(labels)} labels; they must pair up one to one")
    return pd.DataFrame({cfg.data.text_column or TEXT: texts, cfg.data.label_column or LABEL: labels})
