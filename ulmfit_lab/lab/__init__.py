"""The lab: which transfer strategy works for my data? Linear probes per layer, strategy advice, the paper's
ablations and few-shot learning curves, each a plain function over the pipeline (the CLI calls them).
`read_*` load a finished command's results from its folder (to show or plot them again without training)."""

from .ablate import GRIDS, VARIANTS, AblationResult, ablate, plot_ablation, read_ablation
from .advise import Advice, Measurements, advise, plot_advice, read_advice
from .curve import METHODS, CurveResult, learning_curve, merge_curves, plot_curve, read_curve
from .probe import ENCODERS, ProbeResult, probe, read_probe

__all__ = ["ENCODERS", "GRIDS", "METHODS", "VARIANTS", "AblationResult", "Advice", "CurveResult", "Measurements",
           "ProbeResult", "ablate", "advise", "learning_curve", "merge_curves", "plot_ablation", "plot_advice",
           "plot_curve", "probe", "read_ablation", "read_advice", "read_curve", "read_probe"]
