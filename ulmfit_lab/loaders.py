"""fastai data loaders over token ids: `LMDataLoader` for the LM, `SortedDL` + chunk padding for BPT3C."""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial

import numpy as np
import torch
from fastai.data.core import DataLoaders
from fastai.text.data import LMDataLoader, LMTensorText, SortedDL, TensorText, pad_input_chunk
from fastai.torch_core import TensorCategory

from .text import PAD


def _tensor(ids: np.ndarray, backwards: bool) -> torch.Tensor:
    t = torch.as_tensor(np.asarray(ids, dtype=np.int64))
    return t.flip(0) if backwards else t  # fastai's `reverse_text`


def _lm_bs(total_tokens: int, bs: int, bptt: int) -> int:
    # a corpus smaller than bs * bptt still gives at least one full batch (matters for tiny data only)
    return max(1, min(bs, (total_tokens - 1) // (bptt + 1)))


def lm_loaders(train: Sequence[np.ndarray], valid: Sequence[np.ndarray], bs: int, bptt: int,
               backwards: bool, device: torch.device, seed: int | None = None) -> DataLoaders:
    """The documents concatenated (shuffled each epoch) and cut into `bs` streams of `bptt` chunks."""
    dls = []
    for docs, shuffle in ((train, True), (valid, False)):
        items = [LMTensorText(_tensor(d, backwards)) for d in docs if len(d) > 0]
        lens = [len(t) for t in items]
        b = _lm_bs(sum(lens), bs, bptt)
        dls.append(LMDataLoader(items, lens=lens, bs=b, seq_len=bptt, shuffle=shuffle, drop_last=shuffle,
                                device=device))
    if seed is not None:
        dls[0].rng.seed(seed)
    return DataLoaders(*dls, device=device)


def classifier_items(ids: Sequence[np.ndarray], labels: Sequence[int] | None, backwards: bool) -> list[tuple]:
    ys = labels if labels is not None else [0] * len(ids)
    return [(TensorText(_tensor(d, backwards)), TensorCategory(int(y))) for d, y in zip(ids, ys)]


def pad_batch(bptt: int):
    """fastai's `pad_input_chunk`: padding in whole `bptt` chunks first, so BPT3C sees aligned chunks."""
    return partial(pad_input_chunk, pad_idx=PAD, pad_first=True, seq_len=bptt)


def classifier_loaders(train_ids, train_y, valid_ids, valid_y, bs: int, bptt: int, backwards: bool,
                       device: torch.device, seed: int | None = None) -> DataLoaders:
    """Length-sorted batches (shuffled by chunks in training), as fastai's `SortedDL` does."""
    tr = classifier_items(train_ids, train_y, backwards)
    va = classifier_items(valid_ids, valid_y, backwards)
    train_dl = SortedDL(tr, res=[len(x) for x, _ in tr], bs=min(bs, len(tr)), shuffle=True, drop_last=False,
                        before_batch=pad_batch(bptt), device=device)
    valid_dl = SortedDL(va, res=[len(x) for x, _ in va], bs=bs * 2, shuffle=False,
                        before_batch=pad_batch(bptt), device=device)
    if seed is not None:
        train_dl.rng.seed(seed)
    return DataLoaders(train_dl, valid_dl, device=device)
