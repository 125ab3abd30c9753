"""Training a fastai `Learner` the ULMFiT way, resumably, on one device or several.

`schedules` has discriminative LRs, STLR and gradual unfreezing as plain functions; `learner` builds the
Learner and runs the phases through `callbacks` (metrics and LR logs; checkpoints, pause and mid-epoch
replay), which write `last.pt` as `checkpointing` defines it; `loaders` makes the LM and classifier DataLoaders
(BPT3C-sorted batches); `rundir` is a run's folder of cached stages; `distributed` is DDP over torchrun;
`fused` is the sampled/fused LM loss that makes CPU pretraining affordable.
"""

from .callbacks import TrainingPaused
from .learner import fit_phases, make_learner
from .rundir import RunLockedError, StageDir
from .schedules import Phase, discriminative_lrs, stlr, unfreeze_phases

__all__ = ["Phase", "RunLockedError", "StageDir", "TrainingPaused", "discriminative_lrs", "fit_phases",
           "make_learner", "stlr", "unfreeze_phases"]
