"""The one training helper every stage shares: a fastai `Learner` with ULMFiT's schedule.

`make_learner` builds it (optimizer, AR/TAR, clipping, precision, the LM loss, DDP); `fit_phases` runs the
phases (gradual unfreezing), each one STLR cycle over discriminative LRs, through the callbacks of
`callbacks`: a metrics row per epoch, and `last.pt` (`checkpointing`) after every epoch, so a killed run
resumes at the next epoch instead of starting over.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from functools import partial
from pathlib import Path

import numpy as np
import torch
from fastai.callback.core import Callback
from fastai.callback.fp16 import MixedPrecision
from fastai.callback.progress import ProgressCallback
from fastai.callback.rnn import rnn_cbs
from fastai.callback.schedule import ParamScheduler
from fastai.callback.training import GradientClip
from fastai.data.core import DataLoaders
from fastai.learner import Learner
from fastai.losses import CrossEntropyLossFlat
from fastai.optimizer import Adam
from torch import nn

from ..config import RunConfig, TrainConfig
from ..device import amp_dtype
from . import distributed
from .callbacks import Checkpointer, CpuAutocast, EpochLog, TokenCounter, TrainingPaused
from .checkpointing import read_progress, restore_progress, trim_logs
from .fused import fuse_lm_loss, sample_lm_loss
from .rundir import StageDir
from .schedules import Phase, discriminative_lrs, lr_schedule

__all__ = ["TrainingPaused", "fit_phases", "make_learner"]  # TrainingPaused (callbacks) is still imported from here

log = logging.getLogger(__name__)


def make_learner(dls: DataLoaders, model: nn.Module, groups: Callable[[nn.Module], list], tc: TrainConfig,
                 run: RunConfig, device: torch.device, metrics: list, path: Path, lm: bool = False,
                 lm_counts: np.ndarray | None = None, loss_func: nn.Module | None = None) -> Learner:
    """A fastai Learner with Adam(betas), AR/TAR (passed explicitly: fastai #3605), clipping, AMP.

    `lm`: the model is a language model; on the CPU it then trains with the fused decoder + softmax
    (`fused.py`) unless `run.fused_softmax` is off. `lm_counts` (training-token count per vocab id): with
    `tc.softmax_samples` > 0 the LM trains with a sampled softmax drawn from them (`fused.SampledLMLoss`).
    `loss_func`: the loss (default: cross-entropy), e.g. a multi-label or multi-task classifier's (`multi.py`).
    """
    cbs: list[Callback] = list(rnn_cbs(alpha=tc.alpha, beta=tc.beta)) + [TokenCounter()]
    if tc.clip:
        cbs.append(GradientClip(tc.clip))
    dtype = amp_dtype(run, device, quiet=not distributed.is_main())
    if dtype is not None and device.type == "cuda":
        cbs.append(MixedPrecision(amp_mode="bf16" if dtype == torch.bfloat16 else "fp16"))
    elif dtype == torch.bfloat16:
        cbs.append(CpuAutocast())
    elif dtype is not None:
        raise ValueError("run.precision=fp16 needs a GPU; on CPU use bf16 or fp32")
    opt_func = partial(Adam, mom=tc.betas[0], sqr_mom=tc.betas[1], wd=tc.wd)
    loss_func = CrossEntropyLossFlat() if loss_func is None else loss_func
    n_draws = getattr(tc, "softmax_samples", 0) if lm_counts is not None else 0
    if n_draws and distributed.world() > 1:  # (the loss uses the decoder outside DDP's forward)
        if distributed.is_main():
            log.warning("lm_pretrain.softmax_samples is for one process; training with the full softmax")
        n_draws = 0
    if n_draws:
        loss_func = sample_lm_loss(model, lm_counts, n_draws, dtype or torch.float32)
    elif lm and run.fused_softmax and device.type == "cpu" and distributed.world() == 1:
        loss_func = fuse_lm_loss(model, dtype or torch.float32)  # (kept out of DDP, which wraps the forward)
    model = distributed.sync_batchnorm(model, device)
    learn = Learner(dls, model.to(device), loss_func=loss_func, opt_func=opt_func, splitter=groups,
                    metrics=metrics, cbs=cbs, path=path, model_dir=".")
    if not run.progress:  # no bars; EpochLog prints one line per epoch instead
        learn.remove_cb(ProgressCallback)
        learn.logger = lambda *_: None
    distributed.prepare_learner(learn, device)
    learn.create_opt()
    return learn


def fit_phases(learn: Learner, phases: list[Phase], tc: TrainConfig, stage: StageDir,
               extra_cbs: list[Callback] | None = None, extra_metrics: Callable[[], dict] | None = None,
               checkpoint_s: float | None = None, deadline: float | None = None,
               phase_cbs: Callable[[int], list[Callback]] | None = None) -> None:
    """Run the phases, each one cycle of `tc.schedule` (STLR by default) over discriminative LRs, resuming
    from `last.pt` if present.

    `checkpoint_s`: also checkpoint every so many seconds inside an epoch (None: at epoch ends only).
    `deadline` (a `time.time()`): past it, checkpoint and raise `TrainingPaused`.
    `phase_cbs`: phase index -> callbacks for that phase only (e.g. `multi.MaxLenSchedule`).
    """
    n_groups = len(learn.opt.param_lists)
    lrs = discriminative_lrs(tc.lr, n_groups, tc.lr_decay)
    state = read_progress(stage)
    start_phase, start_epoch = state["next"] if state else (0, 0)
    trim_logs(stage, (start_phase, start_epoch))
    mid_epoch = state if state and state.get("batch", 0) > 0 else None
    for i, ph in enumerate(phases):
        if i < start_phase:
            continue
        if ph.n_trainable >= n_groups:
            learn.unfreeze()
        else:
            learn.freeze_to(-ph.n_trainable)
        se = start_epoch if i == start_phase else 0
        if state is not None and i == start_phase:
            restore_progress(learn, state)
            if se == 0 and state.get("batch", 0) == 0:  # a new phase: freeze_to cleared the optimizer state
                learn.opt.clear_state()
        sched = ParamScheduler({"lr": lr_schedule(tc.schedule, lrs, tc.cut_frac, tc.ratio)})
        epoch_log = EpochLog(stage, i, se, extra_metrics)
        ckpt = Checkpointer(stage, i, se, epoch_log, checkpoint_s, mid_epoch if i == start_phase else None, deadline)
        learn.fit(ph.epochs, cbs=[sched, epoch_log, ckpt, *(extra_cbs or []), *(phase_cbs(i) if phase_cbs else [])],
                  start_epoch=se)
    distributed.verify_in_sync(learn.model, stage.path)
