"""`SentimentClassifier`: a scikit-learn classifier over the three ULMFiT stages.

Fit on texts + labels, predict on raw strings, save and load. Each fitted classifier owns its model: `fit`
trains in a run directory (by default one per config + data under the user cache, so refitting the same
config on the same data reuses its finished stages) and keeps its own content-addressed copy of the trained
model there, which a later fit in the same directory cannot overwrite; `predict` and `save` both use that copy.

Several labels per text (`data/labels.py`): labels given as lists train a multi-label classifier (`predict` gives
a list of labels per text); several label columns (`data.label_column=[a, b]`, or `labels` as a DataFrame with a
column per task) a multi-task one (`predict` gives a DataFrame with a column per task, `predict_proba` a list
of arrays, one per task, as scikit-learn's `MultiOutputClassifier`).
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import Iterable, Iterator, Sequence
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.exceptions import NotFittedError

from .config import Config, ConfigError, from_dict, label_columns, load_config
from .data.labels import MULTI_LABEL, MULTI_TASK, is_missing
from .data.sources import LABEL, TEXT, DataError, LabelledData, load_data
from .device import Precision
from .logs import console
from .models.artifact import (
    CONFIG,
    ENSEMBLE_FILE,
    META,
    WEIGHTS,
    CheckpointError,
    label_spec,
    member_dirs,
    read_artifact,
    resolve_model_dir,
)
from .models.hub import sha256_file
from .pipeline import PipelineResult, run_pipeline
from .serving.ensemble import EnsemblePredictor, load_model
from .serving.export import export_model
from .serving.predict import Predictor, decode_rows
from .stages.common import default_cache_dir
from .training.rundir import stage_key

# the default recipe, a config shipped as package data and found by name (so an installed wheel finds it too):
# the quickstart (minutes on a laptop CPU), not the paper's full size
DEFAULT_CONFIG = "quickstart"
# run settings that change no result: left out of the default run directory's key
_NOT_IN_RUN_KEY = ("dir", "cache_dir", "progress", "num_workers", "checkpoint_minutes", "stop_after_minutes")

Texts = str | Sequence[str] | pd.Series | pd.DataFrame | np.ndarray


class SentimentClassifier(ClassifierMixin, BaseEstimator):
    """ULMFiT text classifier (LM fine-tuning, then a classifier) with the scikit-learn estimator API.

    Hyper-parameters are keyword arguments; `get_params` / `set_params`, `sklearn.base.clone`,
    `cross_val_score`, `Pipeline` and `GridSearchCV` work as with any scikit-learn classifier.

    Args:
        config: the recipe: a shipped config's name (`"quickstart"`, the default; `"tiny"`, `"imdb"`), the path
            of a YAML config, or a `Config`.
        overrides: dotted overrides applied to `config`, e.g. `["lm_finetune.epochs=1", "data.max_vocab=30000"]`.
        pretrained: the LM to start from: a shipped LM's name, an LM folder, or weights by path or URL
            (`lm_pretrain.source=pretrained`); False: none (the LM learns from your texts alone); None: as in
            `config`.
        epochs: classifier epochs (`classifier.epochs`); None: as in `config`.
        lr: classifier learning rate (`classifier.lr`).
        bs: classifier training batch size (`classifier.bs`).
        max_len: tokens of each text the classifier reads at most (`classifier.max_len`).
        seed: random seed of training and of the validation split (`run.seed`, `data.seed`).
        run_dir: where `fit` writes its stages; default: `<cache>/runs/<key>` under `run.cache_dir` or
            `~/.cache/ulmfit_lab` (`$ULMFIT_LAB_CACHE`), keyed by the config and the data. A config's
            `run.dir` is the command line's (relative to the current folder); the API uses `run_dir` alone.
        verbose: while `fit` runs, print its progress lines (`[ulmfit-lab] ...`, as the command line does) on
            stdout. False: print none; the records of the `ulmfit_lab` loggers still reach any handler your
            own `logging` configuration sets up.

    Attributes (after `fit` or `load`):
        classes_: the labels, in the order of `predict_proba`'s columns (multi-task: one array per task).
        tasks_: the task names of a multi-task classifier (else None).
        config: the config of the model this classifier holds (before fitting: the one `fit` will use).
        run_dir_: the run directory `fit` used (None after `load`).
        model_dir_: the folder of the model `predict` uses and `save` copies.
        result: `fit`'s per-stage results and metrics (`result.evaluate.metrics` when `test=` was given).

    Example:
        >>> clf = SentimentClassifier(epochs=4).fit(train_df)   # columns `text` and `label`
        >>> clf.predict("a great film")                         # -> 'pos'
        >>> clf.predict(["a great film", "dull"])               # -> ['pos', 'neg']
        >>> clf.save("my_model"); SentimentClassifier.load("my_model")
    """

    # fitted state; class attributes so that an unfitted instance holds its parameters alone (scikit-learn's rule)
    predictor: Predictor | EnsemblePredictor | None = None
    result: PipelineResult | None = None
    config_: Config | None = None
    run_dir_: Path | None = None
    model_dir_: Path | None = None
    _weights: str | None = None

    def __init__(self, config: Config | str | os.PathLike | None = None, overrides: Sequence[str] = (), *,
                 pretrained: str | os.PathLike | bool | None = None, epochs: int | None = None,
                 lr: float | None = None, bs: int | None = None, max_len: int | None = None,
                 seed: int | None = None, run_dir: str | os.PathLike | None = None, verbose: bool = True):
        # scikit-learn: store the parameters exactly as given; they are read and checked in `fit`
        self.config = config
        self.overrides = overrides
        self.pretrained = pretrained
        self.epochs = epochs
        self.lr = lr
        self.bs = bs
        self.max_len = max_len
        self.seed = seed
        self.run_dir = run_dir
        self.verbose = verbose

    # ------------------------------------------------------------ parameters and config

    @property
    def config(self) -> Config:
        """The config of the model this classifier holds (after `fit` or `load`); before, the one `fit` will use."""
        return self.config_ if self.config_ is not None else self._build_config()

    @config.setter
    def config(self, value: Config | str | os.PathLike | None) -> None:
        self._config = value

    def get_params(self, deep: bool = True) -> dict[str, Any]:
        """The constructor's parameters as given (`config` as passed, not the resolved `Config`)."""
        return {name: self._config if name == "config" else getattr(self, name) for name in self._get_param_names()}

    def __sklearn_is_fitted__(self) -> bool:
        return self.predictor is not None

    def __sklearn_tags__(self):  # scikit-learn >= 1.6: inputs are strings, not a 2-D numeric array
        tags = super().__sklearn_tags__()
        tags.input_tags.two_d_array = False
        tags.input_tags.string = True
        return tags

    @classmethod
    def from_config(cls, config: str | os.PathLike | Config, overrides: Iterable[str] = (),
                    **params: Any) -> SentimentClassifier:
        """A classifier from a shipped config's name (`"quickstart"`) or a YAML path, with dotted overrides
        (`"classifier.epochs=2"`) and keyword hyper-parameters; the config is read and checked now.

        Raises:
            ConfigError: the config is missing or invalid (every problem listed).
        """
        if isinstance(config, (str, os.PathLike)) and Path(config).is_file():
            config = str(Path(config).resolve())  # absolute, so a fit from another folder reads the same file
        clf = cls(config, tuple(overrides), **params)
        clf._build_config()
        return clf

    def _build_config(self) -> Config:
        spec = self._config
        if isinstance(spec, Config):
            cfg = spec
        elif spec is None or isinstance(spec, (str, os.PathLike)):
            cfg = load_config(DEFAULT_CONFIG if spec is None else spec)
        else:
            raise TypeError(f"config: expected a shipped config's name (e.g. 'quickstart'), a YAML path or a Config; "
                            f"found {_describe(spec)}")
        if isinstance(self.overrides, str):
            raise TypeError(f"overrides: expected a list of 'section.key=value' strings, found one string "
                            f"{self.overrides!r}; wrap it: overrides=[{self.overrides!r}]")
        if self.overrides:
            cfg = cfg.replace(*self.overrides)
        return _with(cfg, self._keyword_settings(), "SentimentClassifier(" + ", ".join(
            f"{k}={v!r}" for k, v in self.get_params().items() if k not in ("config", "overrides", "run_dir", "verbose")
            and v is not None) + ")")

    def _keyword_settings(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for name, key in (("epochs", "classifier.epochs"), ("lr", "classifier.lr"), ("bs", "classifier.bs"),
                          ("max_len", "classifier.max_len"), ("seed", "run.seed"), ("seed", "data.seed")):
            if getattr(self, name) is not None:
                out[key] = getattr(self, name)
        p = self.pretrained
        if p is True:
            raise ConfigError("pretrained=True: name the LM to start from (a shipped LM's name, an LM folder, or "
                              "weights by path or URL), or pass pretrained=False to start from none")
        if p is False or p == "none":
            out["lm_pretrain.source"] = "none"
        elif p is not None:
            out["lm_pretrain.source"], out["lm_pretrain.weights"] = "pretrained", os.fspath(p)
        return out

    # ------------------------------------------------------------ training

    def fit(self, texts: Texts, labels: Sequence | pd.Series | np.ndarray | None = None, *,
            valid: pd.DataFrame | None = None, test: pd.DataFrame | None = None,
            unlabelled: Sequence[str] | None = None, run_dir: str | os.PathLike | None = None) -> SentimentClassifier:
        """Run the three stages (LM, LM fine-tuning, classifier) on labelled texts.

        Args:
            texts: a DataFrame with the text and label columns named in `config.data` (default `text` and
                `label`); or texts (a list, tuple, pandas Series, numpy array of strings, or a DataFrame's
                text column) with `labels`.
            labels: one label per text, when `texts` holds no label column; a list of labels per text trains a
                multi-label classifier; a DataFrame with a column per task (or a 2-D array, its columns named
                by `data.label_column`) a multi-task one; there a missing cell (NaN, None, "") means the text
                is not labelled for that task.
            valid: optional validation DataFrame; otherwise `data.valid_pct` of the training rows.
            test: optional test DataFrame, evaluated after training (`result.evaluate.metrics`).
            unlabelled: extra texts used only for LM fine-tuning.
            run_dir: where the stages write (overrides the `run_dir` parameter).

        Returns:
            self, trained.

        Raises:
            DataError: the texts or labels are missing, unpaired or invalid (the message says which).
            ConfigError: the config or a keyword hyper-parameter is invalid.
        """
        cfg = self._build_config()
        if isinstance(labels, pd.DataFrame) and len(labels.columns) > 1 and isinstance(cfg.data.label_column, str):
            # a column per task: the DataFrame names the tasks (multi-task)
            cfg = _with(cfg, {"data.label_column": [str(c) for c in labels.columns]}, "fit(labels=DataFrame)")
        train = _frame(texts, labels, cfg)
        extra = [] if unlabelled is None else _as_texts(unlabelled, cfg.data.text_column, "fit(unlabelled=...)")[0]
        data = load_data(cfg.data, Path(tempfile.gettempdir()), train=train, valid=valid, test=test, unlabelled=extra)
        where = Path(run_dir or self.run_dir or default_run_dir(cfg, data)).expanduser()
        cfg = _with(cfg, {"run.dir": str(where)}, "run_dir")
        with console() if self.verbose else nullcontext():
            result = run_pipeline(cfg, until="evaluate" if test is not None else "classifier", data=data)
        model_dir = _own_copy(Path(result.model_dir), where, cfg)
        self._hold(load_model(model_dir), model_dir, cfg)
        self.result, self.run_dir_ = result, where
        return self

    def _hold(self, predictor: Predictor | EnsemblePredictor, model_dir: Path, cfg: Config) -> None:
        self.predictor, self.model_dir_, self.config_ = predictor, model_dir, cfg
        spec = predictor.spec
        self.tasks_ = spec.task_names if spec.mode == MULTI_TASK else None
        self.classes_ = ([np.asarray(c) for _, c in spec.tasks] if spec.mode == MULTI_TASK
                         else np.asarray(predictor.labels))
        self._weights = weights_digest(model_dir)  # save checks the files still hold these weights

    # ------------------------------------------------------------ prediction

    def _need_model(self) -> Predictor | EnsemblePredictor:
        if self.predictor is None:
            raise NotFittedError("this SentimentClassifier is not fitted yet: call fit(texts, labels) first, or "
                                 "get a trained one with SentimentClassifier.load(path)")
        return self.predictor

    @property
    def classes(self) -> list:
        """The labels as a list, in the order of `predict_proba`'s columns (same as `classes_`; multi-task:
        `task:class` per output)."""
        return list(self._need_model().labels)

    def predict_proba(self, texts: Texts, bs: int | None = None, *, text_column: str | None = None
                      ) -> np.ndarray | list[np.ndarray]:
        """Class probabilities (columns in `classes_` order). Multi-label: each label's probability (they need
        not sum to 1); multi-task: a list with one such array per task (`tasks_` order).

        Args:
            texts: one string (-> one row, shape `(n_classes,)`), or a list, tuple, pandas Series, numpy array
                of strings, or DataFrame (its `text_column`) (-> one row per text, in input order).
            bs: at most this many texts per prediction batch (default: a token budget decides).
            text_column: the DataFrame column holding the texts (default: `config.data.text_column`).

        Raises:
            TypeError: `texts` is none of the above, or holds something other than strings.
        """
        model = self._need_model()
        items, one = _as_texts(texts, text_column or self.config.data.text_column, "predict_proba")
        proba = model.predict_proba(items, bs)
        if model.spec.mode == MULTI_TASK:
            return [proba[0, a:b] if one else proba[:, a:b] for a, b in model.spec.bounds()]
        return proba[0] if one else proba

    def predict(self, texts: Texts, bs: int | None = None, *, text_column: str | None = None) -> Any:
        """The predicted label: one label for one string, else a list of labels in input order.

        Multi-label: a list of labels per text (those at or above their tuned thresholds); multi-task: a
        DataFrame with a column per task (one string: a dict, task -> label). Takes the same inputs as
        `predict_proba`.
        """
        model = self._need_model()
        items, one = _as_texts(texts, text_column or self.config.data.text_column, "predict")
        labels = model.predict(items, bs)
        if isinstance(labels, pd.DataFrame):
            return labels.iloc[0].to_dict() if one else labels
        return labels[0] if one else labels

    def score(self, texts: Texts, labels: Sequence | pd.Series | np.ndarray, sample_weight: Any = None, *,
              text_column: str | None = None) -> float:
        """Accuracy of `predict(texts)` against `labels` (what scikit-learn's model selection maximizes).

        Multi-label and multi-task: the share of texts with every label (every task) right, as scikit-learn
        scores multi-label and multi-output classifiers; a task a text is not labelled for (a missing cell)
        is not held against it.
        """
        from sklearn.metrics import accuracy_score

        model = self._need_model()
        items, _ = _as_texts(texts, text_column or self.config.data.text_column, "score")
        pred = model.predict(items)
        if model.spec.mode == MULTI_LABEL:
            right = [set(p) == set(_label_set(y)) for p, y in zip(pred, _as_labels(labels))]
            return float(np.average(right, weights=sample_weight))
        if model.spec.mode == MULTI_TASK:
            truth = _task_frame(labels, list(pred.columns))
            right = (truth.to_numpy() == pred.to_numpy()) | truth.map(is_missing).to_numpy()
            return float(np.average(right.all(axis=1), weights=sample_weight))
        return float(accuracy_score(_as_labels(labels), pred, sample_weight=sample_weight))

    def predict_iter(self, texts: Iterable[str], chunk_size: int = 8192) -> Iterator[tuple[Any, np.ndarray]]:
        """Stream `(label, probabilities)` per text, in input order, for inputs of any length (any iterable)."""
        p = self._need_model()
        for proba in p.iter_proba(texts, chunk_size=chunk_size):
            yield from zip(decode_rows(p, proba), proba)  # multi-label: a list of labels; multi-task: a dict

    # ------------------------------------------------------------ files

    def save(self, path: str | os.PathLike, torchscript: bool = False) -> Path:
        """Write the model `predict` uses as a self-contained folder: weights (safetensors), vocab, tokenizer
        settings, labels and checksum as JSON, and the training config as `config.yaml`; no pickles
        (`export.export_model`). An ensemble is saved as one folder holding its members.

        Raises:
            CheckpointError: the model's files changed on disk since this classifier read them.
        """
        self._need_model()
        if weights_digest(self.model_dir_) != self._weights:
            raise CheckpointError(f"{self.model_dir_}: the model files changed since this classifier read them, so "
                                  "they are no longer the model it predicts with; load the folder again, or refit")
        return export_model(self.model_dir_, path, torchscript=torchscript, config=self.config_.to_dict())

    @classmethod
    def load(cls, path: str | os.PathLike, device=None, precision: Precision = "auto") -> SentimentClassifier:
        """Load a folder written by `save` (or a run's `classifier/model`, `ensemble`, or the run directory).

        The classifier gets the saved model's own config (`config.yaml`; for folders without one, the run's
        config or the defaults, with the model's sizes, head, labels and tokenizer language from `model.json`).

        Args:
            path: the folder.
            device: default CUDA when available, else CPU.
            precision: 'auto' (exact fp32 on CPU, mixed precision on GPU), 'fp32', 'bf16', 'fp16' or 'int8'
                (see `Predictor`).
        """
        folder = resolve_model_dir(path)
        cfg = saved_config(folder)
        obj = cls(cfg)
        obj._hold(load_model(folder, device, precision), folder, cfg)
        return obj


# ---------------------------------------------------------------- helpers


def default_run_dir(cfg: Config, data: LabelledData) -> Path:
    """`<cache>/runs/<key>`: one run directory per config and data, so identical fits share finished stages."""
    raw = cfg.to_dict()
    for name in _NOT_IN_RUN_KEY:
        raw["run"].pop(name, None)
    root = Path(cfg.run.cache_dir).expanduser() if cfg.run.cache_dir else default_cache_dir()
    return root / "runs" / stage_key("api-run", 1, raw, data.fingerprint())


def weights_digest(folder: str | os.PathLike) -> str:
    """SHA-256 over the weights of a model folder (each member of an ensemble); '' when there are none."""
    try:
        members = member_dirs(resolve_model_dir(folder))
    except CheckpointError:
        return ""
    h = hashlib.sha256()
    for name, path in sorted(members.items()):
        if not (path / WEIGHTS).is_file():
            return ""
        h.update(f"{name}:{sha256_file(path / WEIGHTS)};".encode())
    return h.hexdigest()


def _own_copy(src: Path, run_dir: Path, cfg: Config) -> Path:
    """The run's model copied to `run_dir/models/<digest of weights + config>`: a later fit in the same run
    directory replaces the stage's model folder, never this copy."""
    text = yaml.safe_dump(cfg.to_dict(), sort_keys=False)
    digest = hashlib.sha256((weights_digest(src) + text).encode()).hexdigest()[:16]
    dest = run_dir / "models" / digest
    if not ((dest / META).is_file() or (dest / ENSEMBLE_FILE).is_file()):
        export_model(src, dest, config=cfg.to_dict())
    return dest


def saved_config(folder: Path) -> Config:
    """The config a model folder was trained with, agreeing with its `model.json` on what the weights fix."""
    candidates = [folder / CONFIG]
    if folder.name == "model" and folder.parent.name.startswith("classifier"):  # RUN/classifier/model
        candidates.append(folder.parent.parent / CONFIG)
    elif folder.name == "ensemble":  # RUN/ensemble
        candidates.append(folder.parent / CONFIG)
    raw: dict[str, Any] = {}
    for c in candidates:
        if c.is_file():
            raw = yaml.safe_load(c.read_text(encoding="utf-8")) or {}
            break
    metas = {name: read_artifact(p)[0] for name, p in member_dirs(folder).items()}
    meta = next(iter(metas.values()))
    directions = [m.get("direction", "bwd" if m["model"].get("backwards") else "fwd") for m in metas.values()]
    raw.setdefault("model", {}).update({k: v for k, v in meta["model"].items() if k not in ("backwards", "directions")})
    if len(set(directions)) == len(directions) <= 2:  # fwd and/or bwd; other ensembles keep the saved setting
        raw["model"].update(directions=directions, backwards=directions == ["bwd"])
    raw.setdefault("classifier", {}).update({k: meta[k] for k in ("head", "max_len", "drop_mult") if k in meta})
    raw.setdefault("data", {})["lang"] = (meta.get("tokenizer") or {}).get("lang", meta.get("lang", "en"))
    spec = label_spec(meta, str(folder))
    if spec.mode == MULTI_TASK:  # the tasks are the weights' own; a config without them could not describe them
        raw["data"]["label_column"] = spec.task_names
    elif spec.mode == MULTI_LABEL and spec.sep is not None:
        raw["data"].update(label_sep=spec.sep)
    try:
        return from_dict(raw, source=str(folder))
    except ConfigError as e:
        raise CheckpointError(f"{folder}: its saved config is not valid for this ulmfit_lab ({e})") from None


def _with(cfg: Config, settings: dict[str, Any], source: str) -> Config:
    """`cfg` with dotted settings set to Python values (not parsed as YAML), checked like a file."""
    if not settings:
        return cfg
    raw = cfg.to_dict()
    for key, value in settings.items():
        section, name = key.split(".")
        raw[section][name] = value.item() if isinstance(value, np.generic) else value  # numpy from param grids
    return from_dict(raw, source=source)


def _describe(x: Any) -> str:
    if isinstance(x, np.ndarray):
        return f"a numpy array of {x.dtype} with shape {x.shape}"
    text = repr(x)
    return f"{type(x).__module__}.{type(x).__qualname__} ({text[:60]}{'...' if len(text) > 60 else ''})".replace(
        "builtins.", "")


def _as_texts(x: Any, text_column: str, what: str) -> tuple[list, bool]:
    """(the texts as a list in input order, whether `x` was one string)."""
    if isinstance(x, str):
        return [x], True
    if isinstance(x, pd.DataFrame):
        if text_column not in x.columns:
            raise ValueError(f"{what}: the DataFrame has no text column {text_column!r} (columns: "
                             f"{[str(c) for c in x.columns[:10]]}); pass text_column=NAME")
        return x[text_column].tolist(), False
    if isinstance(x, pd.Series):
        return x.tolist(), False  # by position: the index plays no part in the order
    if isinstance(x, np.ndarray):
        if x.ndim == 2 and x.shape[1] == 1:
            x = x[:, 0]
        if x.ndim != 1 or x.dtype.kind not in "UO":
            raise TypeError(f"{what}: expected texts, found {_describe(x)}; pass a 1-D array of strings")
        return x.tolist(), False
    if isinstance(x, (list, tuple)):
        return list(x), False
    hint = "; for a stream of texts of any length use predict_iter" if isinstance(x, Iterator) else ""
    raise TypeError(f"{what}: expected a string, a list or tuple of strings, a pandas Series, a numpy array of "
                    f"strings or a DataFrame (text_column=); found {_describe(x)}{hint}")


def _as_labels(y: Any) -> list:
    if isinstance(y, str) or not isinstance(y, (list, tuple, pd.Series, np.ndarray)):
        raise TypeError(f"labels: expected a list, tuple, pandas Series or numpy array with one label per text; "
                        f"found {_describe(y)}")
    if isinstance(y, np.ndarray) and y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    if isinstance(y, np.ndarray) and y.ndim != 1:
        raise TypeError(f"labels: expected one label per text (1-D), found {_describe(y)}")
    # a Series by position, with pandas' dtype inference: Python scalars out (numpy ints would break model.json)
    series = y.reset_index(drop=True) if isinstance(y, pd.Series) else pd.Series(list(y) if isinstance(y, tuple) else y)
    return series.infer_objects().tolist()


def _frame(texts: Any, labels: Any, cfg: Config) -> pd.DataFrame:
    tc, lcs = cfg.data.text_column or TEXT, [c or LABEL for c in label_columns(cfg.data)]
    if isinstance(texts, pd.DataFrame):
        if labels is None:
            return texts
        if any(lc in texts.columns for lc in lcs):
            raise DataError(f"fit: the DataFrame has a label column {[c for c in lcs if c in texts.columns][0]!r} "
                            "and labels were passed too; pass either a DataFrame with its labels, or texts and labels")
    if isinstance(texts, str):
        raise TypeError("fit: expected many texts (a list, Series, array or DataFrame), found one string")
    if labels is None:
        raise DataError("fit(texts, labels): labels are missing; pass a list of labels, one per text")
    xs = _as_texts(texts, tc, "fit")[0]
    if isinstance(labels, pd.DataFrame) and len(labels.columns) == 1 and len(lcs) == 1:
        labels = labels.iloc[:, 0]
    if len(lcs) > 1:
        ys = _task_frame(labels, lcs)  # multi-task: a column per task
        if len(xs) != len(ys):
            raise DataError(f"fit: {len(xs)} texts but {len(ys)} label rows; they must pair up one to one")
        return pd.DataFrame({tc: xs, **{c: ys[c].tolist() for c in ys.columns}})
    ys = _as_labels(labels)
    if len(xs) != len(ys):
        raise DataError(f"fit: {len(xs)} texts but {len(ys)} labels; they must pair up one to one")
    return pd.DataFrame({tc: xs, lcs[0]: ys})


def _label_set(y: Any) -> list:
    """One text's labels (multi-label), from a list, tuple, set or array of them."""
    if isinstance(y, (list, tuple, set, frozenset, np.ndarray)):
        return list(y)
    raise TypeError(f"labels: a multi-label classifier expects a list of labels per text, found {_describe(y)}")


def _task_frame(labels: Any, tasks: list[str]) -> pd.DataFrame:
    """Multi-task labels as a DataFrame with a column per task: a DataFrame with those columns, or a 2-D
    array (or list of rows) in the order of `tasks`."""
    if isinstance(labels, pd.DataFrame):
        missing = [t for t in tasks if t not in labels.columns]
        if missing:
            raise DataError(f"labels: no column(s) {missing} for the task(s) in data.label_column {tasks}; columns "
                            f"found: {[str(c) for c in labels.columns]}. Name the columns after the tasks")
        return labels[tasks].reset_index(drop=True)
    arr = np.asarray(labels, dtype=object)
    if arr.ndim != 2 or arr.shape[1] != len(tasks):
        raise DataError(f"labels: expected a DataFrame with a column per task, or rows of one label per task in "
                        f"the order of data.label_column {tasks}; found {_describe(labels)}. Set "
                        "data.label_column=[task1, task2] to name the tasks")
    return pd.DataFrame(arr, columns=tasks)
