"""Tokenization and vocab, identical to fastai's (spaCy blank pipeline + `defaults.text_proc_rules`).

Tokens are computed in batches through HF `datasets.map` and cached as Arrow files keyed by the
texts and the tokenizer settings, so a second run on the same data starts in seconds.
"""

from __future__ import annotations

import hashlib
import itertools
import os
import re
import shutil
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import datasets
import numpy as np

# fastai's rules and special tokens; the tokenizer itself is fastai's, we only batch and cache it.
from fastai.text.core import SpacyTokenizer, TokenizeWithRules, defaults
from fastai.text.data import make_vocab
from fastcore.basics import compose

from .rundir import remove_stale_tmp

SPECIAL_TOKENS: list[str] = list(defaults.text_spec_tok)
UNK, PAD, BOS = 0, 1, 2  # positions of xxunk, xxpad, xxbos in every vocab made here
TOKENIZER_VERSION = 1  # bump when tokenization output changes meaning


# spaCy refuses a text over `nlp.max_length` (1M characters) and its memory grows with the text: longer
# texts go through fastai's text rules whole, are then cut at single spaces into pieces of at most this size
# for spaCy, and their tokens joined again (the same tokens as in one piece: spaCy splits at spaces first).
MAX_PIECE_CHARS = 100_000
_SURROGATE = re.compile("[\ud800-\udfff]")


def split_long(text: str, size: int | None = None) -> list[str]:
    """`text` cut into pieces of at most `size` (default `MAX_PIECE_CHARS`) characters, each cut at a single
    space between two non-spaces (a hard cut only where a whole piece has none)."""
    size = size or MAX_PIECE_CHARS
    pieces, start = [], 0
    while len(text) - start > size:
        end = start + size
        cut = text.rfind(" ", start + 1, end)
        while cut > start and (text[cut - 1].isspace() or text[cut + 1].isspace()):
            cut = text.rfind(" ", start + 1, cut)
        cut = cut + 1 if cut > start else end  # the space ends its piece: spaCy makes no token of it
        pieces.append(text[start:cut])
        start = cut
    pieces.append(text[start:])
    return pieces


class FastaiTokenizer:
    """fastai's `TokenizeWithRules(SpacyTokenizer(lang))`, built lazily so it pickles to workers.

    Any `str` is accepted: a text over `MAX_PIECE_CHARS` is tokenized in pieces (bounded memory, and no
    spaCy length limit), and lone surrogates (which spaCy cannot hash) become U+FFFD.
    """

    def __init__(self, lang: str = "en"):
        self.lang = lang
        self._tok: TokenizeWithRules | None = None

    def __getstate__(self):
        return {"lang": self.lang, "_tok": None}

    def __call__(self, texts: Sequence[str]) -> list[list[str]]:
        if self._tok is None:
            self._tok = TokenizeWithRules(SpacyTokenizer(self.lang))
        texts = [t if t.isascii() else _SURROGATE.sub("\ufffd", t) for t in texts]
        if all(len(t) <= MAX_PIECE_CHARS for t in texts):
            return [list(toks) for toks in self._tok(texts)]  # fastai's own path
        return [list(toks) if len(t) <= MAX_PIECE_CHARS else self._long(t)
                for t, toks in zip(texts, self._tok(t if len(t) <= MAX_PIECE_CHARS else "" for t in texts))]

    def pieces(self, text: str) -> list[str]:
        """A long text after fastai's text rules, cut into the pieces spaCy tokenizes one by one."""
        if self._tok is None:
            self._tok = TokenizeWithRules(SpacyTokenizer(self.lang))
        return split_long(compose(*self._tok.rules)(text))

    def _long(self, text: str) -> list[str]:
        """What `self._tok` gives for one long text: rules on the whole text, spaCy piece by piece."""
        out: list[str] = []
        for toks in self._tok.tok(self.pieces(text)):
            out.extend(self._tok.post_f(t) for t in toks)
        return out

    def batch(self, batch: dict) -> dict:
        return {"tokens": self(batch["text"])}


def save_dataset(ds: datasets.Dataset, path: Path) -> None:
    """`save_to_disk` without its progress bar (tokenization has its own)."""
    was = datasets.utils.logging.is_progress_bar_enabled()
    datasets.utils.logging.disable_progress_bar()
    try:
        ds.save_to_disk(str(path))
    finally:
        if was:
            datasets.utils.logging.enable_progress_bar()


def texts_hash(texts: Sequence[str]) -> str:
    h = hashlib.sha256()
    for t in texts:
        h.update(t.encode("utf-8", "surrogatepass"))
        h.update(b"\x00")
    return h.hexdigest()[:16]


def _num_proc(n_texts: int, num_workers: int) -> int | None:
    # worker start-up costs seconds: only worth it for thousands of texts
    n = num_workers or (os.cpu_count() or 1)
    return n if n > 1 and n_texts >= 4000 else None


def tokenize(
    texts: Sequence[str],
    lang: str = "en",
    cache_dir: Path | None = None,
    num_workers: int = 0,
    desc: str = "Tokenizing",
) -> datasets.Dataset:
    """Tokenize texts into a Dataset with a `tokens` column, cached on disk by content and settings."""
    key = f"tok-{texts_hash(texts)}-{lang}-v{TOKENIZER_VERSION}"
    if cache_dir is not None:
        path = Path(cache_dir) / "tokens" / key
        if (path / "dataset_info.json").exists():
            return datasets.load_from_disk(str(path))
    ds = datasets.Dataset.from_dict({"text": list(texts)})
    tok = FastaiTokenizer(lang)
    ds = ds.map(
        tok.batch,
        batched=True,
        batch_size=500,
        num_proc=_num_proc(len(texts), num_workers),
        remove_columns=["text"],
        desc=desc,
        new_fingerprint=key,
        features=datasets.Features({"tokens": datasets.Sequence(datasets.Value("string"))}),
    )
    if cache_dir is None:
        return ds
    # a private temporary name (the pid), renamed into place: a concurrent run tokenizing the same texts
    # never writes into our folder, and a killed run leaves only a temporary folder, removed next time
    remove_stale_tmp(path.parent, path.name)
    tmp = path.with_name(f"{path.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        save_dataset(ds, tmp)
        shutil.rmtree(path, ignore_errors=True)
        try:
            os.replace(tmp, path)
        except OSError:
            if not (path / "dataset_info.json").exists():  # not another run that got there first
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return datasets.load_from_disk(str(path))


def count_tokens(token_sets: Sequence[datasets.Dataset]) -> Counter:
    counter: Counter = Counter()
    for ds in token_sets:
        for batch in ds.iter(batch_size=2000):
            counter.update(itertools.chain.from_iterable(batch["tokens"]))
    return counter


def build_vocab(token_sets: Sequence[datasets.Dataset], min_freq: int = 3, max_vocab: int = 60000) -> list[str]:
    """fastai's `make_vocab` over the token counts: special tokens first, padded to a multiple of 8."""
    return make_vocab(count_tokens(token_sets), min_freq=min_freq, max_vocab=max_vocab)


def numericalize(tokens: datasets.Dataset, vocab: Sequence[str]) -> list[np.ndarray]:
    """Token ids per document (unknown words -> xxunk), as int32 arrays."""
    o2i = {w: i for i, w in enumerate(vocab)}
    out = []
    for batch in tokens.iter(batch_size=2000):
        out.extend(np.fromiter((o2i.get(t, UNK) for t in toks), dtype=np.int32, count=len(toks))
                   for toks in batch["tokens"])
    return out


def encode(texts: Sequence[str], vocab: Sequence[str], lang: str = "en") -> list[np.ndarray]:
    """Tokenize and numericalize a few texts in memory (the prediction path)."""
    o2i = {w: i for i, w in enumerate(vocab)}
    return [np.array([o2i.get(t, UNK) for t in toks], dtype=np.int64) for toks in FastaiTokenizer(lang)(texts)]
