"""An exported model as a stock fastai `Learner`: fastai's own `predict`, `get_preds` and `test_dl` on the
same weights, vocab and labels (the benchmark's baseline, and for users who want fastai's API).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from fastai.data.block import CategoryBlock, DataBlock
from fastai.data.transforms import ColReader, IndexSplitter
from fastai.learner import Learner
from fastai.text.data import TextBlock
from fastai.text.learner import text_classifier_learner
from fastai.text.models.awdlstm import AWD_LSTM, awd_lstm_clas_config

from ..models.artifact import WEIGHTS, read_artifact, resolve_model_dir
from ..models.checkpoint import load_weights, model_config_from_meta


def stock_learner(folder: str | Path, bs: int = 64) -> Learner:
    """A fastai `text_classifier_learner` holding the weights of a ulmfit_lab classifier folder.

    Its `dls` tokenize raw strings with fastai's `Tokenizer` and `Numericalize(vocab)`, so
    `learn.predict(text)` and `learn.get_preds(dl=learn.dls.test_dl(texts))` work as in any fastai project.
    """
    folder = resolve_model_dir(folder)
    meta, vocab = read_artifact(folder)
    m = model_config_from_meta(meta)
    labels = list(meta["labels"])
    # two rows per class only to build the loaders; nothing is trained
    df = pd.DataFrame({"text": [str(lab) for lab in labels] * 2, "label": labels * 2})
    block = DataBlock(blocks=(TextBlock.from_df("text", vocab=vocab, seq_len=m.bptt, backwards=m.backwards,
                                                n_workers=1, tok_text_col="text"),
                              CategoryBlock(vocab=labels)),
                      get_x=ColReader("text"), get_y=ColReader("label"),
                      splitter=IndexSplitter(list(range(len(labels)))))
    dls = block.dataloaders(df, bs=bs, verbose=False)
    learn = text_classifier_learner(dls, AWD_LSTM, seq_len=m.bptt, backwards=m.backwards, pretrained=False,
                                    config=dict(awd_lstm_clas_config, emb_sz=m.emb_sz, n_hid=m.n_hid,
                                                n_layers=m.n_layers),
                                    drop_mult=meta.get("drop_mult", 0.5), lin_ftrs=list(meta.get("head", [50])),
                                    max_len=meta.get("max_len", 1400))
    load_weights(learn.model, folder / WEIGHTS)
    return learn


def batch_dependent(lengths: Sequence[int], bs: int, bptt: int, max_len: int | None) -> np.ndarray:
    """Which documents get a batch-dependent result from fastai's batched eval (`get_preds` on a `SortedDL`).

    fastai sorts by length (longest first), pads each batch in whole `bptt` chunks at the front with the
    remainder at the end (`pad_input_chunk`), and `SentenceEncoder` runs chunk by chunk on the first
    `real_bs` rows, `real_bs` being the number of rows whose chunk starts with a real token. A document's
    result equals its result alone (`learn.predict`, and ulmfit_lab's) unless, in its batch:
      (a) a chunk holding its tokens is skipped: a longer row above it has already ended there, and
          `real_bs`, which assumes the rows with tokens form a prefix, cuts this one off,
      (b) `masked_concat_pool` takes its 'last' output from a padding position (leading padding inside
          the last `bptt` columns: the document fits in the batch's last, partial chunk), or
      (c) the BPT3C window (chunks starting within the batch's last `max_len` columns) keeps a different
          part of it than the window of the document alone.
    Returns a boolean per document, in input order.
    """
    lengths = np.asarray(lengths, dtype=np.int64)
    out = np.zeros(len(lengths), dtype=bool)
    order = np.argsort(-lengths, kind="stable")

    def ceil_to(x: int) -> int:  # the smallest multiple of bptt >= x, and >= 0
        return max(0, -(-int(x) // bptt) * bptt)

    for b in range(0, len(order), bs):
        idx = order[b:b + bs]
        lens = lengths[idx]
        top = int(lens[0])
        first = (top - lens) // bptt * bptt  # column of each row's first token
        starts = np.arange(0, top, bptt)
        has = (starts[None, :] >= first[:, None]) & (starts[None, :] < (first + lens)[:, None])  # (rows, chunks)
        processed = np.arange(len(idx))[:, None] < has.sum(0)[None, :]
        skipped = (has & ~processed).any(1)
        keep_from = ceil_to(top - max_len) if max_len is not None else 0
        window_changed = np.array([max(0, keep_from - f) != (ceil_to(n - max_len) if max_len is not None else 0)
                                   for f, n in zip(first, lens)])
        wrong_last = first > max(keep_from, top - bptt)
        out[idx] = skipped | window_changed | wrong_last
    return out
