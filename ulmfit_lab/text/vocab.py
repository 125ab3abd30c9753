"""Tokenization and vocab, identical to fastai's (spaCy blank pipeline + `defaults.text_proc_rules`).

`tokenize` turns texts into token ids on disk (memory-mapped Arrow, cached by content and settings; see
corpus.py), fast (fasttok.py) and in bounded memory. `build_vocab` is fastai's `make_vocab` over the
token counts; `write_ids` maps a tokenized corpus onto a vocab as fastai's `Numericalize` does, streaming
into Arrow again, and `numericalize` does the same in memory for small data.
"""

from __future__ import annotations

import functools
import json
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import datasets
import numpy as np
import pyarrow as pa

# fastai's rules and special tokens; the tokenizer itself is fastai's, we only batch and cache it.
from fastai.text.core import SpacyTokenizer, TokenizeWithRules, defaults
from fastai.text.data import make_vocab
from fastcore.basics import compose

from ..fileio import atomic_path, write_json
from . import fasttok
from .corpus import (
    Tokenized,
    as_source,
    tokenize_corpus,
)
from .fasttok import FastTokenizer, split_long  # noqa: F401  (split_long: re-exported)

SPECIAL_TOKENS: list[str] = list(defaults.text_spec_tok)
UNK, PAD, BOS = 0, 1, 2  # positions of xxunk, xxpad, xxbos in every vocab made here


class FastaiTokenizer:
    """fastai's `TokenizeWithRules(SpacyTokenizer(lang))`, built lazily: the reference `FastTokenizer` matches.

    Any `str` is accepted: a text over `fasttok.MAX_PIECE_CHARS` is tokenized in pieces (bounded memory, and
    no spaCy length limit), and lone surrogates (which spaCy cannot hash) become U+FFFD.
    """

    def __init__(self, lang: str = "en"):
        self.lang = lang
        self._tok: TokenizeWithRules | None = None

    def __getstate__(self):
        return {"lang": self.lang, "_tok": None}

    def __call__(self, texts: Sequence[str]) -> list[list[str]]:
        if self._tok is None:
            self._tok = TokenizeWithRules(SpacyTokenizer(self.lang))
        texts = list(map(fasttok.valid_unicode, texts))
        limit = fasttok.MAX_PIECE_CHARS
        if all(len(t) <= limit for t in texts):
            return [list(toks) for toks in self._tok(texts)]  # fastai's own path
        return [list(toks) if len(t) <= limit else self._long(t)
                for t, toks in zip(texts, self._tok(t if len(t) <= limit else "" for t in texts))]

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


def tokenize(
    texts,
    lang: str = "en",
    cache_dir: Path | None = None,
    num_workers: int = 0,
    desc: str = "Tokenizing",
    progress: bool = True,
    text_column: str = "text",
) -> Tokenized:
    """Tokenize texts as fastai does, into token ids on disk, cached by content and settings.

    Args:
        texts: a list (or Series) of strings, a `datasets.Dataset` (its `text_column`), or a `TextSource`
            such as `FileTexts(paths)`, which reads files lazily.
        lang: spaCy language of the blank tokenizer.
        cache_dir: where `tokens/<key>/` is kept; None: a temporary folder that lives as long as the result.
        num_workers: processes tokenizing, this one included (0: one per CPU; large corpora only).
        desc: label of the progress bar.
        progress: show a progress bar.
        text_column: the column read from a `datasets.Dataset`.

    Returns:
        A `Tokenized`: ids per text into its own token table (`itos`) and the token counts.
    """
    return tokenize_corpus(as_source(texts, text_column), lang, cache_dir, num_workers, desc, progress)


def build_vocab(token_sets: Sequence[Tokenized], min_freq: int = 3, max_vocab: int = 60000) -> list[str]:
    """fastai's `make_vocab` over the token counts: special tokens first, padded to a multiple of 8.

    Counts are merged in order of first occurrence over the sets in the given order, so ties in frequency
    are broken exactly as fastai's Counter over the same texts breaks them.
    """
    count: Counter = Counter()
    for t in token_sets:
        for tok, c in zip(t.itos, t.counts.tolist()):
            count[tok] += c
    return make_vocab(count, min_freq=min_freq, max_vocab=max_vocab)


def extend_vocab(vocab: Sequence[str], extra: Sequence[str], max_vocab: int) -> list[str]:
    """`vocab`, then the words of `extra` it lacks in their order, up to `max_vocab` words in all.

    `extra` is a pretrained LM's vocab: a word the labelled texts show fewer than `min_freq` times (or not at all)
    would be `xxunk` at prediction time although the LM has an embedding for it. Padded to a multiple of 8 with
    `xxfake` as fastai's `make_vocab` pads, so the ids of `vocab`'s words do not change.
    """
    out = [w for w in vocab if w != "xxfake"]
    seen = set(out)
    for w in extra:
        if len(out) >= max_vocab:
            break
        if w not in seen and w != "xxfake":
            out.append(w)
            seen.add(w)
    return out + ["xxfake"] * (8 - len(out) % 8)


def vocab_index(vocab: Sequence[str]) -> dict[str, int]:
    """Token -> id, as fastai's `Numericalize` builds it (`xxfake` only pads the vocab: it is never a token)."""
    return {v: k for k, v in enumerate(vocab) if v != "xxfake"}


def vocab_map(itos: Sequence[str], vocab: Sequence[str]) -> np.ndarray:
    """Corpus token id -> vocab id, as fastai's `Numericalize` maps (unknown -> xxunk)."""
    o2i = vocab_index(vocab)
    return np.fromiter((o2i.get(t, UNK) for t in itos), dtype=np.int32, count=len(itos))


def numericalize(tokens: Tokenized, vocab: Sequence[str]) -> list[np.ndarray]:
    """Token ids per document in `vocab` (int32 arrays, in memory): for small data; see `write_ids`."""
    remap = vocab_map(tokens.itos, vocab)
    return [remap[d] for d in tokens.docs()]


def write_ids(tokens: Tokenized, vocab: Sequence[str], path: Path, columns: dict[str, Sequence] | None = None,
              ) -> datasets.Dataset:
    """Write the corpus as ids in `vocab` to the Arrow file `path`, batch by batch; return it memory-mapped.

    `columns` (e.g. text, label) are stored beside `ids`, one value per document.
    """
    remap = vocab_map(tokens.itos, vocab)
    path = Path(path)
    with atomic_path(path) as tmp:
        writer = datasets.arrow_writer.ArrowWriter(path=str(tmp))
        row = 0
        for chunk in tokens.ids.data.table.column("ids").chunks:
            n = len(chunk)
            if n == 0:
                continue
            values = remap[chunk.values.to_numpy()]  # the chunk's offsets index its full values buffer
            cols = {"ids": pa.ListArray.from_arrays(chunk.offsets, pa.array(values, type=pa.int32()))}
            for name, col in (columns or {}).items():
                cols[name] = pa.array(list(col[row:row + n]))
            writer.write_table(pa.table(cols))
            row += n
        if row == 0:
            raise ValueError("write_ids: the tokenized corpus is empty")
        writer.finalize()
    return datasets.Dataset.from_file(str(path))


@functools.lru_cache(maxsize=4)
def fast_tokenizer(lang: str = "en") -> FastTokenizer:
    """One `FastTokenizer` per language for in-memory use in this process (its memo is bounded)."""
    return FastTokenizer(lang)


def encode(tok: FastTokenizer, o2i: dict[str, int], texts: Sequence[str]) -> list[np.ndarray]:
    """Tokenize and numericalize a few texts in memory (the prediction path): int64 ids per text, tokens not
    in `o2i` (a vocab's token -> id, as fastai's `Numericalize`) as `UNK`."""
    if not texts:
        return []
    lens, ids, table = tok.encode_batch(list(texts))
    # ids index the batch's table of distinct tokens: look each distinct token up once
    lut = np.fromiter((o2i.get(t, UNK) for t in table), dtype=np.int64, count=len(table))
    return np.split(lut[ids], np.cumsum(lens)[:-1])


def save_vocab(path: Path, vocab: Sequence[str], min_freq: int, max_vocab: int, lang: str) -> None:
    """The vocab as JSON: itos plus the settings that made it."""

    write_json(Path(path), {"itos": list(vocab), "min_freq": min_freq, "max_vocab": max_vocab,
                            "special_tokens": SPECIAL_TOKENS, "lang": lang, "tokenizer": "fastai-spacy-rules"})


def load_vocab(path: Path) -> list[str]:
    """itos from a vocab JSON written by `save_vocab` (or a plain JSON list)."""
    obj = json.loads(Path(path).read_text(encoding="utf-8"))
    return list(obj["itos"] if isinstance(obj, dict) else obj)
