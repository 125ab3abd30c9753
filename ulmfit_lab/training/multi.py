"""Training pieces for the label modes beyond one label per text (`data/labels.py`), and the progressive
sequence length (`classifier.max_len_schedule`).

- multi-label: fastai's `BCEWithLogitsLossFlat` (a sigmoid per label) and `accuracy_multi`; after training,
  a decision threshold per label tuned on the validation texts (`tune_thresholds`).
- multi-task: one output layer holds every task's logits side by side (the head's hidden layers are shared,
  like the encoder); `MultiTaskLoss` is the weighted sum of a cross-entropy per task's slice. One output
  layer keeps the model folder, the fast path, TorchScript and ONNX as they are: only the activation
  (a softmax per slice) knows about tasks.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch
from fastai.callback.core import Callback
from fastai.losses import BCEWithLogitsLossFlat
from fastai.metrics import accuracy, accuracy_multi
from torch import Tensor, nn
from torch.nn import functional as F

from ..data.labels import MULTI_LABEL, MULTI_TASK, LabelSpec
from .distributed import unwrap


class MultiTaskLoss(nn.Module):
    """Weighted sum over tasks of the cross-entropy of each task's logits (`bounds`) against its class index."""

    def __init__(self, bounds: Sequence[tuple[int, int]], weights: Sequence[float]):
        super().__init__()
        self.bounds, self.weights = list(bounds), [float(w) for w in weights]

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        return sum(w * F.cross_entropy(logits[:, a:b].float(), target[:, i].long())
                   for i, ((a, b), w) in enumerate(zip(self.bounds, self.weights)))

    def activation(self, logits: Tensor) -> Tensor:  # fastai's get_preds: probabilities, a softmax per task
        return torch.cat([torch.softmax(logits[:, a:b], dim=-1) for a, b in self.bounds], dim=1)


def task_accuracy(bounds: Sequence[tuple[int, int]]) -> Callable[[Tensor, Tensor], Tensor]:
    """A fastai metric: the mean over tasks of each task's accuracy."""
    def task_accuracy(inp: Tensor, targ: Tensor) -> Tensor:
        accs = [(inp[:, a:b].argmax(-1) == targ[:, i]).float().mean() for i, (a, b) in enumerate(bounds)]
        return torch.stack(accs).mean()
    return task_accuracy


def loss_and_metrics(spec: LabelSpec, task_weights: dict[str, float] | None = None) -> tuple[nn.Module | None, list]:
    """(loss, metrics) of a label mode; loss None: the learner's default (cross-entropy), single-label."""
    if spec.mode == MULTI_LABEL:
        return BCEWithLogitsLossFlat(), [accuracy_multi]
    if spec.mode == MULTI_TASK:
        weights = [(task_weights or {}).get(t, 1.0) for t in spec.task_names]
        return MultiTaskLoss(spec.bounds(), weights), [task_accuracy(spec.bounds())]
    return None, [accuracy]


def targets_array(spec: LabelSpec, column: Sequence) -> np.ndarray:
    """The data stage's `label` column as the loaders want it: class indices; multi-label: float 0/1 rows."""
    if spec.mode == MULTI_LABEL:
        return np.asarray(list(column), dtype=np.float32).reshape(-1, len(spec.classes))
    if spec.mode == MULTI_TASK:
        return np.asarray(list(column), dtype=np.int64).reshape(-1, len(spec.tasks))
    return np.asarray(column, dtype=np.int64)


def tune_thresholds(proba: np.ndarray, y: np.ndarray, grid: np.ndarray | None = None) -> list[float]:
    """Per label, the threshold on `proba` that maximises that label's F1 against the 0/1 `y`.

    Ties go to the threshold nearest 0.5; a label with no positive in `y` keeps 0.5 (nothing to tune on).
    """
    grid = np.round(np.arange(0.05, 0.951, 0.05), 2) if grid is None else np.asarray(grid)
    out = []
    for j in range(y.shape[1]):
        pos = y[:, j] > 0.5
        if not pos.any():
            out.append(0.5)
            continue
        pred = proba[:, j][None, :] >= grid[:, None]  # (thresholds, texts)
        tp = (pred & pos).sum(1)
        f1 = 2 * tp / (pred.sum(1) + pos.sum())
        best = np.flatnonzero(f1 >= f1.max() - 1e-12)
        out.append(float(grid[best[np.argmin(np.abs(grid[best] - 0.5))]]))
    return out


class MaxLenSchedule(Callback):
    """Progressive sequence length: the encoder's BPT3C `max_len` per block of epochs.

    The run's epochs (over every unfreezing phase) fall into `len(schedule)` near-equal consecutive blocks
    (a schedule longer than the epochs keeps its last lengths);
    block k trains on at most `schedule[k]` tokens of each text (its last ones, whose outputs BPT3C pools).
    `offset`: the epochs of earlier phases. After training the model reads `final` tokens again
    (`classifier.max_len`).

    Why the inputs are cut too: fastai's `SentenceEncoder` runs the LSTM over every chunk of a text and only
    drops the outputs before the last `max_len` tokens, so a shorter `max_len` alone saves only part of the
    backward pass. A block shorter than `final` therefore trains on the chunks BPT3C keeps (cut at a chunk
    boundary, so the chunks stay aligned and its pad-row bookkeeping holds): the LSTM starts there from a zero
    state instead of the state the earlier text left, and forward and backward both shrink. Validation reads
    whole texts.
    """

    order = 5

    def __init__(self, schedule: Sequence[int], total_epochs: int, offset: int, final: int):
        # more lengths than epochs (e.g. `epochs=2` over the quickstart's three): the last ones, longest last
        self.schedule = list(schedule)[-max(1, total_epochs):]
        self.total, self.offset, self.final = total_epochs, offset, final

    def length_at(self, epoch: int) -> int:
        return self.schedule[min(len(self.schedule) - 1, epoch * len(self.schedule) // self.total)]

    def before_epoch(self):
        unwrap(self.model)[0].max_len = self.length_at(self.offset + self.epoch)

    def before_batch(self):
        enc = unwrap(self.model)[0]
        x = self.xb[0]
        if not self.training or enc.max_len >= self.final or x.shape[1] <= enc.max_len:
            return
        start = -(-(x.shape[1] - enc.max_len) // enc.bptt) * enc.bptt  # the first chunk whose outputs are pooled
        self.learn.xb = (x[:, start:], *self.xb[1:])

    def after_fit(self):
        unwrap(self.model)[0].max_len = self.final
