"""fastai data loaders over token ids: `LMDataLoader` for the LM, `SortedDL` + chunk padding for BPT3C.

Both are subclassed to make an epoch replayable: the loader records the order it drew for the
current epoch, and a resumed run replays that order from the first batch not yet trained, so a run
killed mid-epoch continues exactly where it stopped (see `training.callbacks.Checkpointer`).

And to shard them over the processes of a distributed run: every rank draws the same global order and
cuts the same global batches of `bs` (the LM's `bs` streams, the classifier's length-sorted documents),
then keeps its own rows of each: r, r + N, r + 2N, ... So each rank sees different text at every step,
and together the ranks see exactly the batches one process would.

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
from fastai.torch_core import TensorCategory, TensorMultiCategory, to_detach
from fastcore.basics import chunked

from ..data.sources import DataError
from ..text.vocab import PAD
from . import distributed


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
    """Classifier items, made on demand: (`TensorText`, `TensorCategory`).

    `labels` as a 2-D array: a row per document, float 0/1 per label (multi-label: `TensorMultiCategory`) or
    a class index per task (multi-task: a `TensorCategory` vector).
    """

    def __init__(self, docs: Sequence[np.ndarray], labels: Sequence[int] | np.ndarray | None, backwards: bool):
        self.docs, self.backwards = docs, backwards
        if isinstance(labels, np.ndarray) and labels.ndim == 2:
            self.labels = labels
        else:
            self.labels = np.zeros(len(docs), dtype=np.int64) if labels is None else np.asarray(labels, dtype=np.int64)

    def __len__(self) -> int:
        return len(self.docs)

    def __getitem__(self, i: int) -> tuple:
        x = TensorText(_tensor(self.docs[i], self.backwards))
        if self.labels.ndim == 2:
            y = torch.from_numpy(self.labels[i].copy())
            return x, TensorMultiCategory(y) if y.is_floating_point() else TensorCategory(y)
        return x, TensorCategory(int(self.labels[i]))


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


def shard_batches(idxs: list, bs: int, rank: int, world: int, pad: bool = False) -> list:
    """Rank `rank`'s items of each global batch of `bs` consecutive `idxs`: items rank, rank + world, ...

    `pad`: a last batch with fewer items than ranks repeats them, so that every rank takes a step there
    (the ranks must take the same number of steps; at most world - 1 items are seen twice per epoch).
    """
    if world == 1:
        return idxs
    out = []
    for start in range(0, len(idxs), bs):
        b = idxs[start:start + bs]
        if pad and len(b) < world:
            b = [b[i % len(b)] for i in range(world)]
        out.extend(b[rank::world])
    return out


class _Sharded:
    """Mixin: keep this rank's rows of every global batch (`shard_batches`); one process: a no-op."""

    rank, world, pad_last = 0, 1, False

    def get_idxs(self):
        self._rank_idxs = shard_batches(list(super().get_idxs()), self.bs, self.rank, self.world, self.pad_last)
        return self._rank_idxs

    @property
    def rank_bs(self) -> int:
        return len(range(self.rank, self.bs, self.world))

    def chunkify(self, b):
        return chunked(b, self.rank_bs, self.drop_last)

    def sample(self):  # fastai's, with this rank's batch size deciding which worker makes which batch
        return (b for i, b in enumerate(self._rank_idxs) if i // self.rank_bs % self.num_workers == self.offs)

    def to_detach(self, b, cpu=True, gather=True):
        # no per-batch all_gather (fastai's default under torchrun): `distributed.DDPTrainer` sums the
        # metrics once per validation, and validation shares may differ in size between ranks
        return to_detach(b, cpu, gather=False)


def _shard(dl, rank: int | None, world: int | None, pad_last: bool):
    dl.rank = distributed.rank() if rank is None else rank
    dl.world = distributed.world() if world is None else world
    dl.pad_last = pad_last
    return dl


def rng_state(state) -> tuple:
    """A saved `random.Random.getstate()`: torch.load(weights_only=True) gives lists back where it had tuples."""
    return (state[0], tuple(state[1]), state[2])


class ReplayLMDataLoader(_Sharded, _Replayable, LMDataLoader):
    """fastai's `LMDataLoader`, shuffled by its own seeded rng (fastai's uses the global `random`)."""

    def shuffle_fn(self, idxs):
        # from the document order, not the last epoch's: the epoch's order then follows from the rng state
        # alone, so a run resumed at an epoch boundary draws the same order (in place: `self.lens` shares it)
        self.items.idxs[:] = range(len(self.items.idxs))
        self.rng.shuffle(self.items.idxs)
        self.make_chunks()
        return idxs

    def _order(self, idxs):
        return [int(i) for i in self.items.idxs]  # the document order; the sample idxs are always 0..n-1

    def _replay_order(self, order):
        self.items.idxs[:] = order
        self.make_chunks()
        return list(range(self.n))


class ReplaySortedDL(_Sharded, _Replayable, SortedDL):
    """fastai's `SortedDL` (length-sorted batches, shuffled by chunks), replayable."""


class ShardedSortedDL(_Sharded, SortedDL):
    """fastai's `SortedDL` for validation, sharded."""


def _lm_bs(total_tokens: int, bs: int, bptt: int) -> int:
    # a corpus smaller than bs * bptt still gives at least one full batch (matters for tiny data only)
    return max(1, min(bs, (total_tokens - 1) // (bptt + 1)))


def lm_loaders(train: Sequence[np.ndarray], valid: Sequence[np.ndarray], bs: int, bptt: int,
               backwards: bool, device: torch.device, seed: int | None = None, rank: int | None = None,
               world: int | None = None) -> DataLoaders:
    """The documents concatenated (shuffled each epoch) and cut into `bs` streams of `bptt` chunks.

    `rank`/`world` (default: this process's, in a distributed run): the rank keeps streams rank, rank +
    world, ... of the `bs` (the global batch).
    """
    dls = []
    for docs, shuffle in ((train, True), (valid, False)):
        all_lens = _lengths(docs)
        idx = np.flatnonzero(all_lens > 0)  # empty documents add nothing to the stream
        items = _LMDocs(docs, idx, backwards)
        lens = all_lens[idx].tolist()
        b = _lm_bs(sum(lens), bs, bptt)
        dl = _shard(ReplayLMDataLoader(items, lens=lens, bs=b, seq_len=bptt, shuffle=shuffle, drop_last=shuffle,
                                       device=device), rank, world, pad_last=False)
        if b < dl.world:
            raise DataError(f"{'train' if shuffle else 'valid'} LM text: {sum(lens)} tokens make only {b} "
                            f"stream(s) of bptt {bptt}, fewer than the {dl.world} processes; use more text or "
                            "fewer processes")
        dls.append(dl)
    if seed is not None:
        dls[0].rng.seed(seed)
    return DataLoaders(*dls, device=device)


def classifier_items(ids: Sequence[np.ndarray], labels: Sequence[int] | None, backwards: bool) -> _LabelledDocs:
    return _LabelledDocs(ids, labels, backwards)


def pad_batch(bptt: int):
    """fastai's `pad_input_chunk`: padding in whole `bptt` chunks first, so BPT3C sees aligned chunks."""
    return partial(pad_input_chunk, pad_idx=PAD, pad_first=True, seq_len=bptt)


def classifier_loaders(train_ids, train_y, valid_ids, valid_y, bs: int, bptt: int, backwards: bool,
                       device: torch.device, seed: int | None = None, rank: int | None = None,
                       world: int | None = None) -> DataLoaders:
    """Length-sorted batches (shuffled by chunks in training), as fastai's `SortedDL` does.

    `rank`/`world` (default: this process's): the rank keeps documents rank, rank + world, ... of each
    global batch, so its own batches stay length-sorted and the ranks' shares are of similar lengths.
    """
    tr = classifier_items(train_ids, train_y, backwards)
    va = classifier_items(valid_ids, valid_y, backwards)
    n_world = distributed.world() if world is None else world
    # the head's BatchNorm cannot train on one row: drop a last batch that would leave some rank a single row
    # (one process: a last batch of one text; fastai drops every incomplete last batch)
    drop_last = len(tr) > bs and 0 < len(tr) % bs < 2 * n_world
    # No worker processes (fastai's SortedDL forks one per CPU core at every epoch): padding in-memory ids costs
    # nothing beside the model, and a fork from a process running other threads (gloo's, OpenMP's, tqdm's
    # monitor) can leave the child stuck on a lock no thread will release: a 2-rank run hung in its
    # validation loader's fork about once in ten runs here (tests/test_distributed.py). LMDataLoader forks none.
    train_dl = _shard(ReplaySortedDL(tr, res=_lengths(train_ids).tolist(), bs=min(bs, len(tr)), shuffle=True,
                                     drop_last=drop_last, before_batch=pad_batch(bptt), device=device,
                                     num_workers=0), rank, world, pad_last=True)
    valid_dl = _shard(ShardedSortedDL(va, res=_lengths(valid_ids).tolist(), bs=bs * 2, shuffle=False,
                                      before_batch=pad_batch(bptt), device=device, num_workers=0),
                      rank, world, pad_last=False)
    if seed is not None:
        train_dl.rng.seed(seed)
    return DataLoaders(train_dl, valid_dl, device=device)
