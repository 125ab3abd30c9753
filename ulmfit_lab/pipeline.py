"""Chain the stages. Each stage is skipped when its key (config + upstream keys) is unchanged."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import yaml

from .config import Config, ConfigError
from .data.sources import LabelledData
from .fileio import storage_errors, write_text
from .models.artifact import write_ensemble
from .stages import classifier, evaluate, lm, lm_finetune
from .stages import data as data_stage
from .stages.common import Context
from .training import distributed

Stage = Literal["data", "lm", "lm_finetune", "classifier", "evaluate"]
log = logging.getLogger(__name__)
log.addFilter(distributed.main_only)  # every rank runs the stages; rank 0 alone reports them
ORDER: list[str] = ["data", "lm", "lm_finetune", "classifier", "evaluate"]


@dataclass
class DirectionResult:
    """One direction's models (forward, or backward as in the paper's ensemble)."""

    lm: lm.LMResult | None = None
    lm_finetune: lm_finetune.LMFinetuneResult | None = None
    classifier: classifier.ClassifierResult | None = None


@dataclass
class PipelineResult:
    data: data_stage.DataResult | None = None
    directions: dict[str, DirectionResult] = field(default_factory=dict)
    evaluate: evaluate.EvalResult | None = None
    model_dir: str | None = None  # the classifier folder, or the ensemble folder of several directions
    seconds: float = 0.0

    def _first(self, name: str):
        return getattr(next(iter(self.directions.values())), name) if self.directions else None

    @property
    def lm(self) -> lm.LMResult | None:
        return self._first("lm")

    @property
    def lm_finetune(self) -> lm_finetune.LMFinetuneResult | None:
        return self._first("lm_finetune")

    @property
    def classifier(self) -> classifier.ClassifierResult | None:
        return self._first("classifier")

    def stages(self) -> dict[str, object]:
        out: dict[str, object] = {"data": self.data}
        for d, r in self.directions.items():
            sfx = "" if d == "fwd" else f"_{d}"
            out.update({f"lm{sfx}": r.lm, f"lm_finetune{sfx}": r.lm_finetune, f"classifier{sfx}": r.classifier})
        out["evaluate"] = self.evaluate
        return {k: v for k, v in out.items() if v is not None}

    def skipped(self) -> list[str]:
        return [n for n, r in self.stages().items() if r.skipped]


def run_pipeline(cfg: Config, until: Stage = "evaluate", data: LabelledData | None = None,
                 command: str | None = None) -> PipelineResult:
    """Run every stage up to `until`, skipping the ones already done with the same inputs.

    With `model.directions: [fwd, bwd]` the LM, LM fine-tuning and classifier stages run once per
    direction (the backward ones in `*_bwd` folders), and evaluation scores each and their ensemble.

    Args:
        cfg: the run's config.
        until: the last stage to run.
        data: labelled data from the Python API, instead of `cfg.data`'s files.
        command: the command line that started the run, kept in `command.txt` (model cards cite it).

    Returns:
        Each stage's typed result (artifact paths and metrics).
    """
    if until not in ORDER:
        raise ValueError(f"until={until!r}: expected one of {ORDER}")
    t0 = time.time()
    ctx = Context.create(cfg)
    res = PipelineResult()
    stop = ORDER.index(until)
    errors = distributed.check_batch_sizes(cfg, distributed.world())
    if errors:
        raise ConfigError("; ".join(errors))
    # distributed: rank 0 holds the lock and writes; data and evaluation run on rank 0 alone (`on_main`),
    # the training stages on every rank. Disk full: StorageError naming the file
    with distributed.main_lock(ctx.run_dir), storage_errors(ctx.run_dir):
        if distributed.is_main():
            write_text(ctx.run_dir / "config.yaml", yaml.safe_dump(cfg.to_dict(), sort_keys=False))
            if command:
                write_text(ctx.run_dir / "command.txt", command + "\n")
        log.info(f"run directory {ctx.run_dir}, device {ctx.device}")
        if until != "lm":  # pretraining the general-domain LM needs no labelled data
            res.data = distributed.on_main(lambda: data_stage.run(ctx, data, _lm_vocab(ctx)))
        for direction in cfg.model.directions:
            dctx, r = ctx.for_direction(direction), DirectionResult()
            res.directions[direction] = r
            if stop >= 1:
                r.lm = lm.run(dctx)
            if stop >= 2:
                r.lm_finetune = lm_finetune.run(dctx, res.data, r.lm)
            if stop >= 3:
                r.classifier = classifier.run(dctx, res.data, r.lm_finetune)
        if stop >= 3:
            dirs = {d: r.classifier.model_dir for d, r in res.directions.items()}
            res.model_dir = distributed.on_main(lambda: _model_dir(ctx.run_dir, dirs))
        if stop >= 4:
            clfs = {d: r.classifier for d, r in res.directions.items()}
            res.evaluate = distributed.on_main(lambda: evaluate.run(ctx, res.data, clfs))
    res.seconds = time.time() - t0
    log.info(f"done in {res.seconds:.1f} s" + (f" (skipped: {', '.join(res.skipped())})" if res.skipped() else ""))
    return res


def _lm_vocab(ctx: Context) -> list[str] | None:
    """The pretrained LMs' words for the target vocab (`data.lm_vocab`): each direction's LM, in order."""
    if not (ctx.cfg.data.lm_vocab and ctx.cfg.lm_pretrain.source == "pretrained"):
        return None
    words = [w for d in ctx.cfg.model.directions for w in lm.pretrained_vocab(ctx.for_direction(d))]
    return list(dict.fromkeys(words))


def _model_dir(run_dir: Path, model_dirs: dict[str, str]) -> str:
    """The run's model: the classifier folder, or an ensemble folder over the directions' classifiers."""
    if len(model_dirs) == 1:
        return next(iter(model_dirs.values()))
    return str(write_ensemble(run_dir / "ensemble", {d: Path(p) for d, p in model_dirs.items()}))
