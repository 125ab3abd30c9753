"""What the stages share: the run context, typed results, and the skip-if-done wrapper."""

from __future__ import annotations

import dataclasses
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import torch
from fastai.torch_core import set_seed

from ..config import Config
from ..device import pick_device
from ..plots import plot_stage
from ..training import distributed
from ..training.rundir import StageDir, stage_key

R = TypeVar("R")
log = logging.getLogger(__name__)
log.addFilter(distributed.main_only)  # every rank runs the stages; rank 0 alone reports them


def default_cache_dir() -> Path:
    return Path(os.environ.get("ULMFIT_LAB_CACHE", Path.home() / ".cache" / "ulmfit_lab"))


@dataclass(frozen=True)
class Context:
    """One run: its config, its folder, the device and the cache. Stages read nothing else."""

    cfg: Config
    run_dir: Path
    device: torch.device
    cache_dir: Path
    suffix: str = ""  # stage folders of the backward models end in `_bwd`
    deadline: float | None = None  # time.time() at which training pauses (run.stop_after_minutes)

    @classmethod
    def create(cls, cfg: Config) -> Context:
        cache = Path(cfg.run.cache_dir) if cfg.run.cache_dir else default_cache_dir()
        budget = cfg.run.stop_after_minutes
        # launched as N processes (torchrun): join the process group; this rank's GPU
        return cls(cfg, Path(cfg.run.dir), distributed.setup(pick_device(cfg.run)), cache,
                   deadline=None if budget is None else time.time() + 60 * budget)

    def for_direction(self, direction: str) -> Context:
        """The context of one direction's models (`fwd` or `bwd`)."""
        return dataclasses.replace(self, cfg=self.cfg.for_direction(direction),
                                   suffix="" if direction == "fwd" else f"_{direction}")

    def stage(self, name: str, version: int, *parts: Any) -> StageDir:
        return StageDir(self.run_dir / f"{name}{self.suffix}", stage_key(name, version, *parts))

    @property
    def checkpoint_s(self) -> float | None:
        """Seconds between mid-epoch checkpoints (None: at epoch ends only)."""
        m = self.cfg.run.checkpoint_minutes
        return None if m is None else 60.0 * m


@dataclass(frozen=True)
class StageResult:
    """Base of every stage's result: where it wrote, its key and its metrics."""

    dir: str
    key: str
    metrics: dict[str, Any] = field(default_factory=dict)
    skipped: bool = False

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d.pop("skipped")
        return d

    @classmethod
    def from_dict(cls: type[R], d: dict[str, Any], **extra: Any) -> R:
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in {**d, **extra}.items() if k in names})


def run_cached(ctx: Context, stage: StageDir, cls: type[R], snapshot: dict[str, Any],
               body: Callable[[], dict[str, Any]]) -> R:
    """Skip the stage if its marker carries the same key; else run `body` and write the marker last.

    Distributed: rank 0 decides and writes; every rank runs `body` (training) and returns rank 0's result.
    """
    name = stage.path.name  # the folder's name (classifier_bwd), which tells the directions apart in logs
    done = distributed.broadcast(stage.done())
    if done is not None:
        log.info(f"{name}: up to date (key {stage.key}), skipped")
        return cls.from_dict(done, skipped=True)
    log.info(f"{name}: running -> {stage.path}")
    if distributed.is_main():
        stage.start(snapshot)
    set_seed(ctx.cfg.run.seed)
    result = body()

    def finish() -> dict[str, Any]:
        plot_stage(stage.path)
        result.update(dir=str(stage.path), key=stage.key)
        stage.finish(result)
        (stage.path / "last.pt").unlink(missing_ok=True)  # only needed to resume an unfinished stage
        return result

    return cls.from_dict(distributed.on_main(finish))
