"""The fastai callbacks `fit_phases` trains with, one job each.

- `EpochLog`: each epoch's metrics row (`metrics.jsonl`, and a printed line when no progress bar shows the
  epoch) and the learning rates of every batch (`lr_trace.jsonl`);
- `Checkpointer`: `last.pt` at every epoch end and every `every_s` seconds inside one (an LM epoch over a
  large corpus takes hours on a CPU), the pause at `deadline`, and the exact replay of an epoch that a
  mid-epoch checkpoint interrupted;
- `TokenCounter`: tokens and samples trained, for tokens/s; `CpuAutocast`: bf16 on the CPU.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Callable
from typing import Any

import torch
from fastai.callback.core import Callback
from fastai.callback.progress import ProgressCallback
from fastai.torch_core import to_float

from . import distributed
from .checkpointing import epoch_end_state, mid_epoch_state, own_part, save_progress
from .distributed import take_rows, unwrap
from .rundir import StageDir

log = logging.getLogger(__name__)


class TrainingPaused(RuntimeError):
    """Training stopped at its time budget (`run.stop_after_minutes`) after a checkpoint; rerun to go on."""


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


class EpochLog(Callback):
    """One row per epoch in `metrics.jsonl`, and the LR of every group at every batch in `lr_trace.jsonl`.

    Rank 0 writes. Epochs before `start_epoch` (trained before a resume) are logged already. `extra`: more
    values for each row.
    """

    order = 65  # after Recorder (50), ParamScheduler (60) and TokenCounter (64)

    def __init__(self, stage: StageDir, phase: int, start_epoch: int, extra: Callable[[], dict] | None = None):
        self.stage, self.phase, self.start_epoch, self.extra = stage, phase, start_epoch, extra

    def before_epoch(self):
        self.t0 = time.time()
        self.lr_trace: list[list[float]] = []

    def after_batch(self):
        if self.training and self.epoch >= self.start_epoch:
            self.lr_trace.append([float(h["lr"]) for h in self.opt.hypers])

    def so_far(self) -> dict:
        """The epoch's log up to now, for a mid-epoch checkpoint."""
        return {"lr_trace": self.lr_trace, "seconds": time.time() - self.t0}

    def go_on(self, so_far: dict) -> None:
        """Continue the log `so_far` of an epoch resumed in its middle."""
        self.lr_trace = so_far["lr_trace"]
        self.t0 -= so_far["seconds"]

    def after_epoch(self):
        if self.epoch < self.start_epoch:  # fastai still calls after_epoch for skipped epochs
            return
        row = self._row()
        if not distributed.is_main():
            return
        self.stage.log_metrics(row)
        if not any(isinstance(cb, ProgressCallback) for cb in self.learn.cbs):
            shown = " ".join(f"{k} {v:.4g}" for k, v in row.items() if isinstance(v, float) and k != "seconds")
            log.info(f"{self.stage.path.name} phase {self.phase} epoch {self.epoch}: {shown} ({row['seconds']} s)")
        with open(self.stage.path / "lr_trace.jsonl", "a", encoding="utf-8") as f:
            f.write(json.dumps({"phase": self.phase, "epoch": self.epoch, "trainable": row["trainable_groups"],
                                "lrs": self.lr_trace}) + "\n")

    def _row(self) -> dict[str, Any]:
        names = [n for n in self.recorder.metric_names if n not in ("epoch", "time")]
        row: dict[str, Any] = {"phase": self.phase, "epoch": self.epoch}
        row.update({n: _num(v) for n, v in zip(names, self.recorder.log[1:])})
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
        return row


class Checkpointer(Callback):
    """`last.pt` at each epoch end and every `every_s` seconds inside an epoch; the pause at `deadline`.

    Given `resume` (a mid-epoch checkpoint of epoch `start_epoch`), it replays that epoch from the first
    batch not yet trained: the same sample order, loader and torch RNGs, LM hidden state, STLR position and
    `epoch_log` so far.
    """

    order = 66  # after EpochLog, whose LR trace of the batch just trained a checkpoint holds

    def __init__(self, stage: StageDir, phase: int, start_epoch: int, epoch_log: EpochLog,
                 every_s: float | None = None, resume: dict | None = None, deadline: float | None = None):
        self.stage, self.phase, self.start_epoch, self.epoch_log = stage, phase, start_epoch, epoch_log
        self.every_s, self.resume, self.deadline = every_s, resume, deadline

    def before_epoch(self):
        self.skipped = 0  # batches of this epoch trained before a resume

    def before_train(self):
        self.t_ckpt = time.time()
        rs, self.resume = self.resume, None
        if rs and self.epoch == self.start_epoch:
            self._replay(rs)

    def _replay(self, rs: dict) -> None:
        dl = self.dls.train
        self.skipped = int(rs["batch"])
        dl.replay = {"order": rs["order"], "skip": self.skipped, "rng": rs["dl_rng"]}
        for _ in range(self.skipped):  # STLR goes on where it stopped (summed as fastai does, bit for bit)
            self.learn.pct_train += 1.0 / (len(dl) * self.n_epoch)
        self.learn.train_iter += self.skipped
        self.epoch_log.go_on(rs["log"])
        own = own_part(rs)
        self.learn.tokens_seen = own.get("tokens", rs["log"]["tokens"])
        self.learn.samples_seen = own.get("samples", rs["log"].get("samples", 0))
        self.restore = rs  # hidden state and torch RNG: at the first batch, after the loader drew its seed
        if distributed.is_main():
            log.info(f"{self.stage.path.name}: resuming phase {self.phase} epoch {self.epoch} "
                     f"at batch {self.skipped}/{len(dl)}")

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
        torch.set_rng_state(own_part(rs).get("torch_rng", rs["torch_rng"]))

    def after_batch(self):
        if not self.training or self.epoch < self.start_epoch:
            return
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
        state = mid_epoch_state(self.learn, self.skipped + self.iter + 1, self.epoch_log.so_far())
        save_progress(self.learn, self.stage, (self.phase, self.epoch), state)

    def after_epoch(self):
        if self.epoch < self.start_epoch:  # fastai still calls after_epoch for skipped epochs
            return
        last = self.epoch + 1 == self.n_epoch
        nxt = (self.phase + 1, 0) if last else (self.phase, self.epoch + 1)
        save_progress(self.learn, self.stage, nxt, epoch_end_state(self.learn))


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
