"""YAML -> typed, frozen configs with dotted overrides.

One section per stage. Every problem in a file (unknown keys, wrong types, bad values) is collected and
reported in one `ConfigError`, each line with a hint, so a user fixes a config in one pass.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Union

import yaml


class ConfigError(ValueError):
    """A config file or override is invalid; the message lists every problem found."""


NOT_IN_KEY = {"key": False}  # field metadata: a setting that does not change a stage's result
# a setting added after runs existed: at its default it stays out of stage keys, so their cached stages still count
IN_KEY_UNLESS_DEFAULT = {"key": "unless_default"}


def key_dict(section: Any) -> dict[str, Any]:
    """A config section as a dict for stage keys, without the settings marked `NOT_IN_KEY` (and those marked
    `IN_KEY_UNLESS_DEFAULT` while they are at their default)."""
    out = {}
    for f in dataclasses.fields(section):
        mode, value = f.metadata.get("key", True), getattr(section, f.name)
        if mode is False or (mode == "unless_default" and value == f.default):
            continue
        out[f.name] = value
    return out


@dataclass(frozen=True)
class DataConfig:
    """Where the labelled and unlabelled texts come from and how they are split and tokenized.

    `path` may be a table file (CSV/TSV/JSONL/parquet), a folder with one sub-folder per class, an
    aclImdb-style folder (`train/`, `test/`, class sub-folders, `unsup/`) or its `.tar.gz`/`.tar.xz`,
    or `hf:NAME` for a Hugging Face dataset (needs the network unless it is cached).
    """

    path: str | None = None
    train: str | None = None
    valid: str | None = None
    test: str | None = None
    unlabelled: list[str] = field(default_factory=list)
    unlabelled_folders: list[str] = field(default_factory=lambda: ["unsup"])
    text_column: str = "text"
    # several columns: one classifier head per task on a shared encoder (multi-task), e.g. [sentiment, topic]
    label_column: str | list[str] = "label"
    # multi-label: the separator of a text's labels in a label cell, e.g. "|" (a column of lists needs none)
    label_sep: str | None = None
    valid_pct: float = 0.1
    test_pct: float = 0.0
    max_train: int | None = None
    max_test: int | None = None
    max_unlabelled: int | None = None
    drop_invalid: bool = False
    lang: str = "en"
    min_freq: int = 3
    max_vocab: int = 60000
    seed: int = 42


@dataclass(frozen=True)
class ModelConfig:
    """AWD-LSTM sizes, shared by every stage (the encoder moves from stage to stage)."""

    emb_sz: int = 400
    n_hid: int = 1152
    n_layers: int = 3
    bptt: int = 70
    backwards: bool = False  # this model reads right to left (set per direction from `directions`)
    # train one model per direction and ensemble them (the paper's fwd + bwd): ["fwd"], ["bwd"] or both
    directions: list[str] = field(default_factory=lambda: ["fwd"], metadata=NOT_IN_KEY)


@dataclass(frozen=True)
class TrainConfig:
    """What every training stage shares: schedule, optimizer and regularisation."""

    epochs: int = 1
    lr: float = 4e-3
    bs: int = 64
    drop_mult: float = 1.0
    wd: float = 0.01
    betas: tuple[float, float] = (0.7, 0.99)
    clip: float | None = 0.4
    cut_frac: float = 0.1
    ratio: float = 32.0
    lr_decay: float = 2.6
    alpha: float = 2.0
    beta: float = 1.0
    # LR schedule of each phase: the paper's STLR, fastai's cosine one-cycle, or constant (for ablations)
    schedule: Literal["stlr", "one_cycle", "constant"] = field(default="stlr", metadata=IN_KEY_UNLESS_DEFAULT)


@dataclass(frozen=True)
class LMPretrainConfig(TrainConfig):
    """Stage 1. `source`: none (fine-tune from random init), scratch (pretrain on `corpus`) or
    pretrained (load `weights`: a shipped LM's name such as `reviews-fwd`, this package's LM folder, or
    fastai's WT103 `.pth` + `vocab`; by path or URL, `sha256` pinning a download).

    `weights: wt103-fwd` / `wt103-bwd` (or `wt103`: each direction's own) is the paper's LM, fastai's
    published WikiText-103 AWD-LSTM (`URLs.WT103_FWD`/`_BWD`; needs the default `model` sizes 400/1152/3):
    downloaded once by fastai's `untar_data` into fastai's cache (`~/.fastai/models/`, `$FASTAI_HOME`), vocab
    included; `$ULMFIT_LAB_WT103_BASE_URL` names a mirror. Offline, give the unpacked folder's path instead.

    Pretraining holds out `valid_pct` of each corpus source and reports the perplexity on each, and on
    every `eval_corpus` (e.g. WikiText's validation split). `init`: an LM folder to continue from.
    """

    source: Literal["none", "scratch", "pretrained"] = "none"
    corpus: list[str] = field(default_factory=list)
    eval_corpus: list[str] = field(default_factory=list)
    init: str | None = None
    text_column: str = "text"
    weights: str | None = None
    vocab: str | None = None
    sha256: str | None = field(default=None, metadata=NOT_IN_KEY)  # checks a download; changes no result
    max_docs: int | None = None
    valid_pct: float = 0.05
    epochs: int = 1
    lr: float = 4e-3
    # sampled softmax in training: draws of candidate words per step (0: the full softmax). About 1-4k for a
    # 20k vocab: ~2x faster on a CPU; the LM is still a full-softmax LM (fused.SampledLMLoss)
    softmax_samples: int = field(default=0, metadata=IN_KEY_UNLESS_DEFAULT)


@dataclass(frozen=True)
class LMFinetuneConfig(TrainConfig):
    """Stage 2: LM fine-tuning on target text with discriminative LRs and STLR."""

    enabled: bool = True
    epochs: int = 1
    lr: float = 4e-3
    drop_mult: float = 0.3


@dataclass(frozen=True)
class ClassifierConfig(TrainConfig):
    """Stage 3: concat-pooling head, gradual unfreezing, discriminative LRs, STLR, BPT3C."""

    epochs: int = 4
    lr: float = 1e-2
    drop_mult: float = 0.5
    head: list[int] = field(default_factory=lambda: [50])
    gradual_unfreezing: bool = True
    max_len: int = 1400
    # train at most the top N layer groups (1: the head alone on a frozen encoder); None: all of them
    trainable_groups: int | None = field(default=None, metadata=IN_KEY_UNLESS_DEFAULT)
    # multi-task: each task's loss weight (a task not named: 1.0); the loss is the weighted sum
    task_weights: dict[str, float] | None = field(default=None, metadata=IN_KEY_UNLESS_DEFAULT)
    # progressive sequence length: max_len per block of epochs, e.g. [100, 300, 700] (then predict with max_len)
    max_len_schedule: list[int] | None = field(default=None, metadata=IN_KEY_UNLESS_DEFAULT)


@dataclass(frozen=True)
class RunConfig:
    """Where a run writes, and on what it runs."""

    dir: str = "runs/default"
    seed: int = 42
    device: Literal["auto", "cpu", "cuda"] = "auto"
    precision: Literal["auto", "fp32", "bf16", "fp16"] = "auto"
    num_workers: int = 0
    cache_dir: str | None = None
    progress: bool = True
    fused_softmax: bool = True  # LM training on CPU: chunked decoder + softmax (fused.py), same maths, faster
    checkpoint_minutes: float | None = 10.0  # also checkpoint inside an epoch this often (None: epoch ends only)
    stop_after_minutes: float | None = None  # pause (checkpoint, exit) after this long; rerun to go on


@dataclass(frozen=True)
class Config:
    """A whole ULMFiT run."""

    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    lm_pretrain: LMPretrainConfig = field(default_factory=LMPretrainConfig)
    lm_finetune: LMFinetuneConfig = field(default_factory=LMFinetuneConfig)
    classifier: ClassifierConfig = field(default_factory=ClassifierConfig)
    run: RunConfig = field(default_factory=RunConfig)

    def to_dict(self) -> dict[str, Any]:
        return _plain(dataclasses.asdict(self))

    def for_direction(self, direction: str) -> Config:
        """This config for one direction's models: `model.backwards` set, `directions` just that one."""
        m = dataclasses.replace(self.model, backwards=direction == "bwd", directions=[direction])
        return dataclasses.replace(self, model=m)

    def replace(self, *overrides: str, **sections: Any) -> Config:
        """A copy with dotted overrides applied (`"classifier.epochs=2"`), checked like a file."""
        raw = self.to_dict()
        for name, value in sections.items():
            raw[name] = value
        return from_dict(apply_overrides(raw, overrides))


def _plain(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {k: _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    return obj


def apply_overrides(raw: dict[str, Any], overrides: typing.Iterable[str]) -> dict[str, Any]:
    """Apply `a.b=value` strings to a nested dict; values are parsed as YAML (`2`, `1e-3`, `[1,2]`)."""
    raw = _plain(raw)
    for item in overrides:
        if "=" not in item:
            raise ConfigError(
                f"override {item!r}: expected KEY=VALUE with a dotted key, e.g. classifier.epochs=2"
            )
        key, _, text = item.partition("=")
        parts = key.strip().split(".")
        node = raw
        for part in parts[:-1]:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise ConfigError(f"override {item!r}: {part!r} is a value, not a section")
            node = child
        try:
            # `|` and `>` alone start a YAML block scalar (an empty string): one line means the character itself
            value = text.strip()
            node[parts[-1]] = value if value in ("|", ">") else yaml.safe_load(text) if value else None
        except yaml.YAMLError as e:
            first = str(e).splitlines()[0]
            raise ConfigError(f"override {item!r}: the value is not valid YAML ({first}); quote it or fix "
                              "the brackets, e.g. classifier.head=[50] or data.path='a b.csv'") from None
    return raw


# the configs shipped inside the package (package data), so a wheel installed anywhere finds them by name
SHIPPED_DIR = Path(__file__).resolve().parent / "configs"


def shipped_configs() -> dict[str, Path]:
    """The configs shipped with the package, by name (`quickstart`, `tiny`, `imdb`, ...)."""
    return {p.stem: p for p in sorted(SHIPPED_DIR.glob("*.yaml"))}


def config_path(spec: str | Path) -> Path:
    """The YAML file that `spec` names: an existing file, or the name of a shipped config (`"quickstart"`).

    Raises:
        ConfigError: no such file and no shipped config of that name (the shipped names are listed).
    """
    path = Path(spec)
    if path.is_file():
        return path
    shipped = shipped_configs()
    names = ", ".join(shipped) or "none"
    if isinstance(spec, str) and path.name == spec and path.suffix not in (".yaml", ".yml"):
        if spec in shipped:
            return shipped[spec]
        close = difflib.get_close_matches(spec, shipped, n=1)
        hint = f"did you mean {close[0]!r}? " if close else ""
        raise ConfigError(f"no shipped config named {spec!r}: {hint}expected a shipped config name ({names}) "
                          "or the path of a YAML file")
    hint = (f"; the shipped config {path.stem!r} is there by name: load_config({path.stem!r})"
            if path.stem in shipped else "")
    raise ConfigError(f"config file not found: {path} (expected a YAML file, or a shipped config name: "
                      f"{names}){hint}")


def load_config(path: str | Path | None = None, overrides: typing.Iterable[str] = ()) -> Config:
    """Load a YAML config and apply dotted overrides.

    Args:
        path: a YAML file, or the name of a config shipped with the package (`"quickstart"`, `"tiny"`,
            `"imdb"`; see `shipped_configs()`); None starts from the defaults.
        overrides: strings like `"classifier.epochs=2"` or `"data.path=aclImdb.tar.xz"`.

    Returns:
        The validated, frozen `Config`.

    Raises:
        ConfigError: listing every unknown key, wrong type and bad value at once.
    """
    raw: dict[str, Any] = {}
    if path is not None:
        path = config_path(path)
        try:
            raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        except yaml.YAMLError as e:
            raise ConfigError(f"{path}: not valid YAML: {e}") from None
        except UnicodeDecodeError as e:
            raise ConfigError(f"{path}: not UTF-8 text (byte {e.object[e.start]:#04x} at offset {e.start}); "
                              "save the config as UTF-8") from None
        if not isinstance(raw, dict):
            raise ConfigError(f"{path}: expected a mapping of sections, found {type(raw).__name__}")
    return from_dict(apply_overrides(raw, overrides), source=str(path) if path else "config")


def from_dict(raw: dict[str, Any], source: str = "config") -> Config:
    errors: list[str] = []
    cfg = _build(Config, raw, "", errors)
    if not errors:
        errors.extend(_check_values(cfg))
    if errors:
        lines = "\n".join(f"  - {e}" for e in errors)
        raise ConfigError(f"{source}: {len(errors)} problem(s):\n{lines}")
    if cfg.model.backwards and cfg.model.directions == ["fwd"]:  # `model.backwards=true` alone: one bwd model
        cfg = cfg.for_direction("bwd")
    return cfg


def _build(cls: type, raw: Any, prefix: str, errors: list[str]) -> Any:
    if not isinstance(raw, dict):
        errors.append(f"{prefix.rstrip('.') or 'top level'}: expected a mapping, found {raw!r}")
        return None
    fields = {f.name: f for f in dataclasses.fields(cls)}
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for key, value in raw.items():
        if key not in fields:
            close = difflib.get_close_matches(str(key), fields, n=1)
            hint = f"did you mean {close[0]!r}?" if close else f"valid keys: {', '.join(fields)}"
            errors.append(f"{prefix}{key}: unknown key ({hint})")
            continue
        hint_t = hints[key]
        if dataclasses.is_dataclass(hint_t):
            kwargs[key] = _build(hint_t, value, f"{prefix}{key}.", errors)
        else:
            ok, converted = _coerce(value, hint_t)
            if ok:
                kwargs[key] = converted
            else:
                errors.append(f"{prefix}{key}: expected {_type_name(hint_t)}, found {value!r}")
    if any(v is None and dataclasses.is_dataclass(hints[k]) for k, v in kwargs.items()):
        return None
    return cls(**kwargs)


def _coerce(value: Any, tp: Any) -> tuple[bool, Any]:
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (Union, types.UnionType):
        for arg in args:
            ok, v = _coerce(value, arg)
            if ok:
                return True, v
        return False, None
    if tp is type(None):
        return value is None, None
    if origin is Literal:
        return value in args, value
    if origin is list:
        if not isinstance(value, (list, tuple)):
            return False, None
        out = [_coerce(v, args[0]) for v in value]
        return all(ok for ok, _ in out), [v for _, v in out]
    if origin is dict:
        if not isinstance(value, dict):
            return False, None
        out = [(_coerce(k, args[0]), _coerce(v, args[1])) for k, v in value.items()]
        return all(ok_k and ok_v for (ok_k, _), (ok_v, _) in out), {k: v for (_, k), (_, v) in out}
    if origin is tuple:
        if not isinstance(value, (list, tuple)) or len(value) != len(args):
            return False, None
        out = [_coerce(v, a) for v, a in zip(value, args)]
        return all(ok for ok, _ in out), tuple(v for _, v in out)
    if tp is bool:
        return isinstance(value, bool), value
    if tp is int:
        return isinstance(value, int) and not isinstance(value, bool), value
    if tp is float:
        if isinstance(value, str):  # YAML 1.1 reads `1e-3` (no dot) as a string
            try:
                return True, float(value)
            except ValueError:
                return False, None
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            return False, None
        try:
            return True, float(value)
        except OverflowError:  # an integer beyond float range
            return False, None
    if tp is str:
        return isinstance(value, str), value
    return False, None


def _type_name(tp: Any) -> str:
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (Union, types.UnionType):
        return " or ".join(_type_name(a) for a in args)
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in args)
    if origin is list:
        return f"a list of {_type_name(args[0])}"
    if origin is dict:
        return f"a mapping of {_type_name(args[0])} to {_type_name(args[1])}"
    if origin is tuple:
        return f"a list of {len(args)} ({', '.join(_type_name(a) for a in args)})"
    return "null" if tp is type(None) else getattr(tp, "__name__", str(tp))


def _non_finite(obj: Any, prefix: str = "") -> list[str]:
    """Dotted names of float settings that are NaN or infinite (YAML `.nan`, `inf`): no schedule survives them."""
    out = []
    for f in dataclasses.fields(obj):
        v = getattr(obj, f.name)
        if dataclasses.is_dataclass(v):
            out += _non_finite(v, f"{prefix}{f.name}.")
        elif isinstance(v, float) and not math.isfinite(v):
            out.append(f"{prefix}{f.name}: must be a finite number, found {v!r}")
        elif isinstance(v, tuple) and any(isinstance(x, float) and not math.isfinite(x) for x in v):
            out.append(f"{prefix}{f.name}: must be finite numbers, found {list(v)!r}")
    return out


def _check_values(cfg: Config) -> list[str]:
    errs = _non_finite(cfg)
    if errs:  # the range checks below would only repeat these
        return errs

    def positive(name: str, value: float | int | None, allow_none: bool = False) -> None:
        if value is None and allow_none:
            return
        if value is None or value <= 0:
            errs.append(f"{name}: must be > 0, found {value!r}")

    def fraction(name: str, value: float) -> None:
        if not (0.0 <= value < 1.0):
            errs.append(f"{name}: must be in [0, 1), found {value!r}")

    for section in ("lm_pretrain", "lm_finetune", "classifier"):
        t: TrainConfig = getattr(cfg, section)
        for name in ("epochs", "lr", "bs", "lr_decay"):
            positive(f"{section}.{name}", getattr(t, name))
        positive(f"{section}.clip", t.clip, allow_none=True)
        if not (0.0 < t.cut_frac < 1.0):
            errs.append(f"{section}.cut_frac: must be in (0, 1), found {t.cut_frac!r}")
        if t.ratio < 1:
            errs.append(f"{section}.ratio: must be >= 1, found {t.ratio!r}")
        if t.drop_mult <= 0:  # fastai's WeightDropout breaks at p=0 (dropout returns the Parameter itself)
            errs.append(f"{section}.drop_mult: must be > 0 (use e.g. 0.01 for almost no dropout), "
                        f"found {t.drop_mult!r}")
        for name in ("wd", "alpha", "beta"):
            if getattr(t, name) < 0:
                errs.append(f"{section}.{name}: must be >= 0, found {getattr(t, name)!r}")
    for name in ("emb_sz", "n_hid", "n_layers", "bptt"):
        positive(f"model.{name}", getattr(cfg.model, name))
    dirs = cfg.model.directions
    if not dirs or len(set(dirs)) != len(dirs) or not set(dirs) <= {"fwd", "bwd"}:
        errs.append(f"model.directions: expected [fwd], [bwd] or [fwd, bwd], found {dirs!r}")
    for name in ("max_train", "max_test"):
        positive(f"data.{name}", getattr(cfg.data, name), allow_none=True)
    if cfg.data.max_unlabelled is not None and cfg.data.max_unlabelled < 0:
        errs.append(f"data.max_unlabelled: must be >= 0 (0: no unlabelled texts), found {cfg.data.max_unlabelled}")
    positive("data.min_freq", cfg.data.min_freq)
    positive("data.max_vocab", cfg.data.max_vocab)
    for name in ("valid_pct", "test_pct"):
        fraction(f"data.{name}", getattr(cfg.data, name))
    if cfg.data.valid_pct + cfg.data.test_pct >= 1:
        errs.append("data.valid_pct + data.test_pct: must leave training data (sum < 1)")
    fraction("lm_pretrain.valid_pct", cfg.lm_pretrain.valid_pct)
    if cfg.lm_pretrain.softmax_samples < 0:
        errs.append(f"lm_pretrain.softmax_samples: must be >= 0 (0: full softmax; e.g. 2048), "
                    f"found {cfg.lm_pretrain.softmax_samples}")
    positive("run.checkpoint_minutes", cfg.run.checkpoint_minutes, allow_none=True)
    positive("run.stop_after_minutes", cfg.run.stop_after_minutes, allow_none=True)
    if cfg.run.num_workers < 0:
        errs.append(f"run.num_workers: must be >= 0 (0: as many as CPU cores), found {cfg.run.num_workers}")
    positive("classifier.max_len", cfg.classifier.max_len)
    positive("classifier.trainable_groups", cfg.classifier.trainable_groups, allow_none=True)
    if cfg.classifier.head and min(cfg.classifier.head) <= 0:
        errs.append(f"classifier.head: layer sizes must be > 0, found {cfg.classifier.head!r}")
    errs += _check_labels(cfg.data) + _check_task_weights(cfg) + _check_max_len_schedule(cfg.classifier)
    lp = cfg.lm_pretrain
    if lp.source == "scratch" and not lp.corpus:
        errs.append("lm_pretrain.corpus: source is 'scratch' but no corpus is given (list of paths)")
    if lp.source == "pretrained" and not lp.weights:
        errs.append(
            "lm_pretrain.weights: source is 'pretrained' but no weights are given "
            "(a .pth/.safetensors path, a URL, or an LM directory)"
        )
    return errs


def _check_labels(d: DataConfig) -> list[str]:
    """Label columns: at least one, no repeats; a separator for one (multi-label) column only."""
    cols = [d.label_column] if isinstance(d.label_column, str) else d.label_column
    if not cols or len(set(cols)) != len(cols) or d.text_column in cols:
        return [f"data.label_column: expected one column name or a list of distinct ones (one per task), none of "
                f"them data.text_column; found {d.label_column!r}"]
    if d.label_sep is not None and len(cols) > 1:
        return [f"data.label_sep: multi-label reads one label column, found {len(cols)} ({cols}); drop label_sep "
                "(multi-task), or give one label_column"]
    if d.label_sep == "":
        return ["data.label_sep: must not be empty; use e.g. '|' (or null for one label per text)"]
    return []


def _check_task_weights(cfg: Config) -> list[str]:
    """`classifier.task_weights` name tasks of a multi-task config, with weights >= 0, not all 0."""
    w, cols = cfg.classifier.task_weights, cfg.data.label_column
    if w is None:
        return []
    tasks = [] if isinstance(cols, str) else cols
    if len(tasks) < 2:
        return [f"classifier.task_weights: set for a single label column ({cols!r}); weights are for several "
                "tasks (data.label_column=[a, b]): drop them"]
    unknown = sorted(set(w) - set(tasks))
    if unknown:
        return [f"classifier.task_weights: unknown task(s) {unknown}; the tasks are data.label_column {tasks}"]
    if any(v < 0 for v in w.values()) or not any(w.get(t, 1.0) > 0 for t in tasks):
        return [f"classifier.task_weights: weights must be >= 0 and not all 0, found {w!r}"]
    return []


def _check_max_len_schedule(c: ClassifierConfig) -> list[str]:
    """`classifier.max_len_schedule`: positive lengths, at most one per epoch."""
    s = c.max_len_schedule
    if s is None:
        return []
    if not s or min(s) <= 0 or len(s) > c.epochs:
        return [f"classifier.max_len_schedule: expected 1 to classifier.epochs ({c.epochs}) lengths > 0, e.g. "
                f"[100, 300, 700]; found {s!r}"]
    return []
