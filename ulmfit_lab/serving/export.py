"""Export a model folder: a self-contained, checked copy that rebuilds the classifier with no pickled code
and no data (the folder format is described in `artifact.py`), optionally with TorchScript and ONNX files.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import fastai
import torch
import yaml

from .._version import __version__
from ..fileio import atomic_folder, sha256_file, write_json, write_text
from ..models.artifact import (
    CONFIG,
    ENSEMBLE_FILE,
    META,
    TORCHSCRIPT,
    VOCAB,
    WEIGHTS,
    CheckpointError,
    format_version,
    label_spec,
    member_dirs,
    read_artifact,
    resolve_model_dir,
    tokenizer_settings,
    write_ensemble,
)
from .predict import Predictor


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
    meta, vocab = read_artifact(src)
    out.mkdir(parents=True, exist_ok=True)  # the new folder itself (empty), or an ensemble member's inside it
    shutil.copyfile(src / WEIGHTS, out / WEIGHTS)
    write_json(out / VOCAB, vocab)
    meta = {**meta, "format_version": format_version(meta),
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

        export_onnx(fast, out / ONNX, label_spec(meta))


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
