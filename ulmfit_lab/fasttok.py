"""fastai's tokenization, token for token, made fast by memoizing whitespace-delimited pieces.

fastai tokenizes a text by applying its rules (`defaults.text_proc_rules`: fix_html, replace_rep, ...,
lowercase) to the whole text, running spaCy's tokenizer on the result, and mapping a post-rule
(`replace_space`) over the tokens. Here the rules are fastai's own functions, applied the same way; what
changes is how spaCy's output is obtained.

Why a memo gives the same tokens: spaCy's tokenizer walks the text, cuts it into runs of whitespace and
non-whitespace, drops a single space that follows a non-space run, and tokenizes each remaining run on its
own (prefixes, suffixes, infixes, special cases, URLs: all act inside a run; see `Tokenizer._tokenize_affixes`).
So the text can be cut at exactly those dropped spaces (`_ABSORBED_SPACE`) into pieces, and the tokens of
the text are the tokens of its pieces, each tokenized alone: a piece starts either at the start of the text
or right after a dropped space, which is the state spaCy's loop is in at the start of a text. Pieces repeat
(words), so a dict from piece to token ids replaces most calls into spaCy.

The one exception is spaCy's special-case matcher (`_apply_special_cases`), which runs over the whole doc:
a match that spans a dropped space changes nothing itself (its text has a space, which no rule has), but it
can win the overlap filter against a match inside one piece and so stop that piece's retokenization. E.g.
"x:) )" gives ['x', ':', ')', ')'] in one call but ['x', ':)'] + [')'] piece by piece. Such a match needs
the last token of one piece and the first of the next to be neighbours in some matcher pattern, so a text in
which any two neighbouring tokens could be (`_boundary_sets`) is tokenized whole by spaCy instead, exactly as
fastai does. tests/test_fasttok.py and benchmarks/tokenize.py check the result against fastai's own path.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from itertools import chain

import numpy as np

# the spaces spaCy drops: a single ' ' right after a non-space character (everything else is kept)
_ABSORBED_SPACE = re.compile(r"(?<=\S) ")


def boundary_pairs(tokenizer, post) -> tuple[set[tuple[str, str]], set[str]]:
    """What a special-case match spanning a cut needs, as tokens after the post-rules.

    Returns (pairs, retokenized). A matcher pattern is the special case's text tokenized without special
    cases; a match spanning a cut has two neighbouring pattern tokens either side of it (`pairs`). A piece
    whose edge token was retokenized by a special case shows that case's edge token instead of the
    pattern's, so those pairs are added too. The match only changes anything if it stops a retokenization
    inside a piece that touches it, and a retokenization that changes text leaves that case's tokens in the
    piece (`retokenized`).
    """
    from spacy.symbols import ORTH
    from spacy.tokenizer import Tokenizer

    bare = Tokenizer(tokenizer.vocab, rules={}, prefix_search=tokenizer.prefix_search,
                     suffix_search=tokenizer.suffix_search, infix_finditer=tokenizer.infix_finditer,
                     token_match=tokenizer.token_match, url_match=tokenizer.url_match)
    patterns, last_as, first_as, retokenized = [], {}, {}, set()
    for string, substrings in (tokenizer.rules or {}).items():
        in_matcher = (not tokenizer.faster_heuristics or tokenizer.find_prefix(string)
                      or tokenizer.find_infix(string) or tokenizer.find_suffix(string) or " " in string)
        if not in_matcher:  # the same test as `Tokenizer.add_special_case`
            continue
        pattern = [t.text for t in bare(string)]
        patterns.append(pattern)
        orths = [s[ORTH] for s in substrings]
        if orths != pattern:  # this case changes the tokens it matches
            retokenized.update(post(t) for t in orths)
            last_as.setdefault(pattern[-1], set()).add(orths[-1])
            first_as.setdefault(pattern[0], set()).add(orths[0])
    pairs = set()
    for pattern in patterns:
        for a, b in zip(pattern, pattern[1:]):
            for x in {a} | last_as.get(a, set()):
                for y in {b} | first_as.get(b, set()):
                    pairs.add((post(x), post(y)))
    return pairs, retokenized


class FastTokenizer:
    """fastai's `TokenizeWithRules(SpacyTokenizer(lang))` with a piece memo; ids are this object's own.

    `encode_batch` returns each text's tokens as ids into `itos`, the tokens in the order this object first
    produced them (the first-occurrence order over all texts it has encoded, as fastai's Counter sees them).
    Built lazily, so it pickles to worker processes cheaply. `max_memo` bounds the memo (pieces).
    """

    def __init__(self, lang: str = "en", max_memo: int = 500_000):
        self.lang, self.max_memo = lang, max_memo
        self._nlp = None
        self.n_whole = 0  # texts tokenized whole by spaCy (outside the memo path)

    def __getstate__(self):
        return {"lang": self.lang, "max_memo": self.max_memo, "_nlp": None, "n_whole": 0}

    def _setup(self) -> None:
        from fastai.text.core import SpacyTokenizer, TokenizeWithRules
        from fastcore.basics import compose

        ref = TokenizeWithRules(SpacyTokenizer(self.lang))  # fastai's own objects: same rules, same nlp
        self._pre = compose(*ref.rules)  # what fastai's `maps(*rules, batch)` applies to each text
        self._post = ref.post_f
        self._nlp = ref.tok.pipe.__self__
        self._tok = self._nlp.tokenizer
        # token texts never depend on lexeme attributes (norm, shape, ...): skip computing them
        self._nlp.vocab.lex_attr_getters = {}
        self._reset()
        self._pairs, retokenized = boundary_pairs(self._tok, self._post)
        # per token: may end a pair (1), may start one (2), may come from a retokenization (4)
        self._flag_of = {}
        for a, b in self._pairs:
            self._flag_of[a] = self._flag_of.get(a, 0) | 1
            self._flag_of[b] = self._flag_of.get(b, 0) | 2
        for t in retokenized:
            self._flag_of[t] = self._flag_of.get(t, 0) | 4

    def _reset(self) -> None:
        """Forget every piece and token (ids start again from 0): bounds memory on endless corpora."""
        self._memo: dict[str, tuple[int, ...]] = {}
        self._added: list[str] = []  # pieces memoized while encoding the current text
        self.itos: list[str] = []
        self._stoi: dict[str, int] = {}
        self._flags = np.zeros(1024, dtype=np.uint8)

    # ------------------------------------------------------------------ ids

    def _id(self, tok: str) -> int:
        i = self._stoi.get(tok)
        if i is None:
            i = self._stoi[tok] = len(self.itos)
            self.itos.append(tok)
            if i >= len(self._flags):
                self._flags = np.resize(self._flags, 2 * i)
            self._flags[i] = self._flag_of.get(tok, 0)
        return i

    def _fill(self, per_piece: list, pieces: list[str]) -> None:
        """Tokenize the pieces the memo lacks (None in `per_piece`), in text order, and memoize them."""
        post, idf, memo, tok = self._post, self._id, self._memo, self._tok
        i = per_piece.index(None)
        while True:
            piece = pieces[i]
            ids = memo.get(piece)  # seen earlier in this text
            if ids is None:
                ids = tuple(idf(post(t.text)) for t in tok(piece))
                if len(memo) < self.max_memo:
                    memo[piece] = ids
                    self._added.append(piece)
            per_piece[i] = ids
            try:
                i = per_piece.index(None, i + 1)
            except ValueError:
                return

    def _whole(self, text: str) -> np.ndarray:
        """spaCy on the whole (rule-processed) text, as fastai runs it."""
        self.n_whole += 1
        post, idf = self._post, self._id
        return np.fromiter((idf(post(t.text)) for t in self._nlp.make_doc(text)), dtype=np.int32)

    def _risky(self, ids: np.ndarray, sizes: list[int]) -> bool:
        """Could a special-case match across a cut (between pieces of `sizes` tokens) change the tokens?"""
        flags = self._flags[ids]
        if not (flags & 4).any():
            return False
        bounds = np.cumsum([0, *sizes])
        cuts = bounds[1:-1]
        cuts = cuts[cuts < len(ids)]  # the last piece may be empty ("xxbos " of an empty text)
        hit = np.flatnonzero((flags[cuts - 1] & 1).astype(bool) & (flags[cuts] & 2).astype(bool))
        itos = self.itos
        for m in hit.tolist():  # cut m is between piece m and piece m + 1
            q = int(cuts[m])
            if (itos[ids[q - 1]], itos[ids[q]]) in self._pairs and (flags[bounds[m]:bounds[m + 2]] & 4).any():
                return True
        return False

    def _rollback(self, n_tokens: int) -> None:
        """Forget the pieces and tokens the current text added, so ids stay in first-occurrence order."""
        for p in self._added:
            del self._memo[p]
        for t in self.itos[n_tokens:]:
            del self._stoi[t]
        del self.itos[n_tokens:]

    # ------------------------------------------------------------------ texts

    def encode(self, text: str) -> np.ndarray:
        """One text's token ids (int32) into `itos`."""
        if self._nlp is None:
            self._setup()
        x = self._pre(text)
        if not x or x[0].isspace() or len(x) > self._nlp.max_length:
            return self._whole(x)  # the memo path assumes a text starting with a non-space (xxbos)
        pieces = _ABSORBED_SPACE.split(x)
        per_piece = list(map(self._memo.get, pieces))
        n_tokens = None
        if None in per_piece:  # pieces not seen yet: tokenize them (ids are handed out in text order)
            n_tokens = len(self.itos)
            self._added = []
            self._fill(per_piece, pieces)
        ids = np.fromiter(chain.from_iterable(per_piece), dtype=np.int32)
        if len(pieces) > 1 and self._risky(ids, list(map(len, per_piece))):
            if n_tokens is not None:
                self._rollback(n_tokens)
            return self._whole(x)
        return ids

    def encode_batch(self, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray, list[str]]:
        """Token ids of a batch, numbered by a table of the batch's distinct tokens.

        Returns (lengths, ids, table): `ids` (int32, all texts concatenated) index `table`, the batch's
        distinct tokens in order of first occurrence, so batches from different processes merge in order.
        """
        if self._nlp is None:
            self._setup()
        if len(self._memo) >= self.max_memo:  # batch tables make ids independent of this object's state
            self._reset()
        with self._nlp.memory_zone():  # spaCy's vocab would otherwise keep every new word
            docs = [self.encode(t) for t in texts]
        lens = np.fromiter(map(len, docs), dtype=np.int64, count=len(docs))
        flat = np.concatenate(docs) if docs else np.zeros(0, dtype=np.int32)
        uniq, first, inv = np.unique(flat, return_index=True, return_inverse=True)
        order = np.argsort(first, kind="stable")
        rank = np.empty(len(uniq), dtype=np.int32)
        rank[order] = np.arange(len(uniq), dtype=np.int32)
        itos = self.itos
        return lens, rank[inv.reshape(-1)], [itos[i] for i in uniq[order].tolist()]

    def tokens(self, texts: Sequence[str]) -> list[list[str]]:
        """Token strings per text (for small inputs and tests)."""
        if self._nlp is None:
            self._setup()
        itos = self.itos
        return [[itos[i] for i in self.encode(t).tolist()] for t in texts]
