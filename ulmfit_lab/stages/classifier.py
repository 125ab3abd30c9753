"""Stage 3: the classifier. Concat pooling over the fine-tuned encoder, gradual unfreezing (top group
first, one more per epoch), discriminative LRs and STLR per phase, BPT3C for long texts (fastai's
`SentenceEncoder` with `max_len`).
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass
from pathlib import Path

from fastai.metrics import accuracy

from ..config import key_dict
from ..models.artifact import WEIGHTS
from ..models.awd_lstm import build_classifier, build_lm, classifier_layer_groups, n_params
from ..models.checkpoint import load_weights, save_checkpoint
from ..training import distributed
from ..training.learner import fit_phases, make_learner
from ..training.schedules import unfreeze_phases
from .common import Context, StageResult, run_cached
from .data import DataResult, ids_of
from .lm_finetune import LMFinetuneResult

log = logging.getLogger(__name__)
log.addFilter(distributed.main_only)  # every rank runs the stages; rank 0 alone reports them

VERSION = 1


@dataclass(frozen=True)
class ClassifierResult(StageResult):
    model_dir: str = ""


def run(ctx: Context, data: DataResult, encoder: LMFinetuneResult) -> ClassifierResult:
    cc, m = ctx.cfg.classifier, ctx.cfg.model
    stage = ctx.stage("classifier", VERSION, key_dict(cc), key_dict(m), data.key, encoder.key, ctx.cfg.run.seed)

    def body() -> dict:
        vocab, classes = data.vocab(), data.classes
        tr, va = data.split("train"), data.split("valid")
        from ..training.loaders import classifier_loaders

        dls = classifier_loaders(ids_of(tr), tr["label"], ids_of(va), va["label"], cc.bs, m.bptt, m.backwards,
                                 ctx.device, ctx.cfg.run.seed)
        model = build_classifier(len(vocab), len(classes), m, cc.drop_mult, cc.head, cc.max_len)
        lm = build_lm(len(vocab), m)
        load_weights(lm, Path(encoder.model_dir) / WEIGHTS)  # a corrupt file: CheckpointError
        model[0].module.load_state_dict(lm[0].state_dict())  # the LM's encoder, weights only
        learn = make_learner(dls, model, classifier_layer_groups, cc, ctx.cfg.run, ctx.device, [accuracy],
                             stage.path)
        phases = unfreeze_phases(len(learn.opt.param_lists), cc.epochs, cc.gradual_unfreezing, cc.trainable_groups)
        log.info(f"classifier: {n_params(model):,} parameters, {len(tr)} train texts, "
                 f"phases (groups trained, epochs): {[(p.n_trainable, p.epochs) for p in phases]}")
        fit_phases(learn, phases, cc, stage, checkpoint_s=ctx.checkpoint_s,
                   deadline=ctx.deadline)
        loss, acc = (float(v) for v in learn.validate())
        out = stage.path / "model"
        meta = {"kind": "classifier", "model": asdict(m), "labels": classes, "lang": ctx.cfg.data.lang,
                "head": list(cc.head), "max_len": cc.max_len, "drop_mult": cc.drop_mult,
                "direction": "bwd" if m.backwards else "fwd"}
        if distributed.is_main():
            save_checkpoint(learn.model, out, vocab, meta)
        return {"model_dir": str(out), "metrics": {"valid_loss": loss, "valid_accuracy": acc}}

    return run_cached(ctx, stage, ClassifierResult, {"classifier": asdict(cc), "model": asdict(m)},
                      body)
