"""ulmfit_lab: ULMFiT (Howard & Ruder 2018) text classification on fastai.

Public API: `SentimentClassifier`, `load_config`, `run_pipeline`, `Predictor`.
"""

import importlib.abc
import importlib.util
import logging
import sys
import warnings

from ._version import __version__  # noqa: F401  (ulmfit_lab.__version__)
from .api import SentimentClassifier
from .config import Config, ConfigError, load_config
from .data.sources import DataError, DataWarning
from .fileio import StorageError
from .models.artifact import CheckpointError
from .pipeline import run_pipeline
from .serving.predict import Predictor
from .training.rundir import RunLockedError

# A library logs and leaves the output to the application (logging HOWTO): without a handler configured,
# the records of `ulmfit_lab.*` go nowhere, not to logging's last-resort stderr. See `ulmfit_lab.logs`.
logging.getLogger(__name__).addHandler(logging.NullHandler())

# Modules that moved into subpackages (0.1 layout -> today's): the old dotted path still imports, with a
# DeprecationWarning, so scripts and notebooks written against the flat layout keep working.
_MOVED = {
    "tables": "data.tables", "demo": "data.demo", "fasttok": "text.fasttok", "corpus": "text.corpus",
    "artifact": "models.artifact", "hub": "models.hub", "generate": "models.generate",
    "schedules": "training.schedules", "loaders": "training.loaders", "distributed": "training.distributed",
    "fused": "training.fused", "rundir": "training.rundir", "predict": "serving.predict",
    "inference": "serving.inference", "ensemble": "serving.ensemble", "export": "serving.export",
    "onnx_export": "serving.onnx_export", "batch": "serving.batch", "serve": "serving.serve",
    "fastai_compat": "serving.fastai_compat",
}


class _MovedModules(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Resolves `ulmfit_lab.<old>` to the module now at `ulmfit_lab.<new>` (the same module object)."""

    def find_spec(self, name, path=None, target=None):
        head, _, old = name.partition(".")
        if head == __name__ and old in _MOVED:
            return importlib.util.spec_from_loader(name, self)
        return None

    def create_module(self, spec):
        new = f"{__name__}.{_MOVED[spec.name.partition('.')[2]]}"
        warnings.warn(f"{spec.name} moved to {new}; import it from there", DeprecationWarning, stacklevel=2)
        return importlib.import_module(new)

    def exec_module(self, module):
        pass  # already executed under its new name


sys.meta_path.append(_MovedModules())

__all__ = ["CheckpointError", "Config", "ConfigError", "DataError", "DataWarning", "Predictor", "RunLockedError",
           "SentimentClassifier", "StorageError", "load_config", "run_pipeline"]
