"""Build fastai's AWD-LSTM LM and classifier from a `ModelConfig`, and their layer groups.

Layer groups drive both discriminative LRs and gradual unfreezing. For the LM they follow the paper
(embedding lowest, then each LSTM layer), not fastai's `awd_lstm_lm_split`, which puts the embedding
(tied to the decoder) in the last, highest-LR group.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from fastai.text.models.awdlstm import AWD_LSTM, awd_lstm_clas_config, awd_lstm_clas_split, awd_lstm_lm_config
from fastai.text.models.core import get_language_model, get_text_classifier
from torch import Tensor, nn

from ..config import ModelConfig


def _arch(m: ModelConfig, base: dict) -> dict:
    return dict(base, emb_sz=m.emb_sz, n_hid=m.n_hid, n_layers=m.n_layers)


def build_lm(vocab_sz: int, m: ModelConfig, drop_mult: float = 1.0) -> nn.Module:
    """fastai's AWD-LSTM language model (tied embedding and decoder)."""
    return get_language_model(AWD_LSTM, vocab_sz, config=_arch(m, awd_lstm_lm_config), drop_mult=drop_mult)


def build_classifier(vocab_sz: int, n_class: int, m: ModelConfig, drop_mult: float = 0.5,
                     head: list[int] | None = None, max_len: int = 1400) -> nn.Module:
    """fastai's classifier: BPT3C `SentenceEncoder` + concat pooling [last, max, mean] + head."""
    return get_text_classifier(AWD_LSTM, vocab_sz, n_class, seq_len=m.bptt, config=_arch(m, awd_lstm_clas_config),
                               drop_mult=drop_mult, lin_ftrs=list(head or [50]), max_len=max_len)


def activate(logits: Tensor, sigmoid: bool = False, bounds: Sequence[tuple[int, int]] | None = None) -> Tensor:
    """Probabilities from the classifier's logits (bs, n_outputs): one softmax over all of them (single-label), a
    sigmoid per output (`sigmoid`: multi-label), or a softmax per task's slice (`bounds`: multi-task). Training's
    `get_preds` and every inference path (torch, ONNX) read them through this one function."""
    if sigmoid:
        return torch.sigmoid(logits)
    if bounds is not None and len(bounds) > 1:
        return torch.cat([torch.softmax(logits[:, a:b], dim=-1) for a, b in bounds], dim=1)
    return torch.softmax(logits, dim=-1)


def lm_layer_groups(model: nn.Module) -> list[list[nn.Parameter]]:
    """Paper order, lowest first: [embedding (= decoder weight)], [LSTM 1], ..., [LSTM n + decoder bias]."""
    enc, dec = model[0], model[1]
    groups = [list(enc.encoder.parameters())] + [list(r.parameters()) for r in enc.rnns]
    if dec.decoder.bias is not None:
        groups[-1].append(dec.decoder.bias)
    return groups


def classifier_layer_groups(model: nn.Module) -> list[list[nn.Parameter]]:
    """fastai's split, lowest first: [embedding], [LSTM 1], ..., [LSTM n], [head]."""
    return [list(g) for g in awd_lstm_clas_split(model)]


def n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
