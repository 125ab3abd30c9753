"""Text to token ids: fastai's tokenization rules (fast path in `fasttok`), corpora cached as HF datasets, vocab.

`corpus` tokenizes any text source out of core into a cached `Tokenized` (one Arrow table of ids), in worker
processes; `vocab` builds the vocabulary and numericalizes; `fasttok` is the tokenizer itself (spaCy's rules
without spaCy's pipeline, checked token for token against fastai's `SpacyTokenizer`).
"""

from .corpus import DatasetTexts, DocIds, FileTexts, ListTexts, TextSource, Tokenized, tokenize_corpus
from .vocab import (
    SPECIAL_TOKENS,
    FastaiTokenizer,
    build_vocab,
    encode,
    fast_tokenizer,
    load_vocab,
    numericalize,
    save_vocab,
    tokenize,
    write_ids,
)

__all__ = ["SPECIAL_TOKENS", "DatasetTexts", "DocIds", "FastaiTokenizer", "FileTexts", "ListTexts", "TextSource",
           "Tokenized", "build_vocab", "encode", "fast_tokenizer", "load_vocab", "numericalize", "save_vocab",
           "tokenize", "tokenize_corpus", "write_ids"]
