"""fastai's AWD-LSTM: building it, its checkpoints, the model-folder format, pretrained LMs, generation.

`artifact` alone knows the on-disk folder format (file names, metadata, checks); `awd_lstm` builds the LM
and classifier with the paper's layer groups; `checkpoint` saves, loads and adapts weights; `hub` finds
pretrained LMs (shipped, local, URL, fastai's WT103) and ships new ones.
"""

from .artifact import CheckpointError, read_artifact, read_checkpoint_meta
from .awd_lstm import build_classifier, build_lm, classifier_layer_groups, lm_layer_groups, n_params
from .checkpoint import adapt_pretrained, load_lm_checkpoint, read_vocab, save_checkpoint

__all__ = ["CheckpointError", "adapt_pretrained", "build_classifier", "build_lm", "classifier_layer_groups",
           "lm_layer_groups", "load_lm_checkpoint", "n_params", "read_artifact", "read_checkpoint_meta",
           "read_vocab", "save_checkpoint"]
