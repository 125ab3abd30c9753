"""The lab: which transfer strategy works for my data? Linear probes per layer, strategy advice, the paper's
ablations and few-shot learning curves, each a plain function over the pipeline (the CLI calls them)."""

from .ablate import GRIDS, VARIANTS, AblationResult, ablate
from .advise import Advice, Measurements, advise
from .curve import METHODS, CurveResult, learning_curve
from .probe import ENCODERS, ProbeResult, probe

__all__ = ["ENCODERS", "GRIDS", "METHODS", "VARIANTS", "AblationResult", "Advice", "CurveResult", "Measurements",
           "ProbeResult", "ablate", "advise", "learning_curve", "probe"]
