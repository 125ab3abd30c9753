"""Label modes: one label per text (single), a set of labels per text (multi-label), or one label per task
(multi-task), and how each lays out the classifier's outputs.

The mode follows from the data config: several `data.label_column`s make a multi-task problem; a
`data.label_sep`, or label cells that are lists, a multi-label one; else it is single-label, which keeps
every code path it had. In memory a multi-label or multi-task row holds a tuple in the `label` column (the
text's labels, sorted; or one value per task, in task order), so splitting, sampling and fingerprinting
handle all modes alike.

The classifier has one output layer in every mode (`n_outputs` logits): the labels' logits side by side
(sigmoid each), or the tasks' logits side by side (softmax each task's slice, `bounds`).

Multi-task labels may be partial: a missing cell (NaN, None, empty string) means "not labelled for this task"
(e.g. a complaint's reason, given for negative tweets only). It is None in the row's tuple and target
`IGNORE` in the stored class indices, which the loss and metrics skip (`training/multi.py`). A row needs a
label in at least one task.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from ..config import DataConfig, label_columns
from .tables import DataError

SINGLE, MULTI_LABEL, MULTI_TASK = "single", "multi_label", "multi_task"
MODES = (SINGLE, MULTI_LABEL, MULTI_TASK)
DEFAULT_SEP = "|"  # how a multi-label prediction file joins a text's labels when training named no separator
IGNORE = -1  # a multi-task row's target for a task it is not labelled for


def is_missing(v: Any) -> bool:
    """A multi-task cell without a label: None, NaN (pandas' NA too) or a blank string."""
    if isinstance(v, str):
        return v.strip() == ""
    return v is None or v is pd.NA or (isinstance(v, (float, np.floating)) and bool(np.isnan(v)))


def _scalar(x: Any) -> Any:
    return x.item() if isinstance(x, np.generic) else x


def _sort_key(x: Any) -> tuple:
    return (str(type(x)), x)


@dataclass(frozen=True)
class LabelSpec:
    """The label mode and the classifier's output columns.

    Attributes:
        mode: `single`, `multi_label` or `multi_task`.
        classes: single and multi-label: the label of each output column.
        tasks: multi-task: each task's name and classes, in output order.
        sep: multi-label: the separator of labels in a text cell (None: lists, or `|` when written).
    """

    mode: str = SINGLE
    classes: tuple = ()
    tasks: tuple[tuple[str, tuple], ...] = ()
    sep: str | None = None

    @property
    def n_outputs(self) -> int:
        return sum(len(c) for _, c in self.tasks) if self.mode == MULTI_TASK else len(self.classes)

    @property
    def task_names(self) -> list[str]:
        return [t for t, _ in self.tasks]

    def bounds(self) -> list[tuple[int, int]]:
        """(start, stop) of each task's logits (one slice over all outputs unless multi-task)."""
        if self.mode != MULTI_TASK:
            return [(0, len(self.classes))]
        out, start = [], 0
        for _, classes in self.tasks:
            out.append((start, start + len(classes)))
            start += len(classes)
        return out

    @property
    def output_names(self) -> list:
        """The label of each output column: the classes, or `task:class` for a multi-task model."""
        if self.mode == MULTI_TASK:
            return [f"{t}:{c}" for t, classes in self.tasks for c in classes]
        return list(self.classes)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready (a data stage's result); `from_dict` reads it back."""
        return {"mode": self.mode, "classes": list(self.classes),
                "tasks": {t: list(c) for t, c in self.tasks}, "sep": self.sep}

    @classmethod
    def from_dict(cls, d: dict[str, Any] | None, classes: Sequence = ()) -> LabelSpec:
        """From `to_dict`'s output; an empty dict (a result written before label modes) is single-label."""
        if not d:
            return cls(SINGLE, tuple(classes))
        return cls(d["mode"], tuple(d.get("classes", ())), tuple((t, tuple(c)) for t, c in d.get("tasks", {}).items()),
                   d.get("sep"))

    # ---------------------------------------------------------------- targets

    def targets(self, labels: Sequence) -> list:
        """What the data stage stores per row: a class index (single), a 0/1 vector over `classes`
        (multi-label), or a class index per task (multi-task; `IGNORE` where the row has no label for it)."""
        if self.mode == SINGLE:
            index = {c: i for i, c in enumerate(self.classes)}
            return [index[y] for y in labels]
        if self.mode == MULTI_LABEL:
            index = {c: i for i, c in enumerate(self.classes)}
            out = []
            for ys in labels:
                row = [0] * len(self.classes)
                for y in ys:
                    row[index[y]] = 1
                out.append(row)
            return out
        indexes = [{c: i for i, c in enumerate(classes)} for _, classes in self.tasks]
        return [[IGNORE if y is None else idx[y] for idx, y in zip(indexes, ys)] for ys in labels]


# ---------------------------------------------------------------- from the data config and the data


def is_multi_task(cfg: DataConfig) -> bool:
    return len(label_columns(cfg)) > 1


def has_list_cells(values: pd.Series) -> bool:
    return bool(values.map(lambda v: isinstance(v, (list, tuple, set, frozenset, np.ndarray))).any())


def mode_of(cfg: DataConfig, labels: pd.Series | None = None) -> str:
    """The label mode of `cfg` (and, for list cells, of the label column `labels`)."""
    if is_multi_task(cfg):
        return MULTI_TASK
    if cfg.label_sep is not None or (labels is not None and has_list_cells(labels)):
        return MULTI_LABEL
    return SINGLE


def parse_label_sets(values: pd.Series, sep: str | None, where: str, drop_invalid: bool
                     ) -> tuple[pd.Series, np.ndarray]:
    """Each cell as a sorted tuple of labels: a list (or tuple, set, array), or a string cut at `sep`.

    Returns:
        (the tuples, a mask of the rows with no label at all; empty when such rows are an error).

    Raises:
        DataError: a row without labels (unless `drop_invalid`), or labels that are neither strings nor integers.
    """
    def parse(v: Any) -> tuple:
        if isinstance(v, (list, tuple, set, frozenset, np.ndarray)):
            items = [_scalar(x) for x in v]
        elif isinstance(v, str):
            items = v.split(sep) if sep is not None else [v]
        elif v is None or (isinstance(v, float) and np.isnan(v)):
            items = []
        else:
            items = [_scalar(v)]
        items = [x.strip() if isinstance(x, str) else x for x in items]
        return tuple(sorted({x for x in items if not (isinstance(x, str) and x == "")}, key=_sort_key))

    sets = values.map(parse)
    empty = (sets.map(len) == 0).to_numpy()
    if empty.any() and not drop_invalid:
        rows = np.flatnonzero(empty)
        raise DataError(
            f"{where}: {len(rows)} row(s) have an empty label list (first rows: {rows[:5].tolist()}, counted from 0 "
            f"after the header; e.g. {values.iloc[int(rows[0])]!r}); multi-label training expects at least one "
            "label per text. Give such texts a label of their own (e.g. 'none'), or set data.drop_invalid=true "
            "to drop them")
    kinds = {type(x).__name__ for s in sets for x in s}
    if not kinds <= {"str", "int"} or len(kinds) > 1:
        raise DataError(f"{where}: labels in the lists must be all strings or all integers; found "
                        f"{sorted(kinds)}. Convert the label column")
    return sets, empty


def spec_from_train(mode: str, train_labels: pd.Series, tasks: Sequence[str] = (), sep: str | None = None
                    ) -> LabelSpec:
    """The spec that the train split defines: every label (or each task's classes) seen there, sorted
    (a multi-task row's None, no label for that task, is no class)."""
    if mode == SINGLE:
        return LabelSpec(SINGLE, tuple(sorted(train_labels.unique().tolist(), key=_sort_key)))
    if mode == MULTI_LABEL:
        return LabelSpec(MULTI_LABEL, tuple(sorted({y for ys in train_labels for y in ys}, key=_sort_key)), sep=sep)
    per_task = [sorted({ys[i] for ys in train_labels} - {None}, key=_sort_key) for i in range(len(tasks))]
    return LabelSpec(MULTI_TASK, tasks=tuple((t, tuple(c)) for t, c in zip(tasks, per_task)))


def labelled_rows(spec: LabelSpec, labels: pd.Series) -> list[int]:
    """Multi-task: how many rows of `labels` carry a label for each task."""
    return [int(labels.map(lambda ys, i=i: ys[i] is not None).sum()) for i in range(len(spec.tasks))]


def check_spec(spec: LabelSpec, where: str, n_rows: int, labelled: Sequence[int] | None = None) -> None:
    """A model needs two classes per task, and two labels for a multi-label problem (expected / found / what to do).

    `labelled`: multi-task, the rows labelled for each task (default: all `n_rows`).
    """
    if spec.mode == MULTI_TASK:
        for (task, classes), n in zip(spec.tasks, labelled or [n_rows] * len(spec.tasks)):
            if len(classes) < 2:
                found = f"one class ({classes[0]!r})" if classes else "no label"
                raise DataError(f"{where}: task {task!r} has {found} in {n} labelled of {n_rows} rows; each task "
                                "needs at least two classes. Check the column, or drop it from data.label_column")
    elif spec.mode == MULTI_LABEL and len(spec.classes) < 2:
        raise DataError(f"{where}: only one label ({spec.classes[0]!r}) occurs in {n_rows} rows; multi-label "
                        "training needs at least two. Check data.label_column and data.label_sep")


def unseen_labels(spec: LabelSpec, labels: pd.Series) -> tuple[list, np.ndarray, str]:
    """(labels of `labels` that `spec` does not know, mask of the rows with one, the task they belong to)."""
    if spec.mode == MULTI_TASK:
        for i, (task, classes) in enumerate(spec.tasks):
            known = set(classes)
            vals = labels.map(lambda ys, i=i: ys[i])
            bad = ~vals.isin(known).to_numpy() & vals.notna().to_numpy()  # (None: not labelled for the task)
            if bad.any():
                return sorted(set(vals[bad]), key=str), bad, f" of task {task!r}"
        return [], np.zeros(len(labels), dtype=bool), ""
    known = set(spec.classes)
    if spec.mode == MULTI_LABEL:
        bad = labels.map(lambda ys: any(y not in known for y in ys)).to_numpy(dtype=bool)
        return sorted({y for ys in labels[bad] for y in ys if y not in known}, key=str), bad, ""
    bad = ~labels.isin(known).to_numpy()
    return sorted(set(labels[bad]), key=str), bad, ""

