"""Using a trained model: predictors (one model, forward+backward ensembles, ONNX), export, batch files, HTTP.

Nothing here imports `training` or `stages` (tests/test_architecture.py): a deployment needs only the model
folder, `models` (to rebuild the network) and `text` (to tokenize). `OnnxPredictor` loads onnxruntime, so it
is imported from `serving.onnx_export` on demand rather than here.
"""

from .ensemble import EnsemblePredictor, load_model
from .export import export_model
from .predict import Predictor

__all__ = ["EnsemblePredictor", "Predictor", "export_model", "load_model"]
