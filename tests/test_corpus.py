"""Tokenizing corpora at scale: worker processes, the Arrow cache, sources, errors, and loaders over it."""

import random
import time

import datasets
import numpy as np
import pandas as pd
import pytest
import torch
from fastai.text.core import tokenize_df
from fastai.text.data import Numericalize

from ulmfit_lab.data.sources import DataError
from ulmfit_lab.text.corpus import DocIds, FileTexts, ListTexts, tokenize_corpus
from ulmfit_lab.text.vocab import build_vocab, load_vocab, numericalize, save_vocab, tokenize, write_ids
from ulmfit_lab.training.loaders import classifier_loaders, lm_loaders

WORDS = ["movie", "GREAT", "Bad", "!!!", "loooove", "the", "<br />", "&amp;", "café", "😀", "don't", "ok", "...",
         "plot", "Actor", "it's", ":)", "10/10", "and", "a"]


def texts(n, seed=0):
    rng = random.Random(seed)
    return [" ".join(rng.choice(WORDS) for _ in range(rng.randint(0, 40))) for _ in range(n)]


def fastai_tokens(xs):
    df, _ = tokenize_df(pd.DataFrame({"text": xs}), "text", n_workers=0)
    return [list(t) for t in df["text"]]


def test_worker_processes_give_the_same_corpus(tmp_path):
    xs = texts(600)
    one = tokenize_corpus(ListTexts(xs), cache_dir=tmp_path / "a", num_workers=1, progress=False)
    two = tokenize_corpus(ListTexts(xs), cache_dir=tmp_path / "b", num_workers=2, progress=False, min_parallel=1)
    assert one.itos == two.itos and np.array_equal(one.counts, two.counts)
    assert [d.tolist() for d in one.docs()] == [d.tolist() for d in two.docs()]
    assert two.tokens() == fastai_tokens(xs)


def test_this_process_tokenizes_while_the_workers_are_busy(monkeypatch):
    """With one worker, this process takes batches too; the results still come in batch order."""
    import os

    from ulmfit_lab.text import corpus
    from ulmfit_lab.text.fasttok import FastTokenizer

    parent, here = os.getpid(), []
    encode = FastTokenizer.encode_batch

    def counted(self, batch):
        if os.getpid() == parent:  # forked workers count into their own copy of `here`
            here.append(len(batch))
        return encode(self, batch)

    monkeypatch.setattr(FastTokenizer, "encode_batch", counted)
    xs = texts(400, seed=8)
    batches = [xs[i:i + 10] for i in range(0, len(xs), 10)]
    as_tokens = [[t[i] for i in ids.tolist()] for _, ids, t in corpus._encoded(iter(batches), "en", 2)]
    assert 0 < len(here) < len(batches)  # both processes worked
    assert as_tokens == [sum(fastai_tokens(b), []) for b in batches]


def test_worker_process_is_lean_and_reports_errors():
    """A worker never imports torch or fastai (a forked copy of a process with them costs ~500 MB)."""
    from ulmfit_lab.text.corpus import _Worker
    from ulmfit_lab.text.fasttok import FastTokenizer

    w = _Worker(FastTokenizer().worker_state())
    try:
        hello = w.wait_ready()
        assert hello["heavy_modules"] == []
        with open(f"/proc/{hello['pid']}/status") as f:
            rss_mb = next(int(line.split()[1]) for line in f if line.startswith("VmRSS")) / 1024
        assert rss_mb < 250, rss_mb
        w.submit(["Hello WORLD!!!", ""])
        lens, ids, table = w.get()
        assert [table[i] for i in ids.tolist()] == ["xxbos", "xxmaj", "hello", "xxup", "world", "xxrep", "3", "!",
                                                   "xxbos"] and lens.tolist() == [8, 1]
        w.submit([None])  # not a string: the worker's error comes back as one
        with pytest.raises(RuntimeError, match="tokenizer worker"):
            w.get()
    finally:
        w.close()


def test_workers_that_cannot_start_leave_the_work_to_this_process(monkeypatch):
    from ulmfit_lab.text import corpus

    monkeypatch.setattr(corpus, "_BOOT", "import sys; sys.exit(3)")
    xs = texts(50, seed=9)
    with pytest.warns(RuntimeWarning, match=r"failed to start.*code 3"):
        got = [[t[i] for i in ids.tolist()] for _, ids, t in corpus._encoded(iter([xs[:25], xs[25:]]), "en", 2)]
    assert got == [sum(fastai_tokens(xs[:25]), []), sum(fastai_tokens(xs[25:]), [])]


def test_vocab_over_several_sets_breaks_ties_as_fastai(tmp_path):
    """Counts merge in order of first occurrence over the sets, as fastai's Counter over their concatenation."""
    a, b = texts(150, seed=2), texts(150, seed=3)
    ours = build_vocab([tokenize(a, cache_dir=tmp_path), tokenize(b, cache_dir=tmp_path)], min_freq=1, max_vocab=40)
    num = Numericalize(min_freq=1, max_vocab=40)
    num.setup(fastai_tokens(a + b))
    assert ours == list(num.vocab)


def test_cache_reused_and_keyed_by_content(tmp_path):
    xs = texts(300, seed=4)
    first = tokenize(xs, cache_dir=tmp_path, progress=False)
    t0 = time.perf_counter()
    again = tokenize(list(xs), cache_dir=tmp_path, progress=False)
    assert time.perf_counter() - t0 < 1.0
    assert again.path == first.path and again.itos == first.itos
    other = tokenize(xs[:-1] + [xs[-1] + " more"], cache_dir=tmp_path, progress=False)
    assert other.path != first.path
    assert len(list((tmp_path / "tokens").iterdir())) == 2  # no temporary leftovers


def test_sources_files_and_datasets(tmp_path):
    xs = texts(40, seed=5)
    paths = []
    for i, t in enumerate(xs):
        paths.append(tmp_path / f"{i}.txt")
        paths[-1].write_text(t, encoding="utf-8")
    from_files = tokenize(FileTexts(paths), cache_dir=tmp_path / "c", progress=False)
    ds = datasets.Dataset.from_dict({"review": xs, "stars": list(range(len(xs)))})
    from_ds = tokenize(ds, cache_dir=tmp_path / "c", progress=False, text_column="review")
    assert from_files.tokens() == from_ds.tokens() == fastai_tokens(xs)
    paths[3].write_text(xs[3] + " edited", encoding="utf-8")  # a changed file is a new corpus
    assert tokenize(FileTexts(paths), cache_dir=tmp_path / "c", progress=False).path != from_files.path


def test_clear_errors(tmp_path):
    with pytest.raises(DataError, match=r"text column 'text' not found; columns found: \['review'\]"):
        tokenize(datasets.Dataset.from_dict({"review": ["a"]}))
    with pytest.raises(DataError, match=r"text 1: expected a string, found float"):
        tokenize(["fine", float("nan"), "fine"])
    with pytest.raises(DataError, match="no texts to tokenize"):
        tokenize([])
    bad = tmp_path / "latin1.txt"
    bad.write_bytes("first line\nsecond line caf\xe9\n".encode("latin-1"))
    with pytest.raises(DataError, match=r"latin1.txt, line 2: not valid UTF-8"):
        tokenize(FileTexts([bad]), cache_dir=tmp_path)
    assert not (tmp_path / "tokens").exists() or not list((tmp_path / "tokens").iterdir())


def test_ids_on_disk_match_fastai_numericalize(tmp_path):
    xs = texts(200, seed=6)
    tok = tokenize(xs, cache_dir=tmp_path, progress=False)
    vocab = build_vocab([tok], min_freq=2, max_vocab=24)
    ds = write_ids(tok, vocab, tmp_path / "out" / "ids.arrow", {"text": xs, "label": list(range(len(xs)))})
    assert ds.cache_files and ds["label"] == list(range(len(xs))) and ds["text"] == xs
    docs = DocIds.from_dataset(ds)
    num = Numericalize(min_freq=2, max_vocab=24)
    toks = fastai_tokens(xs)
    num.setup(toks)
    expected = [num(t).tolist() for t in toks]
    assert [d.tolist() for d in docs] == expected == [d.tolist() for d in numericalize(tok, vocab)]
    assert docs.lengths.tolist() == [len(t) for t in toks] and docs.n_tokens == sum(map(len, toks))
    both = docs + docs
    assert len(both) == 2 * len(xs) and both[-1].tolist() == docs[-1].tolist()
    save_vocab(tmp_path / "vocab.json", vocab, 2, 24, "en")
    assert load_vocab(tmp_path / "vocab.json") == vocab


def test_loaders_read_the_cache_as_they_read_lists(tmp_path):
    """LM stream in bptt chunks and length-sorted padded classifier batches: same batches from memory-mapped ids."""
    xs = texts(120, seed=7)
    tok = tokenize(xs, cache_dir=tmp_path, progress=False)
    vocab = build_vocab([tok], min_freq=1)
    mapped = DocIds.from_dataset(write_ids(tok, vocab, tmp_path / "ids.arrow"))
    in_memory = numericalize(tok, vocab)
    cpu = torch.device("cpu")
    for backwards in (False, True):
        lm = [lm_loaders(d, d, 4, 8, backwards, cpu, seed=0) for d in (mapped, in_memory)]
        for a, b in zip(*(list(dl.train) for dl in lm)):
            assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    y = [i % 2 for i in range(len(xs))]
    batches = []
    for d in (mapped, in_memory):
        np.random.seed(0)  # fastai's SortedDL shuffles with numpy's global generator
        batches.append(list(classifier_loaders(d, y, d, y, 8, 8, False, cpu, seed=0).train))
    assert len(batches[0]) == len(batches[1]) > 0
    for a, b in zip(*batches):
        assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
