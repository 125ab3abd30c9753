"""Property-based tests (hypothesis): the config parser, the data checks and the text pipeline never fail
with anything but their own typed errors, whatever they are given.

Few examples each (the tokenizer is spaCy: one instance is shared), no example database on disk.
"""

from __future__ import annotations

import dataclasses
import math

import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ulmfit_lab.config import Config, ConfigError, DataConfig, from_dict, load_config
from ulmfit_lab.data.sources import DataError, LabelledData, load_data
from ulmfit_lab.text import fasttok
from ulmfit_lab.text import vocab as text
from ulmfit_lab.text.fasttok import FastTokenizer
from ulmfit_lab.text.vocab import BOS, PAD, SPECIAL_TOKENS, UNK, FastaiTokenizer, numericalize

SETTINGS = settings(max_examples=40, deadline=None, database=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])

TOK = FastaiTokenizer()  # spaCy takes a while to build: one for every example
FAST = FastTokenizer()

# ---------------------------------------------------------------- config parser

def _keys() -> list[str]:
    out = []
    for sec in dataclasses.fields(Config):
        out += [f"{sec.name}.{f.name}" for f in dataclasses.fields(getattr(Config(), sec.name))]
    return out


KEYS = _keys()
yaml_scalars = st.one_of(
    st.none(), st.booleans(), st.integers(-10**30, 10**30), st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=12), st.lists(st.integers(-3, 100), max_size=3),
)
junk = st.recursive(yaml_scalars, lambda kids: st.one_of(st.lists(kids, max_size=3),
                                                        st.dictionaries(st.text(max_size=8), kids, max_size=3)),
                    max_leaves=8)


@SETTINGS
@given(st.dictionaries(st.sampled_from([*KEYS, "bogus.x", "classifier", "model"]), st.one_of(yaml_scalars, junk),
                       max_size=6))
def test_any_override_values_give_a_config_or_a_config_error(values):
    raw: dict = {}
    for key, value in values.items():
        sec, _, name = key.partition(".")
        if name:
            node = raw.setdefault(sec, {})
            if isinstance(node, dict):
                node[name] = value
        else:
            raw[sec] = value
    try:
        cfg = from_dict(raw)
    except ConfigError as e:
        assert str(e).count("\n") >= 1  # "N problem(s):" then one line per problem
        return
    assert isinstance(cfg, Config) and from_dict(cfg.to_dict()) == cfg


@SETTINGS
@given(st.lists(st.tuples(st.sampled_from(KEYS), st.text(max_size=15)), max_size=4))
def test_any_override_strings_give_a_config_or_a_config_error(pairs):
    try:
        load_config(None, [f"{k}={v}" for k, v in pairs])
    except ConfigError:
        pass


@SETTINGS
@given(epochs=st.integers(1, 1000), lr=st.floats(1e-8, 10.0), bs=st.integers(1, 4096),
       head=st.lists(st.integers(1, 512), min_size=1, max_size=3))
def test_valid_overrides_round_trip(epochs, lr, bs, head):
    cfg = load_config(None, [f"classifier.epochs={epochs}", f"classifier.lr={lr!r}", f"lm_finetune.bs={bs}",
                             f"classifier.head={head}"])
    assert (cfg.classifier.epochs, cfg.classifier.lr, cfg.lm_finetune.bs, cfg.classifier.head) == (epochs, lr, bs, head)
    every_value = [f"{s}.{k}={v!r}" for s, sec in cfg.to_dict().items() for k, v in sec.items() if v is not None]
    assert load_config(None, every_value) == cfg  # the whole config, written out as overrides, reads back equal


@SETTINGS
@given(section=st.sampled_from(["lm_pretrain", "lm_finetune", "classifier"]), data=st.data())
def test_not_positive_or_not_finite_is_rejected(section, data):
    key = data.draw(st.sampled_from(["epochs", "lr", "bs"]))
    if key == "lr":
        value = data.draw(st.one_of(st.floats(max_value=0.0, allow_nan=False),
                                    st.sampled_from([math.nan, math.inf, -math.inf])))
        as_yaml = ".nan" if math.isnan(value) else {math.inf: ".inf", -math.inf: "-.inf"}.get(value, repr(value))
    else:
        as_yaml = repr(data.draw(st.integers(-10**6, 0)))
    with pytest.raises(ConfigError, match=rf"{section}\.{key}: must be"):
        load_config(None, [f"{section}.{key}={as_yaml}"])


# ---------------------------------------------------------------- data checks

cells = st.one_of(st.text(max_size=20), st.sampled_from(["", "   ", "\n\t", "bad \udc80 byte"]), st.none(),
                  st.just(float("nan")), st.integers(-5, 5), st.floats(allow_nan=False, allow_infinity=False))
labels = st.one_of(st.sampled_from(["pos", "neg", "meh"]), st.none())


@SETTINGS
@given(rows=st.lists(st.tuples(cells, labels), min_size=0, max_size=30), drop=st.booleans())
def test_any_table_loads_or_is_a_data_error(tmp_path_factory, rows, drop):
    df = pd.DataFrame(rows, columns=["text", "label"], dtype=object)
    try:
        data = load_data(DataConfig(drop_invalid=drop, valid_pct=0.3), tmp_path_factory.getbasetemp(), train=df)
    except DataError:
        return
    assert isinstance(data, LabelledData) and len(data.classes) >= 2
    for split in (data.train, data.valid):
        assert all(isinstance(t, str) and t.strip() for t in split.text)
        assert set(split.label) <= set(data.classes)


# ---------------------------------------------------------------- text pipeline

# any code point, lone surrogates included (st.text leaves them out; a str from errors="surrogateescape" has them)
unicode_text = st.lists(st.one_of(st.characters(), st.characters(min_codepoint=0xD800, max_codepoint=0xDFFF)),
                        max_size=300).map("".join)


@SETTINGS
@given(st.lists(unicode_text, min_size=1, max_size=4))
def test_any_unicode_string_tokenizes_and_numericalizes(texts):
    tok = text.tokenize(texts, progress=False)  # the fast tokenizer, into Arrow
    toks = tok.tokens()
    assert toks == TOK(texts)  # fastai's tokens (lone surrogates as U+FFFD)
    assert len(toks) == len(texts)
    for t in toks:
        assert t[0] == "xxbos" and all(isinstance(w, str) and w for w in t)
    vocab = text.build_vocab([tok], min_freq=1)
    assert vocab[UNK] == "xxunk" and vocab[PAD] == "xxpad" and vocab[BOS] == "xxbos"
    ids = numericalize(tok, vocab)
    assert [[vocab[i] for i in x] for x in ids] == toks  # every token is in a vocab built from them
    small = SPECIAL_TOKENS  # a vocab that knows only the special tokens: the rest is xxunk, never an error
    for x, t in zip(numericalize(tok, small), toks):
        assert [small[i] for i in x] == [w if w in small else "xxunk" for w in t]


words = st.sampled_from(["film", "Great", "DULL", "the", "ok", "!!!", "café", "<br />", "a.b", "won't", "😀"])


@SETTINGS
@given(st.lists(st.one_of(words, st.sampled_from(SPECIAL_TOKENS)), min_size=1, max_size=30))
def test_special_tokens_round_trip(parts):
    tok = text.tokenize([" ".join(parts)], progress=False)
    toks = tok.tokens()[0]
    assert toks == TOK([" ".join(parts)])[0]
    # a special token in the text comes out whole (never split, never glued to a neighbour); fastai's
    # word-repetition rule may fold a run of them into `xxwrep N tok`, so presence is what holds
    assert {p for p in parts if p in SPECIAL_TOKENS} <= set(toks)
    assert not [w for w in toks if w not in SPECIAL_TOKENS and any(sp in w for sp in SPECIAL_TOKENS)]
    # ... and maps to the same id in every vocab built here (special tokens first), and back
    vocab = text.build_vocab([tok], min_freq=1)
    assert vocab[: len(SPECIAL_TOKENS)] == SPECIAL_TOKENS
    ids = numericalize(tok, vocab)[0]
    assert [vocab[i] for i in ids] == toks
    assert all(i == SPECIAL_TOKENS.index(w) for i, w in zip(ids, toks) if w in SPECIAL_TOKENS)


pieces_text = st.lists(st.one_of(words, st.sampled_from([" ", "  ", "\n", "\n\n", "x" * 30, "Sooooo", "ab ab ab ab"])),
                       min_size=1, max_size=80).map("".join)


@SETTINGS
@given(pieces_text, st.integers(20, 200))
def test_long_texts_cut_in_pieces_tokenize_as_whole(doc, size):
    whole = TOK([doc])[0]
    saved = fasttok.MAX_PIECE_CHARS
    fasttok.MAX_PIECE_CHARS = size
    try:
        assert "".join(text.split_long(doc)) == doc and all(len(p) <= size for p in text.split_long(doc))
        pieces = TOK.pieces(doc)
        got = TOK([doc])[0]
        assert FAST.tokens([doc]) == [got]  # the fast tokenizer cuts long texts the same way
    finally:
        fasttok.MAX_PIECE_CHARS = saved
    if all(p.endswith(" ") for p in pieces[:-1]):  # cut at spaces: exactly the tokens of the whole text
        assert got == whole
    else:  # a run of `size` characters without a space had to be cut inside a word (a 100k-char "word")
        assert got[0] == "xxbos" and "".join(got[1:]).replace("xxmaj", "") != ""
