"""The exported model: a self-contained folder that rebuilds the classifier with no pickled code and no data.

    model.safetensors   weights (fastai's parameter names; tied embedding stored once)
    vocab.json          the token list (id = position)
    model.json          format version, model config (sizes, bptt, max_len, head, direction), label names,
                        tokenizer settings, vocab size, class count, the weights' SHA-256, package versions
    model.torchscript.pt  optional: the fast classifier scripted, to serve token ids without fastai
    model.onnx          optional: the same classifier as ONNX, for onnxruntime (see onnx_export.py)
    config.yaml         optional: the whole config the model was trained with (`SentimentClassifier.save`)

An ensemble (forward + backward) is exported as a folder with `ensemble.json` and one such folder per member.

Folders written by the classifier stage before these fields existed still load: every added field is
optional on reading and checked when present.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import safetensors
import torch
import yaml

from .corpus import TOKENIZER_VERSION
from .ensemble import ENSEMBLE_FILE, member_dirs, write_ensemble
from .fileio import atomic_folder, sha256_file, write_json, write_text
from .models import FORMAT_VERSION, CheckpointError, read_checkpoint_meta
from .text import SPECIAL_TOKENS

WEIGHTS, VOCAB, META, TORCHSCRIPT = "model.safetensors", "vocab.json", "model.json", "model.torchscript.pt"
CONFIG = "config.yaml"  # the training config of a saved model (API); absent from folders the CLI exports
_EMB_KEY = "0.module.encoder.weight"


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


def export_model(src: str | Path, dest: str | Path, torchscript: bool = False,
                 config: dict[str, Any] | None = None, onnx: bool = False) -> Path:
    """Write a self-contained, checked model folder from `src` (a classifier or ensemble folder, or a run dir).

    Args:
        src: a folder with model.safetensors + model.json + vocab.json (e.g. RUN/classifier/model), or an
            ensemble folder (RUN/ensemble): its members are checked and copied in, one sub-folder each.
        dest: the folder to write; replaced atomically if it already holds a model. An existing file, or a
            non-empty folder that holds no model, is a `FileExistsError` (nothing is overwritten).
        torchscript: also write `model.torchscript.pt` (per member), the scripted fast classifier (token
            ids in, logits out), for serving without fastai.
        config: the training config (`Config.to_dict()`), written as `config.yaml`; default: `src`'s own
            `config.yaml`, when it has one.
        onnx: also write `model.onnx` (per member): token ids and lengths in, logits and probabilities
            out, for onnxruntime (`onnx_export.OnnxPredictor`); needs the `onnx` package.

    Returns:
        `dest`.
    """
    src, dest = resolve_model_dir(src), Path(dest)
    if dest.exists() and not dest.is_dir():
        raise FileExistsError(f"{dest} is a file; expected a folder to write the model into. Choose a new or empty "
                              "folder, or delete the file")
    if dest.exists() and not any((dest / f).is_file() for f in (META, ENSEMBLE_FILE)) and any(dest.iterdir()):
        raise FileExistsError(f"{dest} exists and is not a saved model; choose an empty or new folder")
    if dest.resolve() == src.resolve():
        raise FileExistsError(f"{dest} is the model being exported; choose another folder")
    with atomic_folder(dest) as tmp:
        if (src / ENSEMBLE_FILE).is_file():
            members = member_dirs(src)
            labels = {name: read_artifact(path)[0]["labels"] for name, path in members.items()}
            if len({json.dumps(v) for v in labels.values()}) > 1:
                raise CheckpointError(f"{src}: ensemble members disagree on the labels: {labels}")
            for name, path in members.items():
                _export_one(path, tmp / name, torchscript, onnx)
            write_ensemble(tmp, {name: tmp / name for name in members})  # relative paths: the folder stands alone
        else:
            _export_one(src, tmp, torchscript, onnx)
        if config is not None:
            write_text(tmp / CONFIG, yaml.safe_dump(config, sort_keys=False))
        elif (src / CONFIG).is_file():
            shutil.copyfile(src / CONFIG, tmp / CONFIG)
    return dest


def _export_one(src: Path, out: Path, torchscript: bool, onnx: bool = False) -> None:
    """Check one classifier folder and write its self-contained copy into the new folder `out`."""
    import fastai

    from . import __version__
    from .predict import Predictor

    meta, vocab = read_artifact(src)
    out.mkdir(parents=True, exist_ok=True)  # the new folder itself (empty), or an ensemble member's inside it
    shutil.copyfile(src / WEIGHTS, out / WEIGHTS)
    write_json(out / VOCAB, vocab)
    meta = {**meta, "format_version": FORMAT_VERSION,
            "tokenizer": meta.get("tokenizer") or tokenizer_settings(meta.get("lang", "en")),
            "vocab_size": len(vocab), "n_classes": len(meta["labels"]), "weights_sha256": sha256_file(out / WEIGHTS),
            "versions": {"ulmfit_lab": __version__, "torch": torch.__version__.split("+")[0],
                         "fastai": fastai.__version__}}
    write_json(out / META, meta)
    if torchscript or onnx:
        fast = Predictor.load(out, device=torch.device("cpu"), precision="fp32", num_workers=0).fast
    if torchscript:
        torch.jit.script(fast).save(str(out / TORCHSCRIPT))
    if onnx:
        from .onnx_export import ONNX, export_onnx

        export_onnx(fast, out / ONNX)


def load_torchscript(folder: str | Path) -> tuple[torch.jit.ScriptModule, dict[str, Any], list[str]]:
    """The scripted classifier of an exported folder, its metadata and vocab.

    Call it as `model(ids, lengths)`: right-padded int64 ids (bs, sl) and lengths (bs,) -> logits. The file
    itself needs only torch (`torch.jit.load`); the tokenizer settings are in model.json.
    """
    folder = Path(folder)
    if not (folder / TORCHSCRIPT).is_file():
        raise CheckpointError(f"{folder}: no {TORCHSCRIPT}; export with `ulmfit-lab export MODEL OUT --torchscript`")
    meta = json.loads((folder / META).read_text(encoding="utf-8"))
    vocab = json.loads((folder / VOCAB).read_text(encoding="utf-8"))
    return torch.jit.load(str(folder / TORCHSCRIPT), map_location="cpu"), meta, vocab
