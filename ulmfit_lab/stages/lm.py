"""Stage 1: the general-domain LM. Pretrain an AWD-LSTM on a corpus, or point at pretrained weights.

Pretrained weights may be this package's LM folder, or fastai's WT103 format (`.pth` + vocab
`.pkl`/`.json`), by local path or URL. A missing file is an error, never a warning.
"""

from __future__ import annotations

import hashlib
import urllib.request
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from fastai.metrics import Perplexity, accuracy

from ..data import read_corpus
from ..loaders import lm_loaders
from ..models import CheckpointError, build_lm, lm_layer_groups, lm_meta, n_params, save_checkpoint
from ..schedules import Phase
from ..text import build_vocab, numericalize, texts_hash, tokenize
from ..training import fit_phases, make_learner
from .common import Context, StageResult, run_cached

VERSION = 1


@dataclass(frozen=True)
class LMResult(StageResult):
    """`kind`: none (no pretrained LM), package (an LM folder) or fastai (`.pth` + vocab file)."""

    kind: str = "none"
    weights: str | None = None
    vocab: str | None = None


def fetch(spec: str, cache_dir: Path) -> Path:
    """A local path as is; an http(s)/file URL downloaded once into the cache."""
    if "://" not in spec:
        path = Path(spec).expanduser()
        if not path.exists():
            raise CheckpointError(f"pretrained LM file not found: {path}; check lm_pretrain.weights/vocab")
        return path
    name = hashlib.sha256(spec.encode()).hexdigest()[:12] + "-" + spec.rstrip("/").rsplit("/", 1)[-1]
    dest = cache_dir / "downloads" / name
    if not dest.exists():
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = dest.with_suffix(dest.suffix + ".part")
        try:
            urllib.request.urlretrieve(spec, tmp)
        except OSError as e:
            raise CheckpointError(f"could not download {spec}: {e}. Offline, download it elsewhere and "
                                  "give the local path") from None
        tmp.replace(dest)
    return dest


def _resolve_pretrained(ctx: Context) -> dict:
    lp = ctx.cfg.lm_pretrain
    weights = fetch(lp.weights, ctx.cache_dir)
    if weights.is_dir():
        if not (weights / "model.safetensors").is_file():
            raise CheckpointError(f"{weights}: not an LM folder (no model.safetensors); give a .pth file "
                                  "and lm_pretrain.vocab, or a folder written by `ulmfit-lab lm`")
        return {"kind": "package", "weights": str(weights), "vocab": str(weights / "vocab.json")}
    if not lp.vocab:
        raise CheckpointError(f"lm_pretrain.vocab is needed with weights file {weights} "
                              "(fastai format: the itos .pkl or a JSON list)")
    return {"kind": "fastai", "weights": str(weights), "vocab": str(fetch(lp.vocab, ctx.cache_dir))}


def run(ctx: Context) -> LMResult:
    lp, m = ctx.cfg.lm_pretrain, ctx.cfg.model
    if lp.source == "none":
        return LMResult(dir="", key="none")
    if lp.source == "pretrained":
        info = _resolve_pretrained(ctx)
        return LMResult(dir="", key=f"pretrained:{info['weights']}", **info)

    docs = read_corpus(lp.corpus, ctx.cfg.data, ctx.cache_dir, lp.text_column, lp.max_docs)
    d = ctx.cfg.data
    stage = ctx.stage("lm", VERSION, texts_hash(docs), asdict(lp), asdict(m),
                      {"lang": d.lang, "min_freq": d.min_freq, "max_vocab": d.max_vocab, "seed": ctx.cfg.run.seed})

    def body() -> dict:
        rng = np.random.default_rng(ctx.cfg.run.seed)
        order = rng.permutation(len(docs))
        n_valid = max(1, int(len(docs) * lp.valid_pct))
        valid_docs = [docs[i] for i in order[:n_valid]]
        train_docs = [docs[i] for i in order[n_valid:]]
        tr_tok = tokenize(train_docs, d.lang, ctx.cache_dir, ctx.cfg.run.num_workers, "Tokenizing LM corpus")
        va_tok = tokenize(valid_docs, d.lang, ctx.cache_dir, ctx.cfg.run.num_workers, "Tokenizing LM valid")
        vocab = build_vocab([tr_tok], d.min_freq, d.max_vocab)
        train_ids, valid_ids = numericalize(tr_tok, vocab), numericalize(va_tok, vocab)
        dls = lm_loaders(train_ids, valid_ids, lp.bs, m.bptt, m.backwards, ctx.device, ctx.cfg.run.seed)
        model = build_lm(len(vocab), m, lp.drop_mult)
        ctx.log(f"lm: pretraining {n_params(model):,} parameters on {sum(map(len, train_ids)):,} tokens")
        learn = make_learner(dls, model, lm_layer_groups, lp, ctx.cfg.run, ctx.device, [accuracy, Perplexity()],
                             stage.path)
        fit_phases(learn, [Phase(len(lm_layer_groups(model)), lp.epochs)], lp, stage)
        out = stage.path / "model"
        save_checkpoint(learn.model, out, vocab, lm_meta(m, {"direction": "bwd" if m.backwards else "fwd"}))
        valid_loss = float(learn.validate()[0])
        return {"kind": "package", "weights": str(out), "vocab": str(out / "vocab.json"),
                "metrics": {"valid_loss": valid_loss, "valid_perplexity": float(np.exp(valid_loss)),
                            "train_tokens": int(sum(map(len, train_ids))), "vocab_size": len(vocab)}}

    return run_cached(ctx, stage, "lm", LMResult, {"lm_pretrain": asdict(lp), "model": asdict(m)}, body)
