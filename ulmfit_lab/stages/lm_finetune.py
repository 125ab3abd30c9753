"""Stage 2: fine-tune the LM on target-domain text with discriminative LRs and STLR.

The pretrained embedding is mapped onto the target vocab (unknown words get the mean embedding).
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from fastai.metrics import Perplexity, accuracy
from torch import nn

from ..config import key_dict
from ..fileio import write_json
from ..models.awd_lstm import build_lm, lm_layer_groups, n_params
from ..models.checkpoint import (
    adapt_pretrained,
    lm_meta,
    read_lm_folder,
    read_state_dict,
    read_vocab,
    save_checkpoint,
)
from ..training import distributed
from ..training.learner import fit_phases, make_learner
from ..training.loaders import lm_loaders
from ..training.schedules import Phase
from .common import Context, StageResult, run_cached
from .data import DataResult
from .lm import LMResult

log = logging.getLogger(__name__)
log.addFilter(distributed.main_only)  # every rank runs the stages; rank 0 alone reports them

VERSION = 1


@dataclass(frozen=True)
class LMFinetuneResult(StageResult):
    model_dir: str = ""


def init_lm(ctx: Context, lm: LMResult, vocab: list[str], drop_mult: float) -> nn.Module:
    """The target-vocab LM, initialised from the stage-1 LM (or randomly when there is none)."""
    m = ctx.cfg.model
    model = build_lm(len(vocab), m, drop_mult)
    if lm.kind == "none":
        return model
    if lm.kind == "package":
        wgts, old_vocab = read_lm_folder(Path(lm.weights), m.backwards)
    else:
        wgts, old_vocab = read_state_dict(Path(lm.weights)), read_vocab(Path(lm.vocab))
    adapt_pretrained(wgts, old_vocab, vocab, model)
    known = len(set(vocab) & set(old_vocab))
    log.info(f"lm_finetune: pretrained LM loaded; {known}/{len(vocab)} target tokens found in its vocab")
    return model


def run(ctx: Context, data: DataResult, lm: LMResult) -> LMFinetuneResult:
    ft, m = ctx.cfg.lm_finetune, ctx.cfg.model
    stage = ctx.stage("lm_finetune", VERSION, key_dict(ft), key_dict(m), data.key, lm.key, ctx.cfg.run.seed)

    def body() -> dict:
        vocab = data.vocab()
        train_ids = data.ids("train", "unlabelled")  # memory-mapped, read in bptt chunks by the loader
        valid_ids = data.ids("valid")
        dls = lm_loaders(train_ids, valid_ids, ft.bs, m.bptt, m.backwards, ctx.device, ctx.cfg.run.seed)
        model = init_lm(ctx, lm, vocab, ft.drop_mult)
        learn = make_learner(dls, model, lm_layer_groups, ft, ctx.cfg.run, ctx.device, [accuracy, Perplexity()],
                             stage.path, lm=True)
        before = float(learn.validate()[0])
        n_tok = train_ids.n_tokens
        metrics = {"valid_loss_before": before, "valid_perplexity_before": float(np.exp(before)),
                   "train_tokens": n_tok, "params": n_params(model)}
        if ft.enabled:
            log.info(f"lm_finetune: {n_params(model):,} parameters, {n_tok:,} tokens, {ft.epochs} epoch(s)")
            fit_phases(learn, [Phase(len(lm_layer_groups(model)), ft.epochs)], ft, stage, checkpoint_s=ctx.checkpoint_s,
                   deadline=ctx.deadline)
            after = float(learn.validate()[0])
            metrics.update(valid_loss=after, valid_perplexity=float(np.exp(after)))
        out = stage.path / "model"
        if distributed.is_main():
            save_checkpoint(learn.model, out, vocab, lm_meta(m, {"direction": "bwd" if m.backwards else "fwd"}))
            write_json(stage.path / "summary.json", metrics)
        return {"model_dir": str(out), "metrics": metrics}

    return run_cached(ctx, stage, LMFinetuneResult, {"lm_finetune": asdict(ft), "model": asdict(m)},
                      body)
