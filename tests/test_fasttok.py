"""The memoized tokenizer gives fastai's tokens exactly, on texts made to break it.

The reference is fastai's batch path `TokenizeWithRules(SpacyTokenizer("en"))` (what `tokenize_df` runs).
"""

import random

import numpy as np
import pytest
from fastai.text.core import SpacyTokenizer, TokenizeWithRules

from ulmfit_lab.fasttok import _ABSORBED_SPACE, FastTokenizer

# special cases, emoticons, contractions, HTML, caps, repeats, URLs, units, unicode, odd whitespace
FRAGMENTS = [
    "the", "The", "THE", "I", "a", "it's", "don't", "Can't", "DON'T", "'s", "'S", "'", "''", '"', "(", ")", ":", ";",
    "-", ":)", ":-)", ": )", ":))", "(:", "):", ":'(", "(-:", "<3", "</3", "=)", ";)", "^_^", "(^_^)", "8)", "x", "o",
    "s", "d", "ll", "em", "1", "0", "D", "p", "10a.m.", "a.m.", "U.S.", "e.g.", "Dr.", "etc.", "...", "…", "!!!",
    "!?", "&amp;", "&quot;", "&#39;", "<br />", "<br /><br />", "\\n", "#39;", "quot;", "nbsp;", "&nbsp;",
    "http://x.com/a?b=1", "www.imdb.com", "me@mail.com", "5km", "$5", "5%", "10/10", "and/or", "#tag", "\\", "café",
    "ÉCOLE", "😀", "👍🏽", "—", "«", "“", "’", "Σ", "ΣΑΣ", "İstanbul", "ß", "ﬁ", "sooooo", "....", "----", "xxbos",
    "xxmaj", "<unk>", " @.@ ", " @-@ ", "\u200b", "a-b", "3-4", "'em", "'cause", "y'all", "gonna", "cannot", "they’ll",
]
SEPARATORS = [" ", " ", " ", " ", "  ", "", "\n", " \n ", "\t", " \t", "\xa0", " \xa0 ", "\u2009", "\r\n", "\n\n",
              "   "]


def adversarial_texts(n: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        t = "".join(rng.choice(FRAGMENTS) + rng.choice(SEPARATORS) for _ in range(rng.randint(0, 30)))
        out.append(t.upper() if rng.random() < 0.2 else (" " + t if rng.random() < 0.2 else t))
    return out + ["", " ", "\n", "\t\t", "x:) )", "x'' s", "a : ) b", ": ) :)", "it 's", "x( :)", ": (:they’ll d"]


@pytest.fixture(scope="module")
def fastai_tok():
    return TokenizeWithRules(SpacyTokenizer("en"))


def test_identical_to_fastai_on_adversarial_texts(fastai_tok):
    texts = adversarial_texts(1500, seed=0)
    expected = [list(t) for t in fastai_tok(texts)]
    tok = FastTokenizer()
    assert tok.tokens(texts) == expected
    assert tok.tokens(texts) == expected  # again, now from the memo
    assert tok.n_whole > 0  # some texts needed the whole-text path


def test_cut_spanning_special_case_is_caught(fastai_tok):
    """spaCy's special-case matcher can span a dropped space ("x:) )" keeps ':' and ')' apart, while "x:)"
    alone gives ':)'): piece by piece differs, so such a text must go through spaCy whole."""
    text = "x:) )"
    tok = FastTokenizer()
    tok._setup()
    whole = [t.text for t in tok._tok("xxbos " + text)]
    by_piece = [t.text for p in _ABSORBED_SPACE.split("xxbos " + text) for t in tok._tok(p)]
    assert whole != by_piece  # the hazard is real ...
    assert tok.tokens([text]) == [list(t) for t in fastai_tok([text])]  # ... and handled
    assert tok.n_whole == 1


def test_batch_tables_and_memo_reset_keep_tokens(fastai_tok):
    """Batches number tokens by their own table in first-occurrence order; a reset memo changes nothing."""
    texts = adversarial_texts(400, seed=1)
    expected = [list(t) for t in fastai_tok(texts)]
    tok = FastTokenizer(max_memo=50)  # resets between batches
    got = []
    for i in range(0, len(texts), 100):
        lens, ids, table = tok.encode_batch(texts[i:i + 100])
        first_seen = list(dict.fromkeys(ids.tolist()))
        assert first_seen == list(range(len(table)))  # table order = order of first occurrence
        bounds = np.concatenate([[0], np.cumsum(lens)])
        got += [[table[k] for k in ids[a:b]] for a, b in zip(bounds[:-1], bounds[1:])]
    assert got == expected
