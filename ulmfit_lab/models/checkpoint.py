"""Model checkpoints: save and load fastai's AWD-LSTM weights, and adapt pretrained ones to a new vocab.

A checkpoint is a folder: `model.safetensors` (tied weights stored once), `vocab.json` and `model.json`
(everything needed to rebuild the model). Nothing is pickled. Its file names and checks live in `artifact.py`.
"""

from __future__ import annotations

import json
import pickle
from dataclasses import asdict
from pathlib import Path
from typing import Any

import safetensors.torch as st
import torch
from fastai.text.learner import clean_raw_keys, match_embeds
from safetensors import SafetensorError
from torch import nn

from ..config import ModelConfig
from ..fileio import atomic_folder, sha256_file, write_json
from .artifact import META, VOCAB, WEIGHTS, CheckpointError, format_version, read_checkpoint_meta
from .awd_lstm import build_lm


def save_checkpoint(model: nn.Module, folder: Path, vocab: list[str], meta: dict[str, Any]) -> None:
    """Write weights, vocab and metadata into a temporary folder, then swap it in for `folder`.

    A crash (or a full disk) never leaves new weights beside an old vocab: readers see the old folder
    whole, or the new one whole (or, for an instant between two renames, none).
    """
    with atomic_folder(folder) as tmp:
        write_json(tmp / VOCAB, vocab)
        st.save_model(model, str(tmp / WEIGHTS))
        digest = sha256_file(tmp / WEIGHTS)  # tells corrupt from good
        write_json(tmp / META, {"format_version": format_version(meta), **meta, "vocab_size": len(vocab),
                                "weights_sha256": digest})


_RERUN_HINT = ("if a run wrote it, delete that stage's folder (or its DONE.json) and rerun the command to "
               "write it again")


def load_weights(model: nn.Module, path: Path) -> None:
    """Load a `model.safetensors` into `model`; a corrupt, truncated or mismatched file is a CheckpointError."""
    try:
        missing, unexpected = st.load_model(model, str(path), strict=False)
    except (RuntimeError, OSError, ValueError, SafetensorError) as e:
        raise CheckpointError(f"{path}: cannot load weights ({str(e).splitlines()[0][:200]}); the file is "
                              f"corrupt or was made for another model size; {_RERUN_HINT}") from None
    if missing or unexpected:
        raise CheckpointError(f"{path}: weights do not fit the model (missing {missing[:3]}, "
                              f"unexpected {unexpected[:3]}); {_RERUN_HINT}")


def model_config_from_meta(meta: dict[str, Any]) -> ModelConfig:
    return ModelConfig(**meta["model"])


def lm_meta(m: ModelConfig, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"kind": "lm", "model": asdict(m), **(extra or {})}


def read_lm_folder(folder: Path, backwards: bool) -> tuple[dict[str, torch.Tensor], list[str]]:
    """Weights and vocab of an LM folder written by this package, checked to read in the same direction."""
    meta, vocab = read_checkpoint_meta(Path(folder))
    if meta.get("model", {}).get("backwards", False) != backwards:
        raise CheckpointError(f"{folder} is a {'forward' if backwards else 'backward'} LM but model.backwards="
                              f"{backwards}; use the LM of the same direction")
    path = Path(folder) / WEIGHTS
    try:
        wgts = st.load_file(str(path))
    except Exception as e:  # safetensors raises its own error type for a truncated or garbled file
        raise CheckpointError(f"{path}: cannot read weights ({str(e).splitlines()[0][:200]}); the file is corrupt "
                              f"or truncated; {_RERUN_HINT}") from None
    return {k: (v.float() if v.is_floating_point() else v) for k, v in wgts.items()}, vocab  # shipped: fp16


def load_lm_checkpoint(folder: Path, drop_mult: float = 1.0) -> tuple[nn.Module, list[str], dict]:
    meta, vocab = read_checkpoint_meta(folder)
    model = build_lm(len(vocab), model_config_from_meta(meta), drop_mult)
    load_weights(model, Path(folder) / WEIGHTS)
    return model, vocab, meta


# ---------------------------------------------------------------- pretrained LMs (fastai WT103 format too)


class _ListUnpickler(pickle.Unpickler):
    """fastai's vocab `.pkl` is a pickled list of strings: refuse anything that would run code.

    Every way a pickle runs code (`__reduce__`, `__setstate__` of a class, `INST`/`OBJ`) first looks up a
    global by name, so refusing all globals leaves only built-in containers, strings and numbers.
    """

    def find_class(self, module: str, name: str) -> Any:
        raise CheckpointError(f"vocab pickle refers to {module}.{name}; only a plain list of strings is accepted "
                              "(nothing in it was run): use the itos_wt103.pkl that came with the weights, "
                              "or a JSON list of tokens")

    def persistent_load(self, pid: Any) -> Any:
        raise CheckpointError("vocab pickle holds a persistent id; only a plain list of strings is accepted")


def read_vocab(path: Path) -> list[str]:
    """The token list (itos) in `path`: a JSON list, or fastai's pickled list read without running any code.

    Raises:
        CheckpointError: missing, unreadable, or anything but a list of strings (a pickle naming a function
            or class is refused before anything in it runs), in one line.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"pretrained vocab not found: {path} (expected itos as .json or fastai .pkl)")
    try:
        if path.suffix == ".json":
            vocab = json.loads(path.read_text(encoding="utf-8"))
        else:
            with open(path, "rb") as f:
                vocab = _ListUnpickler(f).load()
    except CheckpointError as e:
        raise CheckpointError(f"{path}: {e}") from None
    except Exception as e:  # pickle and json raise many types for a truncated or foreign file
        reason = " ".join(str(e).split())[:160] or type(e).__name__
        raise CheckpointError(f"{path}: cannot read the vocab ({reason}); expected itos as a JSON list or "
                              "fastai's pickled list of strings: copy it again, or give another lm_pretrain.vocab"
                              ) from None
    if not isinstance(vocab, list) or not all(isinstance(w, str) for w in vocab):
        raise CheckpointError(f"{path}: expected a list of token strings (itos), found {type(vocab).__name__}")
    return vocab


def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"pretrained weights not found: {path}; give lm_pretrain.weights a .pth, "
                              ".safetensors or LM folder, or set lm_pretrain.source=none")
    try:
        if path.suffix == ".safetensors":
            return st.load_file(str(path))
        wgts = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises many types for a bad file
        raise CheckpointError(f"{path}: cannot read weights ({str(e).splitlines()[0][:200]}); "
                              "the file is corrupt or truncated: download or copy it again, or point "
                              "lm_pretrain.weights at another file") from None
    if isinstance(wgts, dict) and "model" in wgts and isinstance(wgts["model"], dict):
        wgts = wgts["model"]  # saved with an optimizer state
    return wgts


def adapt_pretrained(wgts: dict[str, torch.Tensor], old_vocab: list[str], new_vocab: list[str],
                     model: nn.Module) -> nn.Module:
    """Load pretrained LM weights into `model`, mapping embedding rows onto `new_vocab`.

    Words unknown to the pretrained vocab get the mean embedding (fastai's `match_embeds`).
    """
    wgts = dict(wgts)
    if "0.encoder.weight" not in wgts:
        raise CheckpointError(f"pretrained weights have no '0.encoder.weight'; keys found: {list(wgts)[:6]}")
    if wgts["0.encoder.weight"].shape[0] != len(old_vocab):
        raise CheckpointError(
            f"pretrained embedding has {wgts['0.encoder.weight'].shape[0]} rows but its vocab has "
            f"{len(old_vocab)} tokens: the weights and the vocab file do not belong together; give the "
            "lm_pretrain.vocab that was saved with these weights"
        )
    if "1.decoder.weight" not in wgts:
        wgts["1.decoder.weight"] = wgts["0.encoder.weight"]
    wgts = clean_raw_keys(match_embeds(wgts, old_vocab, new_vocab))
    wgts.setdefault("0.encoder_dp.emb.weight", wgts["0.encoder.weight"])  # tied; stored once by safetensors
    expected = model.state_dict()
    bad = [f"{k}: pretrained {tuple(v.shape)} vs model {tuple(expected[k].shape)}"
           for k, v in wgts.items() if k in expected and v.shape != expected[k].shape]
    missing = [k for k in expected if k not in wgts]
    if bad or missing:
        raise CheckpointError(
            "pretrained LM does not match model.{emb_sz,n_hid,n_layers}: "
            + "; ".join(bad[:4] + [f"missing {k}" for k in missing[:4]])
            + ". Set the model section to the pretrained model's sizes"
        )
    model.load_state_dict({k: v for k, v in wgts.items() if k in expected})
    return model
