"""The memoized tokenizer gives fastai's tokens exactly, on texts made to break it.

The reference is fastai's batch path `TokenizeWithRules(SpacyTokenizer("en"))` (what `tokenize_df` runs).
"""

import random

import numpy as np
import pytest
from fastai.text.core import SpacyTokenizer, TokenizeWithRules, defaults
from fastcore.basics import compose

from ulmfit_lab.text.fasttok import _ABSORBED_SPACE, _WHITESPACE, FastTokenizer, text_rules

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
    tok.setup()
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


def test_text_rules_equal_fastais_rules():
    """The shortcuts (replace_wrep only where it can match; caps + maj as two inserting passes) change nothing."""
    rules = list(defaults.text_proc_rules)
    fast, ref = text_rules(rules), compose(*rules)
    texts = adversarial_texts(1500, seed=3) + [
        "A1 B. X- I'M HELLO World McDonald iPhone ΣΑΣ Éa A I", "the the the the end", "the the", "go go go",
        "a a a b b b c c", "Big BIG big", "\nWOW wow WOW", "ÀB Àb", "OK!!! Ok!!!", "X\tY\nZ", "HTML &AMP; Q&A"]
    assert [fast(t) for t in texts] == [ref(t) for t in texts]
    assert text_rules(rules[:-1]) is not fast  # other rules: fastai's compose, no shortcut


def test_affix_steps_equal_spacy_on_random_pieces():
    """`_affix_tokens` (spaCy's prefix/suffix/infix steps without a Doc) agrees with spaCy wherever it answers."""
    tok = FastTokenizer()
    tok.setup()
    rng = random.Random(0)
    alphabet = list("abcxyzAB019.,;:!?'\"()[]{}<>-_/\\#@$%^&*+=~`|…’“”—–«»°€£§©™😀é") + [
        "a.m.", "'s", "n't", ":)", "http://", "www.", ".com", "e.g.", "U.S.", "km", "--"]
    pieces = {"".join(rng.choice(alphabet) for _ in range(rng.randint(1, 10))) for _ in range(6000)}
    pieces = [p for p in pieces if not _WHITESPACE.search(p) and p not in tok._rules]
    answered = 0
    for p in pieces:
        got = tok._affix_tokens(p)
        if got is not None:
            answered += 1
            assert got == [t.text for t in tok._tok(p)], p
    assert answered > len(pieces) // 2


def test_rebuilt_for_a_worker_without_fastai_gives_the_same_tokens(fastai_tok):
    """A worker gets spaCy's tokenizer as bytes and fastai's rules as their code (`portable`), not fastai."""
    texts = adversarial_texts(800, seed=4) + ["x" * 30 + " WOW   the the the the end", "<br />" * 5 + "&amp;"]
    state = FastTokenizer().worker_state()
    assert state is not None and state["default_rules"]
    assert FastTokenizer.from_state(state).tokens(texts) == [list(t) for t in fastai_tok(texts)]
