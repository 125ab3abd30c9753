"""Stage 1: the general-domain LM. Pretrain an AWD-LSTM on a corpus, or point at pretrained weights.

Pretrained weights may be a registry name of a shipped LM (`reviews-fwd`), fastai's published WT103 LM
(`wt103-fwd`/`wt103-bwd`, through fastai's downloader), this package's LM folder, or fastai's WT103 format
(`.pth` + vocab `.pkl`/`.json`, or a folder holding both), by local path or URL (see `hub.py`). A missing
file is an error, never a warning.
"""

from __future__ import annotations

import logging
import math
from dataclasses import asdict, dataclass
from pathlib import Path

import datasets
import numpy as np
import torch
from fastai.metrics import Perplexity, accuracy
from torch import nn

from ..config import key_dict
from ..data.sources import read_corpus
from ..device import device_name
from ..models.artifact import VOCAB, WEIGHTS, read_checkpoint_meta
from ..models.awd_lstm import build_lm, lm_layer_groups, n_params
from ..models.checkpoint import adapt_pretrained, lm_meta, read_lm_folder, read_vocab, save_checkpoint
from ..models.hub import locate_lm
from ..text.corpus import DocIds, texts_hash
from ..text.vocab import build_vocab, tokenize, write_ids
from ..training import distributed
from ..training.learner import fit_phases, make_learner
from ..training.loaders import lm_loaders
from ..training.schedules import Phase
from .common import Context, StageResult, run_cached

log = logging.getLogger(__name__)
log.addFilter(distributed.main_only)  # every rank runs the stages; rank 0 alone reports them

VERSION = 1


@dataclass(frozen=True)
class LMResult(StageResult):
    """`kind`: none (no pretrained LM), package (an LM folder) or fastai (`.pth` + vocab file)."""

    kind: str = "none"
    weights: str | None = None
    vocab: str | None = None


def _resolve_pretrained(ctx: Context) -> dict:
    lp = ctx.cfg.lm_pretrain
    return locate_lm(lp.weights, lp.vocab, ctx.cache_dir, lp.sha256, ctx.cfg.model.backwards)


def pretrained_vocab(ctx: Context) -> list[str]:
    """The vocab of the pretrained LM `lm_pretrain.weights` (fetched first if it is a URL or fastai's name)."""
    return read_vocab(Path(_resolve_pretrained(ctx)["vocab"]))


def _pretrained_key(info: dict) -> str:
    """What identifies pretrained weights: a shipped LM's sha256, else the file's path, size and mtime."""
    path = Path(info["weights"])
    if info["kind"] == "package":
        meta, _ = read_checkpoint_meta(path)
        if meta.get("sha256"):
            return f"pretrained:{meta['sha256'][:16]}"
        path = path / WEIGHTS
    st_ = path.stat()
    return f"pretrained:{path.resolve()}:{st_.st_size}:{st_.st_mtime_ns}"


def split_corpus(sources: dict[str, list[str]], valid_pct: float, seed: int) -> tuple[list[str], dict[str, list[str]]]:
    """Hold out `valid_pct` of each source's documents (at least one where it has two or more)."""
    rng = np.random.default_rng(seed)
    train, valid = [], {}
    for name, docs in sources.items():
        order = rng.permutation(len(docs))
        n_valid = min(max(1, int(len(docs) * valid_pct)), len(docs) - 1) if valid_pct > 0 else 0
        valid[name] = [docs[i] for i in order[:n_valid]]
        train += [docs[i] for i in order[n_valid:]]
    return train, {k: v for k, v in valid.items() if v}


def run(ctx: Context) -> LMResult:
    lp, m = ctx.cfg.lm_pretrain, ctx.cfg.model
    if lp.source == "none":
        return LMResult(dir="", key="none")
    if lp.source == "pretrained":  # rank 0 downloads into the cache first
        info = distributed.main_first(lambda: _resolve_pretrained(ctx))
        return LMResult(dir="", key=_pretrained_key(info), **info)

    d = ctx.cfg.data
    # rank 0 first: it unpacks archives into the cache, the other ranks then read them
    sources = distributed.main_first(lambda: read_corpus(lp.corpus, d, ctx.cache_dir, lp.text_column, lp.max_docs))
    evals = (distributed.main_first(lambda: read_corpus(lp.eval_corpus, d, ctx.cache_dir, lp.text_column))
             if lp.eval_corpus else {})
    stage = ctx.stage("lm", VERSION, {k: texts_hash(v) for k, v in {**sources, **evals}.items()}, key_dict(lp),
                      key_dict(m), {"lang": d.lang, "min_freq": d.min_freq, "max_vocab": d.max_vocab,
                                  "seed": ctx.cfg.run.seed})

    def tok(docs: list[str], what: str):
        return tokenize(docs, d.lang, ctx.cache_dir, ctx.cfg.run.num_workers, f"Tokenizing {what}",
                        progress=ctx.cfg.run.progress)

    def prepare() -> tuple:
        train_docs, held_out = split_corpus(sources, lp.valid_pct, ctx.cfg.run.seed)
        tr_tok = tok(train_docs, "LM corpus")
        vocab = build_vocab([tr_tok], d.min_freq, d.max_vocab)

        def ids(t, name: str) -> DocIds:  # token ids in the vocab, on disk, memory-mapped
            path = stage.path / "ids" / f"{name}.arrow"
            if not distributed.is_main() and path.is_file():  # rank 0 has just written it (main_first)
                return DocIds.from_dataset(datasets.Dataset.from_file(str(path)))
            return DocIds.from_dataset(write_ids(t, vocab, path))

        valid_sets = {f"held-out {k}": ids(tok(v, f"held-out {k}"), f"held-out-{i}")
                      for i, (k, v) in enumerate(held_out.items())}
        valid_sets.update({f"eval {k}": ids(tok(v, f"eval {k}"), f"eval-{i}")
                           for i, (k, v) in enumerate(evals.items())})
        return train_docs, vocab, ids(tr_tok, "train"), valid_sets

    def body() -> dict:
        # rank 0 tokenizes (worker processes, run.num_workers) into the cache and writes the ids, the others
        # read them
        train_docs, vocab, train_ids, valid_sets = distributed.main_first(prepare)
        held = [x for k, x in valid_sets.items() if k.startswith("held-out")]
        valid_ids = sum(held[1:], held[0]) if held else train_ids[:1]
        dls = lm_loaders(train_ids, valid_ids, lp.bs, m.bptt, m.backwards, ctx.device, ctx.cfg.run.seed)
        model = build_lm(len(vocab), m, lp.drop_mult)
        if lp.init:  # go on from an earlier LM (e.g. a shipped one), mapped onto this vocab
            adapt_pretrained(*read_lm_folder(Path(lp.init), m.backwards), vocab, model)
        n_tok = train_ids.n_tokens
        log.info(f"lm: pretraining {n_params(model):,} parameters on {n_tok:,} tokens ({len(train_docs):,} docs), "
                 f"vocab {len(vocab):,}, {lp.epochs} epoch(s)")
        counts = train_ids.token_counts(len(vocab)) if lp.softmax_samples else None  # the sampler's proposal
        learn = make_learner(dls, model, lm_layer_groups, lp, ctx.cfg.run, ctx.device, [accuracy, Perplexity()],
                             stage.path, lm=True, lm_counts=counts)
        fit_phases(learn, [Phase(len(lm_layer_groups(model)), lp.epochs)], lp, stage, checkpoint_s=ctx.checkpoint_s,
                   deadline=ctx.deadline)
        out = stage.path / "model"
        if distributed.is_main():
            save_checkpoint(learn.model, out, vocab, lm_meta(m, {"direction": "bwd" if m.backwards else "fwd"}))
        ppl = {k: lm_perplexity(learn.model, ids, lp.bs, m.bptt, m.backwards, ctx.device)
               for k, ids in valid_sets.items()}
        log.info("lm: perplexity " + ", ".join(f"{k}: {v:.1f}" for k, v in ppl.items()))
        valid_loss = float(learn.validate()[0])
        return {"kind": "package", "weights": str(out), "vocab": str(out / VOCAB),
                "metrics": {"valid_loss": valid_loss, "valid_perplexity": float(np.exp(valid_loss)),
                            "perplexity": ppl, "train_tokens": int(n_tok), "vocab_size": len(vocab),
                            "params": n_params(model), "device": device_name(ctx.device)}}

    return run_cached(ctx, stage, LMResult, {"lm_pretrain": asdict(lp), "model": asdict(m)}, body)


def lm_perplexity(model: nn.Module, docs: list[np.ndarray], bs: int, bptt: int, backwards: bool,
                  device: torch.device) -> float:
    """exp(mean token cross-entropy) of an LM over `docs` read as one stream, as its validation reads it.

    The one definition: the `lm` stage's per-source perplexities and `lab.advise`'s target perplexity. In a
    distributed run each rank reads its streams of the batch and the sums are added up over the ranks.
    """
    dl = lm_loaders(docs, docs, bs, bptt, backwards, device)[1]
    model.to(device).eval()
    model.reset()
    total, n = 0.0, 0
    with torch.inference_mode():
        for x, y in dl:
            logits = model(x)[0]
            total += float(nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), y.reshape(-1),
                                                       reduction="sum"))
            n += y.numel()
    total, n = distributed.all_sum([total, n])
    return math.exp(total / max(n, 1))
