"""Stage 3: the classifier. Concat pooling over the fine-tuned encoder, gradual unfreezing (top group
first, one more per epoch), discriminative LRs and STLR per phase, BPT3C for long texts (fastai's
`SentenceEncoder` with `max_len`).

Multi-label and multi-task data (`data/labels.py`) train the same model with one output per label (or per
task's class) and their own loss (`training/multi.py`); a multi-label model's thresholds are tuned on the
validation texts once trained, with the predictor that serves it. `max_len_schedule` lengthens BPT3C's
window over the epochs.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from ..config import key_dict
from ..data.labels import MULTI_LABEL, SINGLE
from ..models.artifact import WEIGHTS, label_fields
from ..models.awd_lstm import build_classifier, build_lm, classifier_layer_groups, n_params
from ..models.checkpoint import load_weights, save_checkpoint
from ..serving.predict import Predictor
from ..training import distributed
from ..training.learner import fit_phases, make_learner
from ..training.multi import MaxLenSchedule, class_weights_for, loss_and_metrics, targets_array, tune_thresholds
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
        vocab, classes, spec = data.vocab(), data.classes, data.label_spec
        tr, va = data.split("train"), data.split("valid")
        from ..training.loaders import classifier_loaders

        ytr, yva = targets_array(spec, tr["label"]), targets_array(spec, va["label"])
        dls = classifier_loaders(ids_of(tr), ytr, ids_of(va), yva, cc.bs, m.bptt, m.backwards,
                                 ctx.device, ctx.cfg.run.seed)
        model = build_classifier(len(vocab), spec.n_outputs, m, cc.drop_mult, cc.head, cc.max_len)
        lm = build_lm(len(vocab), m)
        load_weights(lm, Path(encoder.model_dir) / WEIGHTS)  # a corrupt file: CheckpointError
        model[0].module.load_state_dict(lm[0].state_dict())  # the LM's encoder, weights only
        class_weights = None
        if cc.class_prior is not None:
            w = class_weights_for(cc.class_prior, classes, ytr)
            log.info(f"classifier: class_prior {cc.class_prior}: loss weights "
                     f"{dict(zip(map(str, classes), np.round(w, 3).tolist()))}")
            class_weights = torch.tensor(w, dtype=torch.float32, device=ctx.device)
        loss_func, metrics = loss_and_metrics(spec, cc.task_weights, class_weights, cc.label_smoothing)
        learn = make_learner(dls, model, classifier_layer_groups, cc, ctx.cfg.run, ctx.device, metrics,
                             stage.path, loss_func=loss_func)
        phases = unfreeze_phases(len(learn.opt.param_lists), cc.epochs, cc.gradual_unfreezing, cc.trainable_groups)
        log.info(f"classifier: {n_params(model):,} parameters, {len(tr)} train texts, "
                 f"phases (groups trained, epochs): {[(p.n_trainable, p.epochs) for p in phases]}")
        fit_phases(learn, phases, cc, stage, checkpoint_s=ctx.checkpoint_s,
                   deadline=ctx.deadline, phase_cbs=_max_len_cbs(cc, phases),
                   extra_metrics=None if cc.max_len_schedule is None else  # each epoch's max_len, in metrics.jsonl
                   lambda: {"max_len": distributed.unwrap(learn.model)[0].max_len})
        loss, acc = (float(v) for v in learn.validate())
        out = stage.path / "model"
        meta = {"kind": "classifier", "model": asdict(m), "labels": classes, "lang": ctx.cfg.data.lang,
                "head": list(cc.head), "max_len": cc.max_len, "drop_mult": cc.drop_mult,
                "direction": "bwd" if m.backwards else "fwd"}
        metrics = {"valid_loss": loss, "valid_accuracy": acc}
        if distributed.is_main():
            if spec.mode != SINGLE:
                meta.update(label_fields(spec))
            if spec.mode == MULTI_LABEL:  # thresholds from the served model's own probabilities
                th = tune_thresholds(_valid_proba(learn.model, vocab, meta, va, ctx), yva)
                meta.update(label_fields(spec, th))
                metrics["thresholds"] = th
            save_checkpoint(learn.model, out, vocab, meta)
        return {"model_dir": str(out), "metrics": metrics}

    return run_cached(ctx, stage, ClassifierResult, {"classifier": asdict(cc), "model": asdict(m)},
                      body)


def _max_len_cbs(cc, phases: list) -> Callable[[int], list] | None:
    """Phase index -> its `MaxLenSchedule` (each phase is one `learn.fit`, counting its epochs from 0)."""
    if cc.max_len_schedule is None:
        return None
    total = sum(p.epochs for p in phases)
    return lambda i: [MaxLenSchedule(cc.max_len_schedule, total, sum(p.epochs for p in phases[:i]), cc.max_len)]


def _valid_proba(model, vocab: list[str], meta: dict, va, ctx: Context) -> np.ndarray:
    """The validation texts' probabilities from the fast exact path that will serve the model (fp32)."""
    p = Predictor(distributed.unwrap(model), vocab, meta, ctx.device, precision="fp32", num_workers=0)
    return p.proba_of_ids([np.asarray(x) for x in ids_of(va)], ctx.cfg.classifier.bs)
