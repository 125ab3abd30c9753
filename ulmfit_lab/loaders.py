"""fastai data loaders over token ids: `LMDataLoader` for the LM, `SortedDL` + chunk padding for BPT3C.

Both are subclassed only to make an epoch replayable: the loader records the order it drew for the
current epoch, and a resumed run replays that order from the first batch not yet trained, so a run
killed mid-epoch continues exactly where it stopped (see `training.EpochLogger`).

The documents are any sequence of id arrays: usually a `DocIds` over memory-mapped Arrow (the token
cache), read one document at a time as fastai asks for it (`_LMDocs`, `_LabelledDocs`), so a corpus of
any size costs a few bytes of memory per document, not a tensor per document.
"""

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


def _lengths(docs: Sequence[np.ndarray]) -> np.ndarray:
    lens = getattr(docs, "lengths", None)  # DocIds knows them without reading the documents
    return np.asarray(lens if lens is not None else [len(d) for d in docs], dtype=np.int64)


class _LMDocs:
    """fastai's LM items, made on demand: document `idx[i]` as an `LMTensorText` (reversed for backwards)."""

    def __init__(self, docs: Sequence[np.ndarray], idx: np.ndarray, backwards: bool):
        self.docs, self.idx, self.backwards = docs, idx, backwards

    def __len__(self) -> int:
        return len(self.idx)

    def __getitem__(self, i: int) -> LMTensorText:
        return LMTensorText(_tensor(self.docs[int(self.idx[i])], self.backwards))


class _LabelledDocs:
    """Classifier items, made on demand: (`TensorText`, `TensorCategory`)."""

    def __init__(self, docs: Sequence[np.ndarray], labels: Sequence[int] | None, backwards: bool):
        self.docs, self.backwards = docs, backwards
        self.labels = np.zeros(len(docs), dtype=np.int64) if labels is None else np.asarray(labels, dtype=np.int64)

    def __len__(self) -> int:
        return len(self.docs)

    def __getitem__(self, i: int) -> tuple:
        return TensorText(_tensor(self.docs[i], self.backwards)), TensorCategory(int(self.labels[i]))


class _Replayable:
    """Mixin: remember this epoch's sample order; replay a saved one, skipping the batches already done."""

    replay: dict | None = None  # {"order": ..., "skip": batches, "rng": state of self.rng after randomize}
    epoch_order: list[int] | None = None

    def _order(self, idxs: list[int]) -> list[int]:  # what identifies this epoch's order (plain ints)
        return [int(i) for i in idxs]

    def _replay_order(self, order: list[int]) -> list[int]:  # set that order up; return the sample idxs
        return list(order)

    def get_idxs(self):
        if self.replay is None:
            idxs = list(super().get_idxs())
            self.epoch_order = self._order(idxs)
            return idxs
        rp, self.replay = self.replay, None
        self.rng.setstate(rng_state(rp["rng"]))  # as it was after this epoch's randomize()
        self.epoch_order = list(rp["order"])
        return self._replay_order(self.epoch_order)[rp["skip"] * self.bs:]


def rng_state(state) -> tuple:
    """A saved `random.Random.getstate()`: torch.load(weights_only=True) gives lists back where it had tuples."""
    return (state[0], tuple(state[1]), state[2])


class ReplayLMDataLoader(_Replayable, LMDataLoader):
    """fastai's `LMDataLoader`, shuffled by its own seeded rng (fastai's uses the global `random`)."""

    def shuffle_fn(self, idxs):
        self.rng.shuffle(self.items.idxs)  # in place: `self.lens` shares this index list
        self.make_chunks()
        return idxs

    def _order(self, idxs):
        return [int(i) for i in self.items.idxs]  # the document order; the sample idxs are always 0..n-1

    def _replay_order(self, order):
        self.items.idxs[:] = order
        self.make_chunks()
        return list(range(self.n))


class ReplaySortedDL(_Replayable, SortedDL):
    """fastai's `SortedDL` (length-sorted batches, shuffled by chunks), replayable."""


def _lm_bs(total_tokens: int, bs: int, bptt: int) -> int:
    # a corpus smaller than bs * bptt still gives at least one full batch (matters for tiny data only)
    return max(1, min(bs, (total_tokens - 1) // (bptt + 1)))


def lm_loaders(train: Sequence[np.ndarray], valid: Sequence[np.ndarray], bs: int, bptt: int,
               backwards: bool, device: torch.device, seed: int | None = None) -> DataLoaders:
    """The documents concatenated (shuffled each epoch) and cut into `bs` streams of `bptt` chunks."""
    dls = []
    for docs, shuffle in ((train, True), (valid, False)):
        all_lens = _lengths(docs)
        idx = np.flatnonzero(all_lens > 0)  # empty documents add nothing to the stream
        items = _LMDocs(docs, idx, backwards)
        lens = all_lens[idx].tolist()
        b = _lm_bs(sum(lens), bs, bptt)
        dls.append(ReplayLMDataLoader(items, lens=lens, bs=b, seq_len=bptt, shuffle=shuffle, drop_last=shuffle,
                                device=device))
    if seed is not None:
        dls[0].rng.seed(seed)
    return DataLoaders(*dls, device=device)


def classifier_items(ids: Sequence[np.ndarray], labels: Sequence[int] | None, backwards: bool) -> _LabelledDocs:
    return _LabelledDocs(ids, labels, backwards)


def pad_batch(bptt: int):
    """fastai's `pad_input_chunk`: padding in whole `bptt` chunks first, so BPT3C sees aligned chunks."""
    return partial(pad_input_chunk, pad_idx=PAD, pad_first=True, seq_len=bptt)


def classifier_loaders(train_ids, train_y, valid_ids, valid_y, bs: int, bptt: int, backwards: bool,
                       device: torch.device, seed: int | None = None) -> DataLoaders:
    """Length-sorted batches (shuffled by chunks in training), as fastai's `SortedDL` does."""
    tr = classifier_items(train_ids, train_y, backwards)
    va = classifier_items(valid_ids, valid_y, backwards)
    train_dl = ReplaySortedDL(tr, res=_lengths(train_ids).tolist(), bs=min(bs, len(tr)), shuffle=True,
                              drop_last=False, before_batch=pad_batch(bptt), device=device)
    valid_dl = SortedDL(va, res=_lengths(valid_ids).tolist(), bs=bs * 2, shuffle=False,
                        before_batch=pad_batch(bptt), device=device)
    if seed is not None:
        train_dl.rng.seed(seed)
    return DataLoaders(train_dl, valid_dl, device=device)
