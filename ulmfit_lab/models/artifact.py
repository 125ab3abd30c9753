"""The on-disk model folder: its file names, its metadata, and the checks on reading it. Nothing else knows them.

    model.safetensors   weights (fastai's parameter names; tied embedding stored once)
    vocab.json          the token list (id = position)
    model.json          format version, model config (sizes, bptt, max_len, head, direction), label names,
                        tokenizer settings, vocab size, class count, the weights' SHA-256, package versions;
                        for a multi-label or multi-task model also `label_mode` and its fields (`label_fields`)
    model.torchscript.pt  optional: the fast classifier scripted, to serve token ids without fastai
    model.onnx          optional: the same classifier as ONNX, for onnxruntime (see onnx_export.py)
    config.yaml         optional: the whole config the model was trained with (`SentimentClassifier.save`)

An ensemble (forward + backward) is a folder with `ensemble.json` (`{"members": {"fwd": PATH, "bwd": PATH}}`,
paths relative to the folder) and, once saved, one such folder per member.

Folders written by the classifier stage before these fields existed still load: every added field is
optional on reading and checked when present. A multi-label or multi-task folder says format version 2, so
that an ulmfit_lab too old to know label modes refuses it instead of reading its outputs as one softmax;
single-label folders stay at version 1, byte for byte as before. This module sits low in the import graph
(no model code, no predictors) so that models, predict, ensemble and export all import it and never each
other backwards.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import safetensors

from ..data.labels import MODES, MULTI_LABEL, MULTI_TASK, SINGLE, LabelSpec
from ..fileio import sha256_file, write_json
from ..text.corpus import TOKENIZER_VERSION
from ..text.vocab import SPECIAL_TOKENS

WEIGHTS, VOCAB, META, TORCHSCRIPT = "model.safetensors", "vocab.json", "model.json", "model.torchscript.pt"
CONFIG = "config.yaml"  # the training config of a saved model (API); absent from folders the CLI exports
ENSEMBLE_FILE = "ensemble.json"
FORMAT_VERSION = 2  # the newest this package reads; `format_version` says which a folder is written as
LABEL_MODE, TASKS, THRESHOLDS, LABEL_SEP = "label_mode", "tasks", "thresholds", "label_sep"  # multi-label/-task
_EMB_KEY = "0.module.encoder.weight"


class CheckpointError(ValueError):
    """A checkpoint or pretrained file is missing, corrupt or does not fit the model."""


def read_checkpoint_meta(folder: Path) -> tuple[dict[str, Any], list[str]]:
    """(metadata, vocab) of any model folder (LM or classifier), checked to be complete and not too new."""
    folder = Path(folder)
    for name in (META, VOCAB, WEIGHTS):
        if not (folder / name).is_file():
            raise CheckpointError(
                f"{folder}: missing {name}; expected a folder written by ulmfit-lab "
                f"({WEIGHTS}, {META}, {VOCAB}). Re-run the stage that makes it"
            )
    try:
        meta = json.loads((folder / META).read_text(encoding="utf-8"))
        vocab = json.loads((folder / VOCAB).read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CheckpointError(f"{folder}: {META} or {VOCAB} is corrupt ({e}); re-run the stage") from None
    if meta.get("format_version", 0) > FORMAT_VERSION:
        raise CheckpointError(
            f"{folder}: format version {meta['format_version']} is newer than this ulmfit_lab "
            f"({FORMAT_VERSION}); upgrade ulmfit_lab"
        )
    return meta, vocab


def format_version(meta: dict[str, Any]) -> int:
    """1 for a single-label model (or an LM), 2 for a multi-label or multi-task one."""
    return 1 if meta.get(LABEL_MODE, SINGLE) == SINGLE else 2


def label_fields(spec: LabelSpec, thresholds: list[float] | None = None) -> dict[str, Any]:
    """The model.json fields that describe a classifier's outputs: `labels` (one per output; multi-task:
    `task:class`) and, unless single-label, `label_mode` with `thresholds` and `label_sep` (multi-label:
    the decision threshold of each label, tuned on validation data) or `tasks` (multi-task: each task's
    classes, in output order)."""
    out: dict[str, Any] = {"labels": spec.output_names}
    if spec.mode == MULTI_LABEL:
        out.update({LABEL_MODE: MULTI_LABEL, LABEL_SEP: spec.sep,
                    THRESHOLDS: [0.5] * len(spec.classes) if thresholds is None else [float(t) for t in thresholds]})
    elif spec.mode == MULTI_TASK:
        out.update({LABEL_MODE: MULTI_TASK, TASKS: {t: list(c) for t, c in spec.tasks}})
    return out


def label_spec(meta: dict[str, Any], where: str = "model.json") -> LabelSpec:
    """The label mode and outputs that a classifier's model.json describes (single-label when it has no
    `label_mode`, as every folder before label modes).

    Raises:
        CheckpointError: the label fields contradict each other or the labels.
    """
    mode, labels = meta.get(LABEL_MODE, SINGLE), list(meta["labels"])
    if mode not in MODES:
        raise CheckpointError(f"{where}: unknown {LABEL_MODE} {mode!r}; expected one of {list(MODES)}. Upgrade "
                              "ulmfit_lab, or re-export the model")
    if mode == SINGLE:
        return LabelSpec(SINGLE, tuple(labels))
    if mode == MULTI_LABEL:
        th = meta.get(THRESHOLDS)
        if th is not None and (not isinstance(th, list) or len(th) != len(labels)):
            raise CheckpointError(f"{where}: {THRESHOLDS} holds {th!r}, expected one number per label "
                                  f"({len(labels)}); re-export the model")
        return LabelSpec(MULTI_LABEL, tuple(labels), sep=meta.get(LABEL_SEP))
    tasks = meta.get(TASKS)
    if not isinstance(tasks, dict) or [f"{t}:{c}" for t, cs in tasks.items() for c in cs] != labels:
        raise CheckpointError(f"{where}: {TASKS} ({tasks!r}) does not match the labels {labels[:6]}; the file is "
                              "inconsistent, re-export the model")
    return LabelSpec(MULTI_TASK, tasks=tuple((t, tuple(c)) for t, c in tasks.items()))


def thresholds(meta: dict[str, Any]) -> list[float]:
    """A multi-label model's decision threshold per label (0.5 where model.json records none)."""
    th = meta.get(THRESHOLDS)
    return [float(t) for t in th] if th is not None else [0.5] * len(meta["labels"])


def tokenizer_settings(lang: str) -> dict[str, Any]:
    """What a server needs to tokenize exactly as in training: fastai's rules + spaCy's blank `lang` pipeline."""
    from fastai.text.core import defaults

    return {"kind": "fastai-spacy", "lang": lang, "version": TOKENIZER_VERSION,
            "rules": [r.__name__ for r in defaults.text_proc_rules], "special_tokens": list(SPECIAL_TOKENS)}


def resolve_model_dir(path: str | Path) -> Path:
    """A model folder (a classifier, or an ensemble with `ensemble.json`), or a run directory: its
    `ensemble` (several directions) or else its `classifier/model`."""
    path = Path(path)
    for candidate in (path, path / "ensemble", path / "classifier" / "model"):
        if (candidate / META).is_file() or (candidate / ENSEMBLE_FILE).is_file():
            return candidate
    if not path.exists():
        raise CheckpointError(f"model not found: {path}; expected a saved model folder or a run directory")
    if not (path / WEIGHTS).is_file():
        raise CheckpointError(f"{path}: no model here; expected a saved model folder ({WEIGHTS}, {META}, {VOCAB}) "
                              "or a run directory with classifier/model (train one with `ulmfit-lab "
                              "train-classifier CONFIG`)")
    return path


def read_artifact(folder: str | Path) -> tuple[dict[str, Any], list[str]]:
    """Read and check a classifier folder: metadata, vocab, and that the weights belong to them.

    Raises:
        CheckpointError: saying what is missing, corrupt or mismatched, and what to do.
    """
    folder = resolve_model_dir(folder)
    if (folder / ENSEMBLE_FILE).is_file():
        raise CheckpointError(f"{folder} is an ensemble of {sorted(member_dirs(folder))}, not one classifier; load "
                              "it with ulmfit_lab.ensemble.load_model or SentimentClassifier.load")
    meta, vocab = read_checkpoint_meta(folder)
    where = str(folder)
    if meta.get("kind") != "classifier":
        raise CheckpointError(f"{where}: holds a {meta.get('kind', 'unknown')!r} model, not a classifier; "
                              "point at a classifier folder (RUN/classifier/model or SentimentClassifier.save)")
    missing = [k for k in ("model", "labels") if k not in meta]
    if missing:
        raise CheckpointError(f"{where}/{META}: missing {missing}; the file is incomplete, re-export the model")
    if not isinstance(vocab, list) or not all(isinstance(w, str) for w in vocab):
        raise CheckpointError(f"{where}/{VOCAB}: expected a JSON list of token strings")
    _check_tokenizer(meta, where)
    label_spec(meta, f"{where}/{META}")
    expected = meta.get("weights_sha256")
    if expected and sha256_file(folder / WEIGHTS) != expected:
        raise CheckpointError(f"{where}/{WEIGHTS}: cannot load weights (SHA-256 differs from the one recorded in "
                              f"{META}): the file is corrupt or was replaced. Re-export or re-download the model")
    shapes = _weight_shapes(folder / WEIGHTS)
    if _EMB_KEY in shapes and shapes[_EMB_KEY][0] != len(vocab):
        raise CheckpointError(f"{where}: {VOCAB} has {len(vocab)} tokens but the embedding in {WEIGHTS} has "
                              f"{shapes[_EMB_KEY][0]} rows: the vocab and the weights come from different models")
    out_key = max((k for k in shapes if k.startswith("1.layers.") and k.endswith(".weight") and len(shapes[k]) == 2),
                  key=lambda k: int(k.split(".")[2]), default=None)
    if out_key is not None and shapes[out_key][0] != len(meta["labels"]):
        raise CheckpointError(f"{where}: {META} lists {len(meta['labels'])} labels but the classifier's output "
                              f"layer has {shapes[out_key][0]}: the labels and the weights do not belong together")
    return meta, vocab


def _check_tokenizer(meta: dict[str, Any], where: str) -> None:
    tok = meta.get("tokenizer")
    if tok is None:
        return  # written before tokenizer settings were recorded: fastai's rules, meta["lang"]
    now = tokenizer_settings(tok.get("lang", meta.get("lang", "en")))
    if tok.get("kind") != now["kind"] or tok.get("version", 0) > TOKENIZER_VERSION:
        raise CheckpointError(f"{where}: made with tokenizer {tok.get('kind')!r} v{tok.get('version')}; this "
                              f"ulmfit_lab has {now['kind']!r} v{TOKENIZER_VERSION}. Upgrade ulmfit_lab")
    if tok.get("rules") != now["rules"]:
        raise CheckpointError(f"{where}: trained with tokenizer rules {tok.get('rules')} but this fastai has "
                              f"{now['rules']}; install the fastai version in {META} ('fastai_version')")


def _weight_shapes(path: Path) -> dict[str, list[int]]:
    try:
        with safetensors.safe_open(str(path), framework="pt") as f:
            return {k: list(f.get_slice(k).get_shape()) for k in f.keys()}
    except Exception as e:  # safetensors raises its own error types for a bad header
        raise CheckpointError(f"{path}: cannot load weights, not a readable safetensors file "
                              f"({str(e).splitlines()[0][:200]}); the file is corrupt or truncated. Re-export or "
                              "re-download the model") from None


# ---------------------------------------------------------------- ensemble folders


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
