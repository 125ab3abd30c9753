"""Chain the stages. Each stage is skipped when its key (config + upstream keys) is unchanged."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Literal

from .config import Config
from .data import LabelledData
from .rundir import run_lock, storage_errors, write_text
from .stages import classifier, evaluate, lm, lm_finetune
from .stages import data as data_stage
from .stages.common import Context

Stage = Literal["data", "lm", "lm_finetune", "classifier", "evaluate"]
ORDER: list[str] = ["data", "lm", "lm_finetune", "classifier", "evaluate"]


@dataclass
class PipelineResult:
    data: data_stage.DataResult | None = None
    lm: lm.LMResult | None = None
    lm_finetune: lm_finetune.LMFinetuneResult | None = None
    classifier: classifier.ClassifierResult | None = None
    evaluate: evaluate.EvalResult | None = None
    seconds: float = 0.0

    def skipped(self) -> list[str]:
        return [n for n in ORDER if getattr(self, n) is not None and getattr(self, n).skipped]


def run_pipeline(cfg: Config, until: Stage = "evaluate", data: LabelledData | None = None) -> PipelineResult:
    """Run every stage up to `until`, skipping the ones already done with the same inputs.

    Args:
        cfg: the run's config.
        until: the last stage to run.
        data: labelled data from the Python API, instead of `cfg.data`'s files.

    Returns:
        Each stage's typed result (artifact paths and metrics).
    """
    if until not in ORDER:
        raise ValueError(f"until={until!r}: expected one of {ORDER}")
    t0 = time.time()
    ctx = Context.create(cfg)
    res = PipelineResult()
    stop = ORDER.index(until)
    with run_lock(ctx.run_dir), storage_errors(ctx.run_dir):  # disk full: StorageError naming the file
        import yaml

        write_text(ctx.run_dir / "config.yaml", yaml.safe_dump(cfg.to_dict(), sort_keys=False))
        ctx.log(f"run directory {ctx.run_dir}, device {ctx.device}")
        if until != "lm":  # pretraining the general-domain LM needs no labelled data
            res.data = data_stage.run(ctx, data)
        if stop >= 1:
            res.lm = lm.run(ctx)
        if stop >= 2:
            res.lm_finetune = lm_finetune.run(ctx, res.data, res.lm)
        if stop >= 3:
            res.classifier = classifier.run(ctx, res.data, res.lm_finetune)
        if stop >= 4:
            res.evaluate = evaluate.run(ctx, res.data, res.classifier)
    res.seconds = time.time() - t0
    ctx.log(f"done in {res.seconds:.1f} s" + (f" (skipped: {', '.join(res.skipped())})" if res.skipped() else ""))
    return res
