"""Training pieces for the label modes beyond one label per text (`data/labels.py`), and the progressive
sequence length (`classifier.max_len_schedule`).

- multi-label: fastai's `BCEWithLogitsLossFlat` (a sigmoid per label) and `accuracy_multi`; after training,
  a decision threshold per label tuned on the validation texts (`tune_thresholds`).
- multi-task: one output layer holds every task's logits side by side (the head's hidden layers are shared,
  like the encoder); `MultiTaskLoss` is the weighted sum of a cross-entropy per task's slice. One output
  layer keeps the model folder, the fast path, TorchScript and ONNX as they are: only the activation
  (a softmax per slice) knows about tasks. A row not labelled for a task (target `IGNORE`) counts in
  neither that task's loss nor its accuracy.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from fastai.callback.core import Callback
from fastai.learner import Metric
from fastai.losses import BCEWithLogitsLossFlat, CrossEntropyLossFlat
from fastai.metrics import accuracy, accuracy_multi
from torch import Tensor, nn
from torch.nn import functional as F

from ..data.labels import IGNORE, MULTI_LABEL, MULTI_TASK, LabelSpec
from ..data.tables import DataError
from ..models.awd_lstm import activate
from .distributed import unwrap


class MultiTaskLoss(nn.Module):
    """Weighted sum over tasks of the cross-entropy of each task's logits (`bounds`) against its class index.

    Each task's cross-entropy is the mean over the rows labelled for it (target `IGNORE`: not labelled); a
    batch without such a row adds 0 for that task (not NaN, PyTorch's mean over no rows).
    """

    def __init__(self, bounds: Sequence[tuple[int, int]], weights: Sequence[float]):
        super().__init__()
        self.bounds, self.weights = list(bounds), [float(w) for w in weights]

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        total = logits.new_zeros((), dtype=torch.float32)
        for i, ((a, b), w) in enumerate(zip(self.bounds, self.weights)):
            t = target[:, i].long()
            ce = F.cross_entropy(logits[:, a:b].float(), t, ignore_index=IGNORE, reduction="sum")
            total = total + w * ce / (t != IGNORE).sum().clamp(min=1)
        return total

    def activation(self, logits: Tensor) -> Tensor:  # fastai's get_preds: probabilities, a softmax per task
        return activate(logits, bounds=self.bounds)


class TaskAccuracy(Metric):
    """A fastai metric: the mean over tasks of each task's accuracy over the rows labelled for it.

    Counted over the whole validation set, not averaged per batch: a batch may hold no row labelled for
    a task. A task with no labelled row at all is left out of the mean.
    """

    def __init__(self, bounds: Sequence[tuple[int, int]]):
        self.bounds = list(bounds)

    def reset(self):
        self.right, self.seen = torch.zeros(len(self.bounds)), torch.zeros(len(self.bounds))

    def accumulate(self, learn):
        pred, targ = learn.pred.detach(), learn.y.detach()
        for i, (a, b) in enumerate(self.bounds):
            labelled = targ[:, i] != IGNORE
            self.right[i] += (pred[labelled, a:b].argmax(-1) == targ[labelled, i]).sum().cpu()
            self.seen[i] += labelled.sum().cpu()

    @property
    def value(self):
        seen = self.seen > 0
        return (self.right[seen] / self.seen[seen]).mean() if seen.any() else None

    @property
    def name(self) -> str:
        return "task_accuracy"


def loss_and_metrics(spec: LabelSpec, task_weights: dict[str, float] | None = None,
                     class_weights: torch.Tensor | None = None, label_smoothing: float = 0.0
                     ) -> tuple[nn.Module | None, list]:
    """(loss, metrics) of a label mode; loss None: the learner's default (cross-entropy), single-label.
    `class_weights`: single-label, one loss weight per class (`class_weights_for`); `label_smoothing`:
    single-label, the share of the target spread over all classes."""
    if spec.mode == MULTI_LABEL:
        return BCEWithLogitsLossFlat(), [accuracy_multi]
    if spec.mode == MULTI_TASK:
        weights = [(task_weights or {}).get(t, 1.0) for t in spec.task_names]
        return MultiTaskLoss(spec.bounds(), weights), [TaskAccuracy(spec.bounds())]
    if class_weights is not None or label_smoothing:
        return CrossEntropyLossFlat(weight=class_weights, label_smoothing=label_smoothing), [accuracy]
    return None, [accuracy]


def class_weights_for(prior: dict[str, float], classes: Sequence, y: np.ndarray) -> np.ndarray:
    """Per class, prior / its share of the training targets `y` (class indices), scaled so the mean weight over
    the training texts is 1 (the loss keeps its size, so the learning rates keep their meaning).

    Raises:
        DataError: `prior` names a class the data lacks, leaves one out, or a class has no training text.
    """
    names, prior = [str(c) for c in classes], {str(k): float(v) for k, v in prior.items()}  # YAML: 0/1 keys are ints
    if set(prior) != set(names):
        raise DataError(f"classifier.class_prior: expected a share for each class {names}; found "
                        f"{sorted(prior)}. Name every class of the data once")
    counts = np.bincount(y, minlength=len(names)).astype(np.float64)
    if (counts == 0).any():
        raise DataError(f"classifier.class_prior: class(es) {[n for n, c in zip(names, counts) if c == 0]} have no "
                        "training text, so no weight can give them their share; label some, or drop the prior")
    target = np.array([prior[n] for n in names])
    # mean weight over the texts: sum_c (p_c / (n_c / N)) * n_c / N = sum_c p_c = 1, already
    return (target / target.sum()) / (counts / counts.sum())


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
