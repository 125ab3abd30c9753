"""ulmfit_lab: ULMFiT (Howard & Ruder 2018) text classification on fastai.

Public API: `SentimentClassifier`, `load_config`, `run_pipeline`, `Predictor`.
"""

from .api import SentimentClassifier
from .config import Config, ConfigError, load_config
from .data import DataError, DataWarning
from .fileio import StorageError
from .models import CheckpointError
from .pipeline import run_pipeline
from .predict import Predictor
from .rundir import RunLockedError

__version__ = "0.1.0"
__all__ = ["CheckpointError", "Config", "ConfigError", "DataError", "DataWarning", "Predictor", "RunLockedError",
           "SentimentClassifier", "StorageError", "load_config", "run_pipeline"]
