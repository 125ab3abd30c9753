"""ULMFiT's schedules as small pure functions: discriminative LRs, STLR and gradual unfreezing.

STLR is the paper's schedule; fastai's one-cycle (cosine) and a constant LR are there for ablations
(`schedule: one_cycle | constant` in a training section).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from fastai.callback.schedule import combined_cos

SCHEDULES = ("stlr", "one_cycle", "constant")


def discriminative_lrs(lr: float, n_groups: int, decay: float = 2.6) -> np.ndarray:
    """LR per layer group, lowest group first: the top gets `lr`, each group below it `/ decay`."""
    return lr / decay ** np.arange(n_groups - 1, -1, -1, dtype=np.float64)


def stlr(pct: float | np.ndarray, cut_frac: float = 0.1, ratio: float = 32.0) -> float | np.ndarray:
    """Slanted triangular LR multiplier at training progress `pct` in [0, 1] (paper eq. 3).

    Rises linearly from 1/ratio to 1 over the first `cut_frac` of the steps, then falls linearly
    back to 1/ratio at the end.
    """
    pct = np.asarray(pct, dtype=np.float64)
    p = np.where(pct < cut_frac, pct / cut_frac, 1 - (pct - cut_frac) / (1 - cut_frac))
    out = (1 + p * (ratio - 1)) / ratio
    return out.item() if out.ndim == 0 else out


def stlr_schedule(lr_max: np.ndarray, cut_frac: float, ratio: float) -> Callable[[float], np.ndarray]:
    """A fastai `ParamScheduler` function: position in the fit -> LR per layer group."""
    lr_max = np.asarray(lr_max, dtype=np.float64)

    def sched(pos: float) -> np.ndarray:
        return lr_max * stlr(pos, cut_frac, ratio)

    return sched


def one_cycle_schedule(lr_max: np.ndarray, pct_start: float = 0.25, div: float = 25.0,
                       div_final: float = 1e5) -> Callable[[float], np.ndarray]:
    """fastai's `fit_one_cycle` LR schedule (its defaults): cosine from `lr_max / div` up to `lr_max` over
    the first `pct_start` of the steps, then cosine down to `lr_max / div_final`.

    Only the LR is scheduled: fit_one_cycle also cycles Adam's beta1 (0.95 -> 0.85 -> 0.95), but here beta1
    stays at the config's `betas[0]`, so an ablation against STLR changes the LR schedule and nothing else.
    """
    lr_max = np.asarray(lr_max, dtype=np.float64)
    return combined_cos(pct_start, lr_max / div, lr_max, lr_max / div_final)


def constant_schedule(lr_max: np.ndarray) -> Callable[[float], np.ndarray]:
    """The same LR (per layer group) at every step."""
    lr_max = np.asarray(lr_max, dtype=np.float64)
    return lambda pos: lr_max.copy()


def lr_schedule(kind: str, lr_max: np.ndarray, cut_frac: float = 0.1, ratio: float = 32.0
                ) -> Callable[[float], np.ndarray]:
    """The `ParamScheduler` function for a config's `schedule`: stlr, one_cycle or constant."""
    if kind == "stlr":
        return stlr_schedule(lr_max, cut_frac, ratio)
    if kind == "one_cycle":
        return one_cycle_schedule(lr_max)
    if kind == "constant":
        return constant_schedule(lr_max)
    raise ValueError(f"schedule {kind!r}: expected one of {SCHEDULES}")


@dataclass(frozen=True)
class Phase:
    """Train the top `n_trainable` layer groups (the rest frozen) for `epochs` epochs, one STLR cycle."""

    n_trainable: int
    epochs: int


def unfreeze_phases(n_groups: int, epochs: int, gradual: bool = True, max_trainable: int | None = None
                    ) -> list[Phase]:
    """Gradual unfreezing: epoch k trains the top k groups; epochs after all are unfrozen train all.

    With `gradual=False` every epoch trains all groups in one phase. `max_trainable` stops unfreezing
    at the top that many groups (1: the classifier head alone, on a frozen encoder).
    """
    if max_trainable is not None:
        n_groups = min(n_groups, max_trainable)
    if not gradual:
        return [Phase(n_groups, epochs)]
    n_last = min(epochs, n_groups)
    phases = [Phase(k, 1) for k in range(1, n_last)]
    return phases + [Phase(n_last, epochs - (n_last - 1))]


def trainable_by_epoch(phases: list[Phase]) -> list[int]:
    """How many top groups train in each epoch, in order."""
    return [ph.n_trainable for ph in phases for _ in range(ph.epochs)]
