"""ulmfit_lab: ULMFiT (Howard & Ruder 2018) text classification on fastai.

Public API: `SentimentClassifier`, `load_config`, `run_pipeline`, `Predictor`.
"""

from ._version import __version__  # noqa: F401  (ulmfit_lab.__version__)
from .api import SentimentClassifier
from .config import Config, ConfigError, load_config
from .data import DataError, DataWarning
from .fileio import StorageError
from .models import CheckpointError
from .pipeline import run_pipeline
from .predict import Predictor
from .rundir import RunLockedError

__all__ = ["CheckpointError", "Config", "ConfigError", "DataError", "DataWarning", "Predictor", "RunLockedError",
           "SentimentClassifier", "StorageError", "load_config", "run_pipeline"]
