"""YAML -> typed, frozen configs with dotted overrides.

One section per stage. Every problem in a file (unknown keys, wrong types, bad values) is collected and
reported in one `ConfigError`, each line with a hint, so a user fixes a config in one pass. The sections are
plain frozen dataclasses; pydantic (v2) checks types and unknown keys, and this module words its findings.
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal, Union

import yaml
from pydantic import BeforeValidator, ConfigDict, Strict, TypeAdapter, ValidationError, with_config


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


def _float(value: Any) -> Any:
    """A float setting also takes an int, and text that `float()` reads: YAML 1.1 (PyYAML) reads `1e-3` (no dot)
    as a string. Anything else goes on unchanged, for pydantic to refuse."""
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return value
    if isinstance(value, int) and not isinstance(value, bool):
        try:
            return float(value)
        except OverflowError:  # an integer beyond float range
            return value
    return value


# The value types of settings: annotate every new setting with these, not with `int`, `float`, `bool`, `str`
# (tests/test_config.py checks). Why: pydantic's lax mode would quietly read "2", 2.0 or true as 2 and 1 or "yes"
# as True, hiding typos; and a stdlib dataclass cannot be strict as a whole (pydantic then refuses dicts).
Int = Annotated[int, Strict()]
Bool = Annotated[bool, Strict()]
Str = Annotated[str, Strict()]
Float = Annotated[float, BeforeValidator(_float), Strict()]
# unknown keys are errors; NaN and infinities too (YAML `.nan`, `.inf`): no schedule survives them. A section
# given as its dataclass is checked too.
_SCHEMA = ConfigDict(extra="forbid", allow_inf_nan=False, revalidate_instances="always")


@with_config(_SCHEMA)
@dataclass(frozen=True)
class DataConfig:
    """Where the labelled and unlabelled texts come from and how they are split and tokenized.

    `path` may be a table file (CSV/TSV/JSONL/parquet), a folder with one sub-folder per class, an
    aclImdb-style folder (`train/`, `test/`, class sub-folders, `unsup/`) or its `.tar.gz`/`.tar.xz`,
    or `hf:NAME` for a Hugging Face dataset (needs the network unless it is cached).
    """

    path: Str | None = None
    train: Str | None = None
    valid: Str | None = None
    test: Str | None = None
    unlabelled: list[Str] = field(default_factory=list)
    unlabelled_folders: list[Str] = field(default_factory=lambda: ["unsup"])
    text_column: Str = "text"
    # several columns: one classifier head per task on a shared encoder (multi-task), e.g. [sentiment, topic]
    label_column: Str | list[Str] = "label"
    # multi-label: the separator of a text's labels in a label cell, e.g. "|" (a column of lists needs none)
    label_sep: Str | None = None
    valid_pct: Float = 0.1
    test_pct: Float = 0.0
    max_train: Int | None = None
    max_test: Int | None = None
    max_unlabelled: Int | None = None
    drop_invalid: Bool = False
    lang: Str = "en"
    min_freq: Int = 3
    max_vocab: Int = 60000
    # with a pretrained LM (lm_pretrain.source=pretrained): after the words of the texts, the LM's words they lack
    # (up to max_vocab in all), so a word the labels rarely show keeps its pretrained embedding instead of xxunk.
    # Off by default: on the quickstart it scored lower on held-out reviews (benchmarks/README.md, "Vocabulary")
    lm_vocab: Bool = False
    seed: Int = 42


def label_columns(d: DataConfig) -> list[str]:
    """The configured label column(s), as a list (several: multi-task)."""
    lc = d.label_column
    return [lc] if isinstance(lc, str) else list(lc)


@with_config(_SCHEMA)
@dataclass(frozen=True)
class ModelConfig:
    """AWD-LSTM sizes, shared by every stage (the encoder moves from stage to stage)."""

    emb_sz: Int = 400
    n_hid: Int = 1152
    n_layers: Int = 3
    bptt: Int = 70
    backwards: Bool = False  # this model reads right to left (set per direction from `directions`)
    # train one model per direction and ensemble them (the paper's fwd + bwd): ["fwd"], ["bwd"] or both
    directions: list[Str] = field(default_factory=lambda: ["fwd"], metadata=NOT_IN_KEY)


@with_config(_SCHEMA)
@dataclass(frozen=True)
class TrainConfig:
    """What every training stage shares: schedule, optimizer and regularisation."""

    epochs: Int = 1
    lr: Float = 4e-3
    bs: Int = 64
    drop_mult: Float = 1.0
    wd: Float = 0.01
    betas: tuple[Float, Float] = (0.7, 0.99)
    clip: Float | None = 0.4
    cut_frac: Float = 0.1
    ratio: Float = 32.0
    lr_decay: Float = 2.6
    alpha: Float = 2.0
    beta: Float = 1.0
    # LR schedule of each phase: the paper's STLR, fastai's cosine one-cycle, or constant (for ablations)
    schedule: Literal["stlr", "one_cycle", "constant"] = field(default="stlr", metadata=IN_KEY_UNLESS_DEFAULT)


@with_config(_SCHEMA)
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
    corpus: list[Str] = field(default_factory=list)
    eval_corpus: list[Str] = field(default_factory=list)
    init: Str | None = None
    text_column: Str = "text"
    weights: Str | None = None
    vocab: Str | None = None
    sha256: Str | None = field(default=None, metadata=NOT_IN_KEY)  # checks a download; changes no result
    max_docs: Int | None = None
    valid_pct: Float = 0.05
    epochs: Int = 1
    lr: Float = 4e-3
    # sampled softmax in training: draws of candidate words per step (0: the full softmax). About 1-4k for a
    # 20k vocab: ~2x faster on a CPU; the LM is still a full-softmax LM (fused.SampledLMLoss)
    softmax_samples: Int = field(default=0, metadata=IN_KEY_UNLESS_DEFAULT)


@with_config(_SCHEMA)
@dataclass(frozen=True)
class LMFinetuneConfig(TrainConfig):
    """Stage 2: LM fine-tuning on target text with discriminative LRs and STLR."""

    enabled: Bool = True
    epochs: Int = 1
    lr: Float = 4e-3
    drop_mult: Float = 0.3


@with_config(_SCHEMA)
@dataclass(frozen=True)
class ClassifierConfig(TrainConfig):
    """Stage 3: concat-pooling head, gradual unfreezing, discriminative LRs, STLR, BPT3C."""

    epochs: Int = 4
    lr: Float = 1e-2
    drop_mult: Float = 0.5
    head: list[Int] = field(default_factory=lambda: [50])
    gradual_unfreezing: Bool = True
    max_len: Int = 1400
    # train at most the top N layer groups (1: the head alone on a frozen encoder); None: all of them
    trainable_groups: Int | None = field(default=None, metadata=IN_KEY_UNLESS_DEFAULT)
    # single-label: the class shares to train for, e.g. {pos: 0.62, neg: 0.38}; each class's loss is weighted
    # prior / its share of the training texts. For labels not drawn at random (`ulmfit-lab suggest` picks texts
    # near the decision boundary, nearer balance than the data): a classifier learns its training shares as its
    # prior. None: the training texts' own shares
    class_prior: dict[Str, Float] | None = field(default=None, metadata=IN_KEY_UNLESS_DEFAULT)
    # single-label: the target puts 1 - label_smoothing on the label and spreads the rest over all classes
    # (Szegedy et al. 2016), so the classifier cannot drive a few hundred texts, some ambiguous or mislabelled,
    # to certainty. 0: plain cross-entropy
    label_smoothing: Float = field(default=0.0, metadata=IN_KEY_UNLESS_DEFAULT)
    # multi-task: each task's loss weight (a task not named: 1.0); the loss is the weighted sum
    task_weights: dict[Str, Float] | None = field(default=None, metadata=IN_KEY_UNLESS_DEFAULT)
    # progressive sequence length: max_len per block of epochs, e.g. [100, 300, 700] (then predict with max_len)
    max_len_schedule: list[Int] | None = field(default=None, metadata=IN_KEY_UNLESS_DEFAULT)


@with_config(_SCHEMA)
@dataclass(frozen=True)
class RunConfig:
    """Where a run writes, and on what it runs."""

    dir: Str = "runs/default"
    seed: Int = 42
    device: Literal["auto", "cpu", "cuda"] = "auto"
    precision: Literal["auto", "fp32", "bf16", "fp16"] = "auto"
    num_workers: Int = 0
    cache_dir: Str | None = None
    progress: Bool = True
    fused_softmax: Bool = True  # LM training on CPU: chunked decoder + softmax (fused.py), same maths, faster
    checkpoint_minutes: Float | None = 10.0  # also checkpoint inside an epoch this often (None: epoch ends only)
    stop_after_minutes: Float | None = None  # pause (checkpoint, exit) after this long; rerun to go on


@with_config(_SCHEMA)
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
    """The `Config` that a nested dict (as read from YAML) describes.

    Raises:
        ConfigError: listing every unknown key, wrong type and bad value at once, one line each.
    """
    try:
        cfg = _validator().validate_python(raw)
    except ValidationError as e:
        errors = _problems(e.errors(), raw)
    else:
        errors = _check_values(cfg)
    if errors:
        lines = "\n".join(f"  - {e}" for e in errors)
        raise ConfigError(f"{source}: {len(errors)} problem(s):\n{lines}")
    if cfg.model.backwards and cfg.model.directions == ["fwd"]:  # `model.backwards=true` alone: one bwd model
        cfg = cfg.for_direction("bwd")
    return cfg


@functools.cache
def _validator() -> TypeAdapter:
    return TypeAdapter(Config)  # built on first use: importing the module stays cheap


def _problems(errors: list[Any], raw: Any) -> list[str]:
    """pydantic's errors worded as one line per setting, in the order of the input, with a hint each.

    Hand-written because pydantic reports a setting once per list item or union member, names types its own way
    ("Input should be a valid integer") and has no "did you mean" for unknown keys.
    """
    lines: dict[tuple, str] = {}
    for err in sorted(errors, key=lambda err: err["type"] == "finite_number"):  # a wrong type first: [nan] is short
        loc = tuple(err["loc"][:2])  # (section, setting); further parts: a list item or union member of it
        if loc not in lines:
            lines[loc] = _problem(err, loc, raw)
    return [lines[loc] for loc in sorted(lines, key=lambda loc: _position(raw, loc))]


def _problem(err: Any, loc: tuple, raw: Any) -> str:
    name = ".".join(map(str, loc)) or "top level"
    value = _value_at(raw, loc)
    if err["type"] in ("unexpected_keyword_argument", "invalid_key"):  # invalid_key: not a string (YAML `1:`)
        keys = [f.name for f in dataclasses.fields(_class_at(loc[:-1]))]
        close = difflib.get_close_matches(str(loc[-1]), keys, n=1)
        hint = f"did you mean {close[0]!r}?" if close else f"valid keys: {', '.join(keys)}"
        return f"{name}: unknown key ({hint})"
    if err["type"] == "dataclass_type":
        return f"{name}: expected a mapping, found {value!r}"
    if err["type"] == "finite_number":  # `nan` as text is read as NaN: show it as the number
        if len(err["loc"]) > len(loc):
            return f"{name}: must be finite numbers, found {value!r}"
        return f"{name}: must be a finite number, found {_float(value)!r}"
    return f"{name}: expected {_type_name(typing.get_type_hints(_class_at(loc[:-1]))[loc[-1]])}, found {value!r}"


def _class_at(loc: tuple) -> type:
    cls = Config
    for part in loc:
        cls = typing.get_type_hints(cls)[part]
    return cls


def _value_at(raw: Any, loc: tuple) -> Any:
    for part in loc:
        if dataclasses.is_dataclass(raw):  # a section given as its dataclass: `cfg.replace(data=DataConfig(...))`
            raw = getattr(raw, str(part), None)
        else:
            raw = raw.get(part) if isinstance(raw, dict) else None
    return raw


def _position(raw: Any, loc: tuple) -> list[int]:
    """Where `loc` is in the input, to list problems top to bottom (pydantic lists unknown keys last)."""
    out = []
    for part in loc:
        keys = list(raw) if isinstance(raw, dict) else []
        out.append(keys.index(part) if part in keys else len(keys))
        raw = raw.get(part) if isinstance(raw, dict) else None
    return out


def _type_name(tp: Any) -> str:
    """A setting's type in the words of the messages: "float or null", "one of 'cpu', 'cuda'", "a list of int"."""
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


# Value checks stay hand-written, not pydantic constraints (`Annotated[Float, Gt(0)]`): several compare settings
# (valid_pct + test_pct, source and corpus), most carry a hint of what to use instead, and a subclass that
# redefines a setting's default (`epochs: Int = 4`) would silently drop a constraint written on the annotation.
def _check_values(cfg: Config) -> list[str]:
    errs: list[str] = []

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
    errs += _check_labels(cfg.data) + _check_task_weights(cfg) + _check_class_prior(cfg) + _check_label_smoothing(cfg)
    errs += _check_max_len_schedule(cfg.classifier)
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
    cols = label_columns(d)
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
    tasks = label_columns(cfg.data)
    if len(tasks) < 2:
        return [f"classifier.task_weights: set for a single label column ({cols!r}); weights are for several "
                "tasks (data.label_column=[a, b]): drop them"]
    unknown = sorted(set(w) - set(tasks))
    if unknown:
        return [f"classifier.task_weights: unknown task(s) {unknown}; the tasks are data.label_column {tasks}"]
    if any(v < 0 for v in w.values()) or not any(w.get(t, 1.0) > 0 for t in tasks):
        return [f"classifier.task_weights: weights must be >= 0 and not all 0, found {w!r}"]
    return []


def _single_label(d: DataConfig) -> bool:
    """One label column and one label per text (neither multi-task nor multi-label)."""
    return len(label_columns(d)) == 1 and d.label_sep is None


def _check_class_prior(cfg: Config) -> list[str]:
    """`classifier.class_prior`: one label column, one label per text, shares > 0 (the classifier stage checks
    the class names against the data's)."""
    p = cfg.classifier.class_prior
    if p is None:
        return []
    if not _single_label(cfg.data):
        return [f"classifier.class_prior: set for a multi-task or multi-label config; it is for one label per text "
                f"(single-label): drop it, found {p!r}"]
    if not p or any(v <= 0 for v in p.values()):
        return [f"classifier.class_prior: expected a share > 0 for each class, e.g. {{pos: 0.62, neg: 0.38}}; "
                f"found {p!r}"]
    return []


def _check_label_smoothing(cfg: Config) -> list[str]:
    """`classifier.label_smoothing`: in [0, 1), one label per text."""
    eps = cfg.classifier.label_smoothing
    if not 0 <= eps < 1:
        return [f"classifier.label_smoothing: expected a share in [0, 1) of the target spread over the classes "
                f"(0.1 is usual), found {eps}"]
    if eps and not _single_label(cfg.data):
        return [f"classifier.label_smoothing: set for a multi-task or multi-label config; it is for one label per "
                f"text (single-label): drop it, found {eps}"]
    return []


def _check_max_len_schedule(c: ClassifierConfig) -> list[str]:
    """`classifier.max_len_schedule`: positive lengths (more lengths than epochs: the last ones are used, so
    `epochs=2` on a config with [140, 280, 700] still works)."""
    s = c.max_len_schedule
    if s is None:
        return []
    if not s or min(s) <= 0:
        return [f"classifier.max_len_schedule: expected one or more lengths > 0, e.g. [100, 300, 700]; found {s!r}"]
    return []
