"""`last.pt`, the checkpoint a killed or paused stage resumes from: what it holds, and writing and reading it.

It holds the model, the optimizer, numpy's RNG and `next` = [phase, epoch], the position to go on from. At an
epoch end (`batch` 0) that is all, plus the loaders' and torch's RNGs for the next epoch's shuffle and
dropout. Inside an epoch (`batch` > 0) it also holds what an exact continuation needs: the epoch's sample
`order`, the LM's `hidden` state (every rank's rows, in the global batch's order) and the epoch's `log` so
far (LR trace, seconds, tokens and samples). A distributed run adds `ranks`: per rank, what differs between
them (their torch RNG, for dropout, and their counts). Everything loads with `torch.load(weights_only=True)`.
"""

from __future__ import annotations

import json
import logging
from typing import Any

import numpy as np
import torch
from fastai.learner import Learner
from fastcore.foundation import L

from ..fileio import atomic_path, write_text
from . import distributed
from .distributed import merge_rows, unwrap
from .loaders import rng_state
from .rundir import StageDir

log = logging.getLogger(__name__)


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


def epoch_end_state(learn: Learner) -> dict:
    """What `last.pt` adds at an epoch end: the RNGs of the next epoch (every rank's torch RNG: dropout).

    Every rank must call it (it gathers from all of them).
    """
    ranks = distributed.gather(torch.get_rng_state())
    extra = {"dl_rng": learn.dls.train.rng.getstate(), "torch_rng": ranks[0]}
    if len(ranks) > 1:
        extra["ranks"] = [{"torch_rng": t} for t in ranks]
    return extra


def mid_epoch_state(learn: Learner, batch: int, epoch_log: dict) -> dict:
    """What `last.pt` adds inside an epoch, before `batch` (counted from the epoch's start).

    `epoch_log`: the epoch's log so far (`lr_trace`, `seconds`). Every rank must call it (it gathers the
    ranks' RNGs, LM hidden rows and token and sample counts).
    """
    dl = learn.dls.train
    hidden = getattr(unwrap(learn.model)[0], "hidden", None)
    hidden = [(h.detach().cpu(), c.detach().cpu()) for h, c in hidden] if hidden else None
    ranks = distributed.gather({"torch_rng": torch.get_rng_state(), "hidden": hidden,
                                "tokens": int(getattr(learn, "tokens_seen", 0)),
                                "samples": int(getattr(learn, "samples_seen", 0))})
    if hidden is not None:  # every rank's rows back into the global batch's order
        hidden = [tuple(merge_rows([rk["hidden"][i][j] for rk in ranks]) for j in (0, 1))
                  for i in range(len(hidden))]
    state = {
        "batch": batch,
        "order": dl.epoch_order,
        "dl_rng": dl.rng.getstate(),
        "torch_rng": ranks[0]["torch_rng"],
        "hidden": hidden,
        "log": {**epoch_log, "tokens": sum(rk["tokens"] for rk in ranks),
                "samples": sum(rk["samples"] for rk in ranks)},
    }
    if len(ranks) > 1:  # what differs between ranks: their RNGs (dropout) and counts
        state["ranks"] = [{k: rk[k] for k in ("torch_rng", "tokens", "samples")} for rk in ranks]
    return state


def own_part(state: dict) -> dict:
    """This rank's part of a checkpoint written by as many ranks; else nothing (use rank 0's)."""
    ranks = state.get("ranks")
    return ranks[distributed.rank()] if ranks and len(ranks) == distributed.world() else {}


def read_progress(stage: StageDir) -> dict | None:
    """`last.pt` if it belongs to this stage key (position `next`, `batch`, weights, optimizer, RNGs)."""
    path = stage.path / "last.pt"
    if not path.is_file():
        return None
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # a truncated file raises anything from EOFError to RuntimeError
        log.info("ignoring unreadable checkpoint %s (%s); restarting the stage", path, type(e).__name__)
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
        torch.set_rng_state(own_part(state).get("torch_rng", state["torch_rng"]))
    phase, epoch = state["next"]
    if distributed.is_main():
        log.info("resuming at phase %s, epoch %s, batch %s", phase, epoch, state.get("batch", 0))


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


def _np_rng_state() -> list:
    # fastai's SortedDL shuffles with numpy's global RNG; stored as plain lists for weights_only loading
    name, keys, pos, has_gauss, gauss = np.random.get_state()
    return [name, keys.tolist(), pos, has_gauss, gauss]
