"""The one training helper every stage shares: a fastai `Learner` with ULMFiT's schedule.

Phases (gradual unfreezing) each run one STLR cycle over discriminative LRs. After every epoch the
model and optimizer go to `last.pt` (atomically) with the position reached, so a killed run resumes
at the next epoch instead of starting over.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

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
from fastai.torch_core import to_float
from fastcore.foundation import L
from torch import nn

from ..config import RunConfig, TrainConfig
from ..device import amp_dtype
from ..fileio import atomic_path, write_text
from . import distributed
from .distributed import merge_rows, take_rows, unwrap
from .fused import fuse_lm_loss, sample_lm_loss
from .loaders import rng_state
from .rundir import StageDir
from .schedules import Phase, discriminative_lrs, lr_schedule


class CpuAutocast(Callback):
    """bf16 autocast on the CPU (fastai's `MixedPrecision` is CUDA only). bf16 needs no loss scaling."""

    order = 10

    def before_batch(self):
        self.ctx = torch.autocast("cpu", dtype=torch.bfloat16)
        self.ctx.__enter__()

    def after_pred(self):
        self.learn.pred = to_float(self.pred)

    def after_loss(self):
        self.ctx.__exit__(None, None, None)


class TrainingPaused(RuntimeError):
    """Training stopped at its time budget (`run.stop_after_minutes`) after a checkpoint; rerun to go on."""


class EpochLogger(Callback):
    """Logs each epoch to `metrics.jsonl` and checkpoints to `last.pt`: at every epoch end, and every
    `every_s` seconds mid-epoch (an LM epoch over a large corpus takes hours on a CPU).

    A mid-epoch checkpoint carries what an exact continuation needs: the epoch's sample order, the
    loaders' and torch's RNG states, the LM's hidden state and the epoch's log so far. Given `resume`
    (such a checkpoint) it replays the interrupted epoch from the first batch not yet trained.
    """

    order = 65  # after Recorder (50) and ParamScheduler (60); before_train after ModelResetter (0)

    def __init__(self, stage: StageDir, phase: int, phases: list[Phase], start_epoch: int,
                 extra: Callable[[], dict] | None = None, every_s: float | None = None, resume: dict | None = None,
                 deadline: float | None = None):
        self.stage, self.phase, self.phases, self.start_epoch = stage, phase, phases, start_epoch
        self.extra, self.every_s, self.resume, self.deadline = extra, every_s, resume, deadline

    def before_epoch(self):
        self.t0 = time.time()
        self.lr_trace: list[list[float]] = []
        self.skipped = 0  # batches of this epoch trained before a resume

    def before_train(self):
        self.t_ckpt = time.time()
        rs, self.resume = self.resume, None
        if not rs or self.epoch != self.start_epoch:
            return
        dl = self.dls.train
        self.skipped = int(rs["batch"])
        dl.replay = {"order": rs["order"], "skip": self.skipped, "rng": rs["dl_rng"]}
        for _ in range(self.skipped):  # STLR goes on where it stopped (summed as fastai does, bit for bit)
            self.learn.pct_train += 1.0 / (len(dl) * self.n_epoch)
        self.learn.train_iter += self.skipped
        self.lr_trace = rs["log"]["lr_trace"]
        self.t0 -= rs["log"]["seconds"]
        own = _own(rs)
        self.learn.tokens_seen = own.get("tokens", rs["log"]["tokens"])
        self.learn.samples_seen = own.get("samples", rs["log"].get("samples", 0))
        self.restore = rs  # hidden state and torch RNG: at the first batch, after the loader drew its seed
        if distributed.is_main():
            print(f"[ulmfit-lab] {self.stage.path.name}: resuming phase {self.phase} epoch {self.epoch} "
                  f"at batch {self.skipped}/{len(dl)}", flush=True)

    def before_batch(self):
        rs, self.restore = getattr(self, "restore", None), None
        if rs is None:
            return
        if rs.get("hidden") is not None:  # the LM carries its hidden state from batch to batch
            enc = unwrap(self.model)[0]
            r, n = distributed.rank(), distributed.world()  # the checkpoint holds all `bs` rows; ours: r::n
            enc.hidden = [(take_rows(h, r, n).to(self.dls.device), take_rows(c, r, n).to(self.dls.device))
                          for h, c in rs["hidden"]]
            enc.bs = enc.hidden[0][0].shape[1]
        torch.set_rng_state(_own(rs).get("torch_rng", rs["torch_rng"]))

    def after_batch(self):
        if not self.training or self.epoch < self.start_epoch:
            return
        self.lr_trace.append([float(h["lr"]) for h in self.opt.hypers])
        inside = self.iter + 1 < self.n_iter - self.skipped  # the last batch gets the epoch-end checkpoint
        # the ranks of a distributed run must decide together (the checkpoint gathers from all of them)
        if inside and self.deadline is not None and distributed.agree(time.time() >= self.deadline):
            self._checkpoint_mid_epoch()
            raise TrainingPaused(f"{self.stage.path.name}: paused at its time budget (run.stop_after_minutes) "
                                 f"in epoch {self.epoch}, batch {self.skipped + self.iter + 1}; rerun the same "
                                 "command to continue from there")
        due = self.every_s is not None and distributed.agree(time.time() - self.t_ckpt >= self.every_s)
        if inside and due:
            self._checkpoint_mid_epoch()
            self.t_ckpt = time.time()

    def _checkpoint_mid_epoch(self):
        dl = self.dls.train
        hidden = getattr(unwrap(self.model)[0], "hidden", None)
        hidden = [(h.detach().cpu(), c.detach().cpu()) for h, c in hidden] if hidden else None
        ranks = distributed.gather({"torch_rng": torch.get_rng_state(), "hidden": hidden,
                                    "tokens": int(getattr(self.learn, "tokens_seen", 0)),
                                    "samples": int(getattr(self.learn, "samples_seen", 0))})
        if hidden is not None:  # every rank's rows back into the global batch's order
            hidden = [tuple(merge_rows([rk["hidden"][i][j] for rk in ranks]) for j in (0, 1))
                      for i in range(len(hidden))]
        state = {
            "batch": self.skipped + self.iter + 1,
            "order": dl.epoch_order,
            "dl_rng": dl.rng.getstate(),
            "torch_rng": ranks[0]["torch_rng"],
            "hidden": hidden,
            "log": {"lr_trace": self.lr_trace, "seconds": time.time() - self.t0,
                    "tokens": sum(rk["tokens"] for rk in ranks), "samples": sum(rk["samples"] for rk in ranks)},
        }
        if len(ranks) > 1:  # what differs between ranks: their RNGs (dropout) and counts
            state["ranks"] = [{k: rk[k] for k in ("torch_rng", "tokens", "samples")} for rk in ranks]
        save_progress(self.learn, self.stage, (self.phase, self.epoch), state)

    def after_epoch(self):
        if self.epoch < self.start_epoch:  # fastai still calls after_epoch for skipped epochs
            return
        names = [n for n in self.recorder.metric_names if n not in ("epoch", "time")]
        values = self.recorder.log[1:]
        row: dict[str, Any] = {"phase": self.phase, "epoch": self.epoch}
        row.update({n: _num(v) for n, v in zip(names, values)})
        row["trainable_groups"] = [any(p.requires_grad for p in g) for g in self.opt.param_lists]
        row["lr_per_group_start_mid_end"] = _lr_summary(self.lr_trace)
        row["seconds"] = round(time.time() - self.t0, 2)
        n_tok = getattr(self, "tokens_seen", None)
        if n_tok:
            row["train_tokens_per_s"] = round(n_tok / max(row["seconds"], 1e-9), 1)
        row["train_samples"], row["train_tokens"] = int(getattr(self, "samples_seen", 0)), int(n_tok or 0)
        if distributed.world() > 1:
            row["world_size"] = distributed.world()
        if self.extra:
            row.update(self.extra())
        ranks = distributed.gather(torch.get_rng_state())  # each rank's dropout RNG, for an exact resume
        if distributed.is_main():
            self.stage.log_metrics(row)
            if not any(isinstance(cb, ProgressCallback) for cb in self.learn.cbs):
                shown = " ".join(f"{k} {v:.4g}" for k, v in row.items() if isinstance(v, float) and k != "seconds")
                print(f"[ulmfit-lab] {self.stage.path.name} phase {self.phase} epoch {self.epoch}: {shown} "
                      f"({row['seconds']} s)", flush=True)
            with open(self.stage.path / "lr_trace.jsonl", "a", encoding="utf-8") as f:
                f.write(json.dumps({"phase": self.phase, "epoch": self.epoch, "trainable": row["trainable_groups"],
                                    "lrs": self.lr_trace}) + "\n")
        last = self.epoch + 1 == self.n_epoch
        nxt = (self.phase + 1, 0) if last else (self.phase, self.epoch + 1)
        extra = {"dl_rng": self.dls.train.rng.getstate(), "torch_rng": ranks[0]}
        if len(ranks) > 1:
            extra["ranks"] = [{"torch_rng": t} for t in ranks]
        save_progress(self.learn, self.stage, nxt, extra)


def _own(state: dict) -> dict:
    """This rank's part of a checkpoint written by as many ranks; else nothing (use rank 0's)."""
    ranks = state.get("ranks")
    return ranks[distributed.rank()] if ranks and len(ranks) == distributed.world() else {}


def _num(v: Any) -> Any:
    try:
        f = float(v)
    except (TypeError, ValueError):
        return v
    return None if math.isnan(f) else f


def _lr_summary(trace: list[list[float]]) -> list[list[float]]:
    if not trace:
        return []
    return [trace[0], trace[len(trace) // 2], trace[-1]]


def _plain(obj: Any) -> Any:
    """numpy scalars -> Python numbers, fastcore `L` -> list, so the state loads with `weights_only=True`."""
    if isinstance(obj, dict):
        return {k: _plain(v) for k, v in obj.items()}
    if isinstance(obj, L):
        return [_plain(v) for v in obj]
    if isinstance(obj, (list, tuple)):
        return type(obj)(_plain(v) for v in obj)
    if isinstance(obj, np.generic):
        return obj.item()
    return obj


def save_progress(learn: Learner, stage: StageDir, next_pos: tuple[int, int], extra: dict | None = None) -> None:
    """`last.pt`: model, optimizer and where to go on (phase, epoch; `batch` > 0 inside an epoch).

    Written by rank 0 only: DDP keeps the model and optimizer equal on every rank.
    """
    if not distributed.is_main():
        return
    state = {"key": stage.key, "next": list(next_pos), "model": unwrap(learn.model).state_dict(),
             "opt": _plain(learn.opt.state_dict()), "np_rng": _np_rng_state(), "batch": 0, **(extra or {})}
    with atomic_path(stage.path / "last.pt") as tmp:
        torch.save(state, tmp)


def _np_rng_state() -> list:
    # fastai's SortedDL shuffles with numpy's global RNG; stored as plain lists for weights_only loading
    name, keys, pos, has_gauss, gauss = np.random.get_state()
    return [name, keys.tolist(), pos, has_gauss, gauss]


def trim_logs(stage: StageDir, before: tuple[int, int]) -> None:
    """Keep only the log rows of epochs before `before` (phase, epoch): a rerun or resume rewrites the rest."""
    if not distributed.is_main():
        return
    for name in ("metrics.jsonl", "lr_trace.jsonl"):
        path = stage.path / name
        if path.is_file():
            rows = [line for line in path.read_text(encoding="utf-8").splitlines() if _complete(line)]
            keep = [r for r in rows if tuple(json.loads(r)[k] for k in ("phase", "epoch")) < before]
            write_text(path, "".join(r + "\n" for r in keep))


def _complete(line: str) -> bool:
    """False for the half-written last line a killed run (or a full disk) can leave behind."""
    try:
        return isinstance(json.loads(line), dict)
    except ValueError:
        return False


def read_progress(stage: StageDir) -> dict | None:
    """`last.pt` if it belongs to this stage key (position `next`, `batch`, weights, optimizer, RNGs)."""
    path = stage.path / "last.pt"
    if not path.is_file():
        return None
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # a truncated file raises anything from EOFError to RuntimeError
        print(f"[ulmfit-lab] ignoring unreadable checkpoint {path} ({type(e).__name__}); restarting the stage")
        return None
    return state if state.get("key") == stage.key else None


def restore_progress(learn: Learner, state: dict) -> None:
    """Load weights, optimizer and RNG states; after freezing, which clears the optimizer state."""
    learn.model.load_state_dict(state["model"])
    learn.opt.load_state_dict(state["opt"])
    learn.opt.hypers = L(learn.opt.hypers)  # saved as a plain list
    name, keys, pos, has_gauss, gauss = state["np_rng"]
    np.random.set_state((name, np.asarray(keys, dtype=np.uint32), pos, has_gauss, gauss))
    if state.get("batch", 0) == 0 and "dl_rng" in state:  # at an epoch boundary: the next epoch's shuffle
        learn.dls.train.rng.setstate(rng_state(state["dl_rng"]))
        torch.set_rng_state(_own(state).get("torch_rng", state["torch_rng"]))
    phase, epoch = state["next"]
    if distributed.is_main():
        print(f"[ulmfit-lab] resuming at phase {phase}, epoch {epoch}, batch {state.get('batch', 0)}", flush=True)


class TokenCounter(Callback):
    """Counts non-pad training tokens (for tokens/s) and samples (rows) of this rank."""

    order = 64

    def before_epoch(self):
        self.learn.tokens_seen = 0
        self.learn.samples_seen = 0

    def after_batch(self):
        if self.training:
            x = self.xb[0]
            self.learn.tokens_seen += int((x != 1).sum())
            self.learn.samples_seen += x.shape[0]


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
            print("[ulmfit-lab] warning: lm_pretrain.softmax_samples is for one process; "
                  "training with the full softmax", flush=True)
        n_draws = 0
    if n_draws:
        loss_func = sample_lm_loss(model, lm_counts, n_draws, dtype or torch.float32)
    elif lm and run.fused_softmax and device.type == "cpu" and distributed.world() == 1:
        loss_func = fuse_lm_loss(model, dtype or torch.float32)  # (kept out of DDP, which wraps the forward)
    model = distributed.sync_batchnorm(model, device)
    learn = Learner(dls, model.to(device), loss_func=loss_func, opt_func=opt_func, splitter=groups,
                    metrics=metrics, cbs=cbs, path=path, model_dir=".")
    if not run.progress:  # no bars; EpochLogger prints one line per epoch instead
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
        logger = EpochLogger(stage, i, phases, se, extra_metrics, checkpoint_s,
                             mid_epoch if i == start_phase else None, deadline)
        learn.fit(ph.epochs, cbs=[sched, logger, *(extra_cbs or []), *(phase_cbs(i) if phase_cbs else [])],
                  start_epoch=se)
    distributed.verify_in_sync(learn.model, stage.path)
