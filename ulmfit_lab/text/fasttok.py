"""fastai's tokenization, token for token, made fast by memoizing whitespace-delimited pieces.

fastai tokenizes a text by applying its rules (`defaults.text_proc_rules`: fix_html, replace_rep, ...,
lowercase) to the whole text, running spaCy's tokenizer on the result, and mapping a post-rule
(`replace_space`) over the tokens. Here the rules are fastai's own functions, applied in the same order
(`text_rules` only skips work that provably changes nothing); what changes is how spaCy's output is had.

Why a memo gives the same tokens: spaCy's tokenizer walks the text, cuts it into runs of whitespace and
non-whitespace, drops a single space that follows a non-space run, and tokenizes each remaining run on its
own (prefixes, suffixes, infixes, special cases, URLs: all act inside a run; see `Tokenizer._tokenize_affixes`).
So the text can be cut at exactly those dropped spaces (`_ABSORBED_SPACE`) into pieces, and the tokens of
the text are the tokens of its pieces, each tokenized alone: a piece starts either at the start of the text
or right after a dropped space, which is the state spaCy's loop is in at the start of a text. Pieces repeat
(words), so a dict from piece to token ids replaces most calls into spaCy; a new piece without whitespace
goes through `_affix_tokens`, spaCy's own affix steps and regexes without building a Doc.

The one exception is spaCy's special-case matcher (`_apply_special_cases`), which runs over the whole doc:
a match that spans a dropped space changes nothing itself (its text has a space, which no rule has), but it
can win the overlap filter against a match inside one piece and so stop that piece's retokenization. E.g.
"x:) )" gives ['x', ':', ')', ')'] in one call but ['x', ':)'] + [')'] piece by piece. Such a match needs
the tokens either side of a cut to be neighbours in some matcher pattern, and a piece beside it to hold a
text-changing special case's output (`special_case_hazards`); a text where that can happen is tokenized
whole by spaCy instead, exactly as fastai does. tests/test_fasttok.py and benchmarks/tokenization.py check the
result against fastai's own path.

A text over `MAX_PIECE_CHARS` characters, which spaCy could not take whole, goes (as in `text.FastaiTokenizer`)
through the rules whole and then through the memo path as its `split_long` pieces, each as if a text.
"""

from __future__ import annotations

import dis
import marshal
import re
import types
from collections.abc import Callable, Sequence
from itertools import chain

import numpy as np

# the spaces spaCy drops: a single ' ' right after a non-space character (everything else is kept)
_ABSORBED_SPACE = re.compile(r"(?<=\S) ")
_SPACE_AFTER_SPACE = re.compile(r"\s ")  # absent: every ' ' is dropped, and str.split(" ") cuts the same
_WHITESPACE = re.compile(r"\s")

# fastai's replace_all_caps then replace_maj, where only `lowercase` follows: insert xxup / xxmaj before the
# same words, leave lowercasing to `lowercase` (str.lower acts per word: whitespace stops Final_Sigma)
_UP = re.compile(r"(?<!\S)(?=[A-Z][^a-z\s]+(?!\S))")  # all caps, 2+ characters
_MAJ = re.compile(r"(?<!\S)(?=[A-Z][^A-Z\s]*[a-z][^A-Z\s]*(?!\S))")  # one capital first, some a-z (not all caps)
# any replace_wrep match holds a word three times in a row at its start: without that, skip the slow regex
_WREP_HINT = re.compile(r"\s(\w+)\s+\1\s+\1")
_WREP_HINT_AT_START = re.compile(r"(\w+)\s+\1\s+\1")

# spaCy refuses a text over `nlp.max_length` (1M characters) and its memory grows with the text: longer
# texts go through fastai's text rules whole, are then cut at single spaces into pieces of at most this size
# for spaCy, and their tokens joined again (the same tokens as in one piece: spaCy splits at spaces first).
MAX_PIECE_CHARS = 100_000
_SURROGATE = re.compile("[\ud800-\udfff]")


def valid_unicode(text: str) -> str:
    """`text` with lone surrogates (which spaCy cannot hash) replaced by U+FFFD."""
    return text if text.isascii() else _SURROGATE.sub("\ufffd", text)


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


def text_rules(rules: Sequence[Callable[[str], str]]) -> Callable[[str], str]:
    """fastai's pre-rules applied in order to one text (`compose(*rules)`), with exact shortcuts when the
    rules are fastai's defaults: replace_wrep only where its pattern can match, and replace_all_caps +
    replace_maj as two inserting passes without a Python call per capitalized word."""
    from fastai.text import core as fc

    if not _are_default_rules(rules):
        return _compose(rules)
    return _default_rules(rules, fc.TK_UP, fc.TK_MAJ)


def _are_default_rules(rules: Sequence[Callable]) -> bool:
    from fastai.text import core as fc

    defaults = [fc.fix_html, fc.replace_rep, fc.replace_wrep, fc.spec_add_spaces, fc.rm_useless_spaces,
                fc.replace_all_caps, fc.replace_maj, fc.lowercase]
    return len(rules) == len(defaults) and all(a is b for a, b in zip(rules, defaults))


def _compose(fns: Sequence[Callable[[str], str]]) -> Callable[[str], str]:
    """fastcore's `compose(*fns)` for one argument: each function in turn."""
    fns = list(fns)

    def apply(t: str) -> str:
        for f in fns:
            t = f(t)
        return t

    return fns[0] if len(fns) == 1 else apply


def _default_rules(rules: Sequence[Callable[[str], str]], tk_up: str, tk_maj: str) -> Callable[[str], str]:
    """The shortcut of `text_rules` over fastai's default rules (given in their order)."""
    fix_html, replace_rep, replace_wrep, spec_add_spaces, rm_useless_spaces, _, _, lowercase = rules
    up, maj = f"{tk_up} ", f"{tk_maj} "

    def apply(t: str) -> str:
        t = replace_rep(fix_html(t))
        if _WREP_HINT.search(t) is not None or _WREP_HINT_AT_START.match(t) is not None:
            t = replace_wrep(t)
        t = rm_useless_spaces(spec_add_spaces(t))
        return lowercase(_MAJ.sub(maj, _UP.sub(up, t)))

    return apply


# ---------------------------------------------------------------- fastai's rules in a process without fastai


def _global_names(code: types.CodeType) -> set[str]:
    names = {i.argval for i in dis.get_instructions(code) if i.opname in ("LOAD_GLOBAL", "LOAD_NAME")}
    for c in code.co_consts:
        if isinstance(c, types.CodeType):
            names |= _global_names(c)
    return names


def portable(f: Callable) -> tuple | None:
    """fastai's rule `f` as data that rebuilds the very same function (its bytecode, defaults and the module
    globals it reads: strings, compiled regexes, modules) where fastai is not imported; None if it reads
    anything else. A worker that imports fastai carries torch: ~400 MB more per process."""
    if not isinstance(f, types.FunctionType) or f.__closure__ or f.__kwdefaults__:
        return None
    values, modules = {}, {}
    for name in _global_names(f.__code__) & f.__globals__.keys():
        v = f.__globals__[name]
        if isinstance(v, types.ModuleType):
            modules[name] = v.__name__
        elif isinstance(v, (str, int, float, bool, type(None), re.Pattern)):
            values[name] = v
        else:
            return None
    return f.__name__, marshal.dumps(f.__code__), values, modules, f.__defaults__


def rebuild(spec: tuple) -> Callable:
    """The function `portable` described, in this process."""
    import builtins
    import importlib

    name, code, values, modules, defaults = spec
    g = {"__builtins__": builtins, "__name__": "fastai_rules", **values,
         **{k: importlib.import_module(m) for k, m in modules.items()}}
    return types.FunctionType(marshal.loads(code), g, name, defaults)


def special_case_hazards(tokenizer, post) -> tuple[set[tuple[str, str]], set[tuple[str, ...]], list[list[str]]]:
    """What a special-case match spanning a cut needs, as tokens after the post-rules.

    Returns (pairs, retokenized, patterns). A matcher pattern is the special case's text tokenized without
    special cases; a match spanning a cut has two neighbouring pattern tokens either side of it (`pairs`).
    A piece whose edge token was retokenized by a special case shows that case's edge token instead of the
    pattern's, so those pairs are added too. The match only changes anything if it stops a retokenization
    inside a piece that touches it, and a retokenization that changes text leaves that case's tokens, in a
    row, in the piece (`retokenized`). `patterns`: the matcher's patterns (raw tokens).
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
            retokenized.add(tuple(post(t) for t in orths))
            last_as.setdefault(pattern[-1], set()).add(orths[-1])
            first_as.setdefault(pattern[0], set()).add(orths[0])
    pairs = set()
    for pattern in patterns:
        for a, b in zip(pattern, pattern[1:]):
            for x in {a} | last_as.get(a, set()):
                for y in {b} | first_as.get(b, set()):
                    pairs.add((post(x), post(y)))
    return pairs, retokenized, patterns


class FastTokenizer:
    """fastai's `TokenizeWithRules(SpacyTokenizer(lang))` with a piece memo, a batch at a time.

    Built lazily, so it pickles to worker processes cheaply. `max_memo` bounds the memo (pieces): past it,
    the memo starts again empty at the next batch, so memory stays flat on corpora of any size. Token ids
    are labels private to this object: `encode_batch` renumbers them per batch.
    """

    def __init__(self, lang: str = "en", max_memo: int = 500_000):
        self.lang, self.max_memo = lang, max_memo
        self._nlp = None
        self.n_whole = 0  # texts tokenized whole by spaCy (outside the memo path)

    def __getstate__(self):
        return {"lang": self.lang, "max_memo": self.max_memo, "_nlp": None, "n_whole": 0}

    def setup(self) -> None:
        """Build spaCy's tokenizer and the special-case tables (done on first use otherwise)."""
        from fastai.text.core import SpacyTokenizer, TokenizeWithRules, defaults

        ref = TokenizeWithRules(SpacyTokenizer(self.lang))  # fastai's own objects: same rules, same nlp
        self._rule_fns, self._post_fns = list(ref.rules), list(defaults.text_postproc_rules)  # what ref uses
        # `_pre`: what fastai's `maps(*rules, batch)` applies to each text
        self._build(ref.tok.pipe.__self__, text_rules(self._rule_fns), ref.post_f)

    def worker_state(self) -> dict | None:
        """What `from_state` needs to rebuild this tokenizer in a process that never imports fastai (nor torch):
        spaCy's tokenizer as bytes and fastai's rules as `portable` functions; None where a rule is not."""
        if self._nlp is None:
            self.setup()
        from fastai.text import core as fc

        rules, post = [portable(f) for f in self._rule_fns], [portable(f) for f in self._post_fns]
        if None in rules or None in post or not post:
            return None
        return {"lang": self.lang, "max_memo": self.max_memo, "tokenizer": self._tok.to_bytes(), "rules": rules,
                "post": post, "default_rules": _are_default_rules(self._rule_fns), "tk": (fc.TK_UP, fc.TK_MAJ)}

    @classmethod
    def from_state(cls, state: dict) -> FastTokenizer:
        """The tokenizer `worker_state` described, set up (imports spaCy, not fastai)."""
        import spacy

        tok = cls(state["lang"], state["max_memo"])
        nlp = spacy.blank(state["lang"])
        nlp.tokenizer.from_bytes(state["tokenizer"])
        rules, post = [rebuild(r) for r in state["rules"]], [rebuild(r) for r in state["post"]]
        pre = _default_rules(rules, *state["tk"]) if state["default_rules"] else _compose(rules)
        tok._build(nlp, pre, _compose(post))
        return tok

    def _build(self, nlp, pre: Callable[[str], str], post: Callable[[str], str]) -> None:
        from spacy.symbols import ORTH

        self._pre, self._post, self._nlp, self._tok = pre, post, nlp, nlp.tokenizer
        # token texts never depend on lexeme attributes (norm, shape, ...): skip computing them
        self._nlp.vocab.lex_attr_getters = {}
        self._pairs, retokenized, patterns = special_case_hazards(self._tok, self._post)
        # per token: may end a pair (1), may start one (2), may come from a retokenization (4)
        self._flag_of: dict[str, int] = {}
        for a, b in self._pairs:
            self._flag_of[a] = self._flag_of.get(a, 0) | 1
            self._flag_of[b] = self._flag_of.get(b, 0) | 2
        self._retokenized: dict[str, list[tuple[str, ...]]] = {}  # by first token
        for orths in retokenized:
            self._retokenized.setdefault(orths[0], []).append(orths)
            for t in orths:
                self._flag_of[t] = self._flag_of.get(t, 0) | 4
        self._rules = {k: [d[ORTH] for d in v] for k, v in (self._tok.rules or {}).items()}
        self._patterns: dict[str, list[tuple[str, ...]]] = {}  # the matcher's patterns, by first token
        for pattern in patterns:
            self._patterns.setdefault(pattern[0], []).append(tuple(pattern))
        self._reset()

    def _reset(self) -> None:
        """Forget every piece and token: ids are only labels inside a batch (see `encode_batch`)."""
        self._memo: dict[str, tuple[int, ...]] = {"": ()}
        self._attached: dict[str, list[str]] = {}  # `_attach` results (affix-free strings: mostly words)
        self.itos: list[str] = []
        self._stoi: dict[str, int] = {}
        self._flags = np.zeros(1024, dtype=np.uint8)

    # ------------------------------------------------------------------ pieces

    def _id(self, tok: str) -> int:
        i = self._stoi.get(tok)
        if i is None:
            i = self._stoi[tok] = len(self.itos)
            self.itos.append(tok)
            if i >= len(self._flags):
                self._flags = np.resize(self._flags, 2 * i)
            self._flags[i] = self._flag_of.get(tok, 0)
        return i

    def _spacy_tokens(self, piece: str) -> list[str]:
        """spaCy's tokens for one piece: `_affix_tokens`, or spaCy itself where that declines."""
        if piece in self._rules or _WHITESPACE.search(piece):
            return [t.text for t in self._tok(piece)]
        tokens = self._affix_tokens(piece)
        return tokens if tokens is not None else [t.text for t in self._tok(piece)]

    def _affix_tokens(self, string: str) -> list[str] | None:
        """spaCy's tokens for a whitespace-free string that is no special case, without making a Doc.

        The same steps, the same regexes and special cases as `Tokenizer._split_affixes` and
        `_attach_tokens` (spaCy 3). None when a special-case pattern occurs in the tokens: spaCy's matcher
        would then retokenize, so the caller asks spaCy.
        """
        tok, rules = self._tok, self._rules
        token_match, find_prefix, find_suffix = tok.token_match, tok.find_prefix, tok.find_suffix
        prefixes, suffixes = [], []
        last_size = 0
        while string and len(string) != last_size:  # _split_affixes
            if (token_match is not None and token_match(string)) or string in rules:
                break
            last_size = len(string)
            pre_len = find_prefix(string)
            if pre_len:
                prefix, minus_pre = string[:pre_len], string[pre_len:]
                if minus_pre and minus_pre in rules:
                    string = minus_pre
                    prefixes.append(prefix)
                    break
            suf_len = find_suffix(string[pre_len:])
            if suf_len:
                suffix, minus_suf = string[-suf_len:], string[:-suf_len]
                if minus_suf and minus_suf in rules:
                    string = minus_suf
                    suffixes.append(suffix)
                    break
            if pre_len and suf_len and (pre_len + suf_len) <= len(string):
                string = string[pre_len:-suf_len]
                prefixes.append(prefix)
                suffixes.append(suffix)
            elif pre_len:
                string = minus_pre
                prefixes.append(prefix)
            elif suf_len:
                string = minus_suf
                suffixes.append(suffix)
        tokens = prefixes
        if string:
            attached = self._attached.get(string)
            if attached is None:
                attached = self._attach(string)
                if len(self._attached) < self.max_memo:
                    self._attached[string] = attached
            tokens += attached
        tokens += reversed(suffixes)
        patterns = self._patterns
        for i, t in enumerate(tokens):  # spaCy's special-case matcher: would any pattern match here?
            for pattern in patterns.get(t, ()):
                if tuple(tokens[i:i + len(pattern)]) == pattern:
                    return None
        return tokens

    def _attach(self, string: str) -> list[str]:
        """`Tokenizer._attach_tokens` for the affix-free middle of a piece: special case, URL, or infixes."""
        tok = self._tok
        if string in self._rules:
            return list(self._rules[string])
        if ((tok.token_match is not None and tok.token_match(string))
                or (tok.url_match is not None and tok.url_match(string))):
            return [string]
        matches = tok.find_infix(string)
        if not matches:
            return [string]
        out, start = [], 0
        for match in matches:
            infix_start, infix_end = match.start(), match.end()
            if infix_start == 0:  # spaCy skips an infix at the very start
                continue
            if infix_start != start:
                out.append(string[start:infix_start])
            if infix_start != infix_end:
                out.append(string[infix_start:infix_end])
            start = infix_end
        if string[start:]:
            out.append(string[start:])
        return out

    def _fill(self, per_piece: list, pieces: list[str]) -> None:
        """Tokenize the pieces the memo lacks (None in `per_piece`) and memoize them."""
        post, idf, memo, spacy_tokens = self._post, self._id, self._memo, self._spacy_tokens
        for i in [i for i, ids in enumerate(per_piece) if ids is None]:
            piece = pieces[i]
            ids = memo.get(piece)  # seen earlier in this batch
            if ids is None:
                ids = memo[piece] = tuple(idf(post(t)) for t in spacy_tokens(piece))
            per_piece[i] = ids

    def _whole(self, text: str) -> np.ndarray:
        """spaCy on the whole (rule-processed) text, as fastai runs it."""
        self.n_whole += 1
        post, idf = self._post, self._id
        return np.fromiter((idf(post(t.text)) for t in self._nlp.make_doc(text)), dtype=np.int32)

    def _risky_docs(self, ids: np.ndarray, sizes: np.ndarray, n_pieces: np.ndarray) -> set[int]:
        """Texts in which a special-case match across a cut could change the tokens (see the module doc)."""
        ends = np.cumsum(sizes)  # token end of each piece
        last = np.cumsum(n_pieces) - 1  # last piece of each text
        cut = np.ones(len(sizes), dtype=bool)
        cut[last] = False
        p = np.flatnonzero(cut)  # a cut follows piece p ...
        p = p[(sizes[p] > 0) & (sizes[p + 1] > 0)]  # ... between two tokens (a last piece may be empty)
        q = ends[p]  # the first token after the cut
        flags = self._flags[ids]
        hit = np.flatnonzero((flags[q - 1] & 1).astype(bool) & (flags[q] & 2).astype(bool))
        itos, risky = self.itos, set()
        for j in hit.tolist():
            a, m, b = int(q[j]) - int(sizes[p[j]]), int(q[j]), int(ends[p[j] + 1])  # the two pieces' tokens
            if ((itos[ids[m - 1]], itos[ids[m]]) in self._pairs and (flags[a:b] & 4).any()
                    and (self._retokenized_in([itos[i] for i in ids[a:m].tolist()])
                         or self._retokenized_in([itos[i] for i in ids[m:b].tolist()]))):
                risky.add(int(np.searchsorted(last, p[j])))
        return risky

    def _retokenized_in(self, tokens: list[str]) -> bool:
        """Do the tokens hold some text-changing special case's output in a row?"""
        for i, t in enumerate(tokens):
            for orths in self._retokenized.get(t, ()):
                if tuple(tokens[i:i + len(orths)]) == orths:
                    return True
        return False

    # ------------------------------------------------------------------ texts

    def encode_batch(self, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray, list[str]]:
        """Token ids of a batch, numbered by a table of the batch's distinct tokens.

        Returns (lengths, ids, table): `ids` (int32, all texts concatenated) index `table`, the batch's
        distinct tokens in order of first occurrence, so batches from different processes merge in order.
        """
        if self._nlp is None:
            self.setup()
        if len(self._memo) >= self.max_memo:
            self._reset()
        with self._nlp.memory_zone():  # spaCy's vocab would otherwise keep every new word
            pre, max_len, odd_spaces = self._pre, self._nlp.max_length, _SPACE_AFTER_SPACE.search
            # units: what fastai's path hands spaCy, one per text, or a long text's `split_long` pieces
            xs, n_units = [], np.ones(len(texts), dtype=np.int64)
            for k, text in enumerate(texts):
                text = valid_unicode(text)
                if len(text) > MAX_PIECE_CHARS:  # as `text.FastaiTokenizer`: rules on the whole text
                    units = split_long(pre(text))
                    xs += units
                    n_units[k] = len(units)
                else:
                    xs.append(pre(text))
            pieces, whole = [], set()
            n_pieces = np.empty(len(xs), dtype=np.int64)
            for k, x in enumerate(xs):
                if not x or x[0].isspace() or len(x) > max_len:  # the memo path needs a non-space first
                    whole.add(k)
                    ps = [""]
                else:
                    ps = x.split(" ") if odd_spaces(x) is None else _ABSORBED_SPACE.split(x)
                pieces += ps
                n_pieces[k] = len(ps)
            per_piece = list(map(self._memo.get, pieces))
            if None in per_piece:
                self._fill(per_piece, pieces)
            sizes = np.fromiter(map(len, per_piece), dtype=np.int64, count=len(per_piece))
            ids = np.fromiter(chain.from_iterable(per_piece), dtype=np.int32, count=int(sizes.sum()))
            lens = np.add.reduceat(sizes, np.cumsum(n_pieces) - n_pieces) if len(xs) else sizes[:0]
            whole |= self._risky_docs(ids, sizes, n_pieces)
            if whole:
                docs = np.split(ids, np.cumsum(lens)[:-1])
                for k in sorted(whole):
                    docs[k] = self._whole(xs[k])
                lens = np.fromiter(map(len, docs), dtype=np.int64, count=len(docs))
                ids = np.concatenate(docs).astype(np.int32, copy=False)
            if len(xs) != len(texts):  # a long text's units: its tokens are theirs, in order
                lens = np.add.reduceat(lens, np.cumsum(n_units) - n_units)
        n, itos = len(ids), self.itos
        first = np.full(len(itos), n, dtype=np.int64)  # each token's first position in the batch
        np.minimum.at(first, ids, np.arange(n))
        used = np.flatnonzero(first < n)
        order = used[np.argsort(first[used], kind="stable")]
        rank = np.empty(len(itos), dtype=np.int32)
        rank[order] = np.arange(len(order), dtype=np.int32)
        return lens, rank[ids], [itos[i] for i in order.tolist()]

    def tokens(self, texts: Sequence[str]) -> list[list[str]]:
        """Token strings per text (for small inputs and tests)."""
        lens, ids, table = self.encode_batch(list(texts))
        bounds = np.concatenate([[0], np.cumsum(lens)])
        return [[table[i] for i in ids[a:b].tolist()] for a, b in zip(bounds[:-1], bounds[1:])]


# ---------------------------------------------------------------- a worker process


def serve() -> None:
    """A tokenizer worker's loop (corpus.py starts it on this file alone, without the package): a
    `worker_state`, then batches of texts on stdin, `encode_batch` results (or the error) on stdout."""
    import os
    import pickle
    import sys

    inp, out = sys.stdin.buffer, os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)  # whatever else prints goes to stderr, never into the results
    tok = FastTokenizer.from_state(pickle.load(inp))
    heavy = sorted(m for m in ("torch", "fastai") if sys.modules.get(m) is not None)
    pickle.dump({"pid": os.getpid(), "heavy_modules": heavy}, out)
    out.flush()
    while True:
        try:
            texts = pickle.load(inp)
        except EOFError:
            return
        try:
            res = tok.encode_batch(texts)
        except Exception as e:  # the parent raises it
            res = RuntimeError(f"tokenizer worker: {type(e).__name__}: {e}")
        pickle.dump(res, out, protocol=pickle.HIGHEST_PROTOCOL)
        out.flush()
