"""Our batched, cached tokenization gives fastai's tokens and vocab exactly.

The reference is fastai's batch path (`tokenize_df`, what `TextBlock.from_df` trains on). Note that fastai's
single-string path (`Tokenizer.encodes`) skips the post-rule `replace_space`, so it can differ on tokens that
contain a space (e.g. "\\n "): we follow the training path everywhere, prediction included.
"""

import random

import pandas as pd
from fastai.text.core import tokenize_df
from fastai.text.data import Numericalize

from ulmfit_lab.text.vocab import build_vocab, numericalize, tokenize

SAMPLES = [
    "This movie was GREAT!!! I loved it.<br /><br />10/10", "Terrible &amp; boring &quot;film&quot; ...",
    "  ", "", "Sooooo goooood", "very very very very bad", "Ünïcödé naïve café — “quotes” and emojis 😀👍🏽",
    "I can't won't don't", "THE END", "#hashtag @user http://example.com/x?y=1", "a\tb\nc", "1,000,000 $ 5.5%",
    "<i>italic</i> and \\n escaped", "Mr. Smith's dog", "xxbos xxmaj looks like special tokens",
]


def _varied(n=300, seed=0):
    rng = random.Random(seed)
    words = ["movie", "GREAT", "Bad", "!!!", "loooove", "the", "<br />", "&amp;", "café", "😀", "don't", "ok", "..."]
    return SAMPLES + [" ".join(rng.choice(words) for _ in range(rng.randint(0, 25))) for _ in range(n)]


def test_tokens_identical_to_fastai(tmp_path):
    texts = _varied()
    ours = tokenize(texts, cache_dir=tmp_path)["tokens"]
    df, _ = tokenize_df(pd.DataFrame({"text": texts}), "text", n_workers=0)
    assert ours == [list(t) for t in df["text"]]


def test_vocab_and_ids_identical_to_fastai(tmp_path):
    texts = _varied(seed=1)
    ds = tokenize(texts, cache_dir=tmp_path)
    vocab = build_vocab([ds], min_freq=2, max_vocab=60)
    df, _ = tokenize_df(pd.DataFrame({"text": texts}), "text", n_workers=0)
    toks = list(df["text"])
    num = Numericalize(min_freq=2, max_vocab=60)
    num.setup(toks)
    assert vocab == list(num.vocab)
    ids = numericalize(ds, vocab)
    assert all(list(a) == list(num(t)) for a, t in zip(ids, toks))


def test_cache_is_reused(tmp_path):
    texts = _varied(20)
    first = tokenize(texts, cache_dir=tmp_path)
    again = tokenize(texts, cache_dir=tmp_path)
    assert again.cache_files and first["tokens"] == again["tokens"]
    assert len(list((tmp_path / "tokens").iterdir())) == 1
