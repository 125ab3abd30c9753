"""Tokenizing a corpus at scale: worker processes, token ids streamed into memory-mapped Arrow, a disk cache.

Batches of texts go to worker processes, each with its own `FastTokenizer`. A worker answers with the
batch's token ids numbered by the batch's own table of distinct tokens; the parent maps each table onto
one corpus-wide table (`itos`, in order of first occurrence, which is the order fastai's Counter sees),
adds the batch's token counts, and appends its ids (int32) to an Arrow file. Nothing ever holds every
token at once: memory is the batches in flight, the workers' piece memos and the table of distinct tokens.

The result lives in `cache_dir/tokens/<key>/`, the key a hash of the texts (or, for files, of their paths,
sizes and modification times) and of the tokenizer's settings and versions, so a second run on unchanged
data opens it in well under a second.
"""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import queue
import shutil
import subprocess
import sys
import tempfile
import threading
import warnings
import weakref
from collections import deque
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import datasets
import numpy as np
import pyarrow as pa

from ..data.sources import DataError, read_text_file
from ..fileio import atomic_folder
from .fasttok import FastTokenizer

TOKENIZER_VERSION = 3  # bump when the tokens produced for a text change
IDS = datasets.Features({"ids": datasets.Sequence(datasets.Value("int32"))})
_META, _IDS_FILE, _COUNTS = "tokens.json", "ids.arrow", "counts.npy"


# ---------------------------------------------------------------- text sources


def texts_hash(texts: Iterable[str]) -> str:
    """Hash of a sequence of texts (order matters); raises DataError on a non-string item."""
    h = hashlib.sha256()
    for i, t in enumerate(texts):
        if not isinstance(t, str):
            raise DataError(f"text {i}: expected a string, found {type(t).__name__} ({t!r:.40}); "
                            "drop or fill missing texts first (data.drop_invalid=true drops them)")
        h.update(t.encode("utf-8", "surrogatepass"))
        h.update(b"\x00")
    return h.hexdigest()[:16]


class TextSource:
    """Texts to tokenize, read in order as often as needed, with a fingerprint of their content."""

    def __len__(self) -> int:
        raise NotImplementedError

    def __iter__(self) -> Iterator[str]:
        raise NotImplementedError

    def fingerprint(self) -> str:
        raise NotImplementedError


class ListTexts(TextSource):
    """Texts held in memory (a list, tuple or pandas Series)."""

    def __init__(self, texts: Sequence[str]):
        self.texts = texts.tolist() if hasattr(texts, "tolist") else texts

    def __len__(self) -> int:
        return len(self.texts)

    def __iter__(self) -> Iterator[str]:
        return iter(self.texts)

    def fingerprint(self) -> str:
        return "texts:" + texts_hash(self.texts)


class FileTexts(TextSource):
    """One text per UTF-8 file, read lazily; fingerprinted by path, size and modification time."""

    def __init__(self, paths: Sequence[str | Path]):
        self.paths = [os.path.abspath(p) for p in paths]

    def __len__(self) -> int:
        return len(self.paths)

    def __iter__(self) -> Iterator[str]:
        return map(read_text_file, self.paths)  # a bad byte is a DataError naming the file and line

    def fingerprint(self) -> str:
        h = hashlib.sha256()
        for p in self.paths:
            try:
                st = os.stat(p)
            except FileNotFoundError:
                raise DataError(f"text file not found: {p}") from None
            h.update(f"{p}\x00{st.st_size}\x00{st.st_mtime_ns}\x00".encode("utf-8", "surrogatepass"))
        return "files:" + h.hexdigest()[:16]


class DatasetTexts(TextSource):
    """A text column of a Hugging Face `datasets.Dataset`, read in batches (memory-mapped)."""

    def __init__(self, ds: datasets.Dataset, column: str = "text"):
        if column not in ds.column_names:
            raise DataError(f"dataset: text column {column!r} not found; columns found: {ds.column_names}. "
                            "Pass text_column=... (data.text_column in a config)")
        dtype = ds.features[column]
        if not (isinstance(dtype, datasets.Value) and dtype.dtype in ("string", "large_string")):
            raise DataError(f"dataset: column {column!r} holds {dtype}, expected strings; "
                            "pick the text column with text_column=...")
        self.ds, self.column = ds.select_columns([column]), column

    def __len__(self) -> int:
        return self.ds.num_rows

    def __iter__(self) -> Iterator[str]:
        start = 0
        for batch in self.ds.iter(batch_size=1000):
            texts = batch[self.column]
            if None in texts:
                raise DataError(f"dataset: row {start + texts.index(None)} of column {self.column!r} is empty "
                                "(null); drop or fill missing texts first")
            start += len(texts)
            yield from texts

    def fingerprint(self) -> str:
        return f"dataset:{self.ds._fingerprint}:{self.column}"


def as_source(texts, text_column: str = "text") -> TextSource:
    """Wrap what `tokenize` accepts: a TextSource, a `datasets.Dataset`, or a sequence of strings."""
    if isinstance(texts, TextSource):
        return texts
    if isinstance(texts, datasets.Dataset):
        return DatasetTexts(texts, text_column)
    if isinstance(texts, str) or not hasattr(texts, "__len__"):
        raise TypeError(f"expected a list of texts, a datasets.Dataset or a TextSource, found {type(texts).__name__}")
    return ListTexts(texts)


# ---------------------------------------------------------------- token ids per document


class DocIds(Sequence):
    """Token ids per document, read from (memory-mapped) Arrow buffers without a Python list per document.

    `docs[i]` is an int32 numpy view; `lengths` the number of tokens of each document. `a + b` chains two.
    """

    def __init__(self, parts: list[tuple[np.ndarray, np.ndarray]]):
        self._parts = parts  # (values, offsets) per Arrow chunk
        self._first = np.cumsum([0] + [len(o) - 1 for _, o in parts])  # first document of each part

    @classmethod
    def from_dataset(cls, ds: datasets.Dataset, column: str = "ids") -> DocIds:
        if ds._indices is not None:
            ds = ds.flatten_indices()
        parts = [(c.values.to_numpy(), c.offsets.to_numpy()) for c in ds.data.table.column(column).chunks]
        return cls([(v, o) for v, o in parts if len(o) > 1])

    def __len__(self) -> int:
        return int(self._first[-1])

    def __getitem__(self, i):
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(len(self)))]
        i = int(i)
        if i < 0:
            i += len(self)
        if not 0 <= i < len(self):
            raise IndexError(f"document {i} out of range ({len(self)} documents)")
        p = int(np.searchsorted(self._first, i, side="right")) - 1
        values, offsets = self._parts[p]
        j = i - int(self._first[p])
        return values[offsets[j]:offsets[j + 1]]

    def __add__(self, other: DocIds) -> DocIds:
        return DocIds(self._parts + other._parts)

    @property
    def lengths(self) -> np.ndarray:
        if not self._parts:
            return np.zeros(0, dtype=np.int64)
        return np.concatenate([np.diff(o).astype(np.int64) for _, o in self._parts])

    @property
    def n_tokens(self) -> int:
        return int(sum(int(o[-1]) - int(o[0]) for _, o in self._parts))

    def token_counts(self, n_vocab: int) -> np.ndarray:
        """How often each id occurs over all documents (int64, length `n_vocab`), read part by part."""
        counts = np.zeros(n_vocab, dtype=np.int64)
        for values, offsets in self._parts:
            counts += np.bincount(values[offsets[0]:offsets[-1]], minlength=n_vocab)[:n_vocab]
        return counts


@dataclass
class Tokenized:
    """A tokenized corpus: `ids` (Arrow column `ids`, one row per text) index `itos`, whose tokens come in
    order of first occurrence; `counts[i]` is how often `itos[i]` occurs."""

    ids: datasets.Dataset
    itos: list[str]
    counts: np.ndarray
    path: Path

    def __len__(self) -> int:
        return self.ids.num_rows

    @property
    def cache_files(self) -> list[dict]:
        return self.ids.cache_files

    @property
    def n_tokens(self) -> int:
        return int(self.counts.sum())

    def docs(self) -> DocIds:
        return DocIds.from_dataset(self.ids)

    def tokens(self) -> list[list[str]]:
        """Every document's tokens as strings: for small corpora and checks (this is what is not scalable)."""
        itos = self.itos
        return [[itos[i] for i in d.tolist()] for d in self.docs()]

    def __getitem__(self, key: str):
        if key == "tokens":
            return self.tokens()
        if key == "ids":
            return list(self.docs())
        raise KeyError(f"{key!r}: a Tokenized corpus has 'tokens' and 'ids'")


# ---------------------------------------------------------------- tokenizing


def cache_key(fingerprint: str, lang: str) -> str:
    from importlib.metadata import version  # not `import spacy`: a cache hit need not load it

    blob = json.dumps([fingerprint, lang, TOKENIZER_VERSION, version("fastai"), version("spacy")])
    return "tok-" + hashlib.sha256(blob.encode()).hexdigest()[:16]


def load_tokenized(path: Path) -> Tokenized:
    meta = json.loads((path / _META).read_text(encoding="utf-8"))
    counts = np.load(path / _COUNTS)
    return Tokenized(datasets.Dataset.from_file(str(path / _IDS_FILE)), meta["itos"], counts, path)


def _batches(texts: Iterable[str], max_docs: int, max_chars: int) -> Iterator[list[str]]:
    batch, n = [], 0
    for t in texts:
        batch.append(t)
        n += len(t)
        if len(batch) >= max_docs or n >= max_chars:
            yield batch
            batch, n = [], 0
    if batch:
        yield batch


# a worker: fasttok.py alone, with torch and friends kept out (spaCy's thinc imports whichever is installed)
_BOOT = """
import importlib.util, sys
for m in ("torch", "tensorflow", "jax", "mxnet", "cupy"):
    sys.modules.setdefault(m, None)
spec = importlib.util.spec_from_file_location("_ulmfit_fasttok_worker", sys.argv[1])
mod = importlib.util.module_from_spec(spec)
sys.modules[spec.name] = mod
spec.loader.exec_module(mod)
mod.serve()
"""


class _Worker:
    """A tokenizer process with spaCy but neither fastai nor torch (~100 MB where a forked copy of this
    process costs ~500 MB): fastai's rules reach it as their code (`fasttok.portable`). Batches go to it
    and results come back through pipes, each way by a thread, so neither process waits on the other."""

    def __init__(self, state: dict):
        from . import fasttok

        self.proc = subprocess.Popen([sys.executable, "-c", _BOOT, fasttok.__file__], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE)
        self.in_flight = 0
        self._todo: queue.Queue = queue.Queue()
        self._done: queue.Queue = queue.Queue()
        self._todo.put(state)
        threading.Thread(target=self._send, daemon=True).start()
        threading.Thread(target=self._receive, daemon=True).start()
        self.hello: dict | None = None

    def wait_ready(self) -> dict:
        """Wait until the worker is set up; its greeting: {"pid", "heavy_modules"}."""
        if self.hello is None:
            self.hello = self._get()
        return self.hello

    def _send(self) -> None:
        try:
            with self.proc.stdin as f:
                while (item := self._todo.get()) is not None:
                    pickle.dump(item, f, protocol=pickle.HIGHEST_PROTOCOL)
                    f.flush()
        except OSError:  # the worker is gone: `_receive` reports it
            pass

    def _receive(self) -> None:
        try:
            while True:
                self._done.put(pickle.load(self.proc.stdout))
        except Exception:  # EOF: the worker ended (or died)
            code = self.proc.wait()
            self._done.put(RuntimeError(f"tokenizer worker {self.proc.pid} exited (code {code}); "
                                        "its error, if any, is printed above"))

    def _get(self):
        r = self._done.get()
        if isinstance(r, BaseException):
            raise r
        return r

    def submit(self, texts: list[str]) -> None:
        self.in_flight += 1
        self._todo.put(texts)

    def ready(self) -> bool:
        """Has the oldest batch not yet taken come back?"""
        return not self._done.empty()

    def get(self) -> tuple:
        """The oldest batch's result (results come back in the order the batches went)."""
        self.in_flight -= 1
        return self._get()

    def close(self, kill: bool = False) -> None:
        self._todo.put(None)
        if kill:
            self.proc.kill()
        try:
            self.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def _encoded(batches: Iterator[list[str]], lang: str, n_procs: int) -> Iterator[tuple]:
    """(lengths, ids, table) per batch, in order, from `n_procs` processes: this one and n_procs - 1 workers.

    This process tokenizes a batch itself whenever the workers have enough queued, so with 2 CPUs one
    worker and this process keep both busy.
    """
    tok = FastTokenizer(lang)
    tok.setup()
    state = tok.worker_state() if n_procs > 1 else None
    if state is None:  # one process (or rules that cannot travel): all here
        for b in batches:
            yield tok.encode_batch(b)
        return
    workers: list[_Worker] = []
    try:
        workers += [_Worker(state) for _ in range(n_procs - 1)]
        for w in workers:  # they start side by side
            w.wait_ready()
    except (OSError, RuntimeError) as e:  # e.g. spaCy fails to import there: slower, but the same tokens
        for w in workers:
            w.close(kill=True)
        warnings.warn(f"tokenizer worker processes failed to start ({e}); tokenizing in this process alone",
                      RuntimeWarning, stacklevel=2)
        for b in batches:
            yield tok.encode_batch(b)
        return
    ok = False
    try:
        pending: deque = deque()  # workers (their next result is this batch's) and this process's results
        for b in batches:
            w = min(workers, key=lambda w: w.in_flight)
            if w.in_flight < 2:
                w.submit(b)
                pending.append(w)
            else:  # the workers have work queued: do this batch here meanwhile
                pending.append(tok.encode_batch(b))
            while pending and (isinstance(pending[0], tuple) or pending[0].ready() or len(pending) > 8):
                r = pending.popleft()
                yield r if isinstance(r, tuple) else r.get()
        while pending:
            r = pending.popleft()
            yield r if isinstance(r, tuple) else r.get()
        ok = True
    finally:
        for w in workers:
            w.close(kill=not ok)


class _TokenTable:
    """The corpus-wide token table: batch tables merge into it in order, so ids follow first occurrence."""

    def __init__(self):
        self.stoi: dict[str, int] = {}
        self.itos: list[str] = []
        self._counts = np.zeros(1 << 16, dtype=np.int64)

    def add(self, ids: np.ndarray, table: list[str]) -> np.ndarray:
        """The batch's ids (into its `table`) as corpus ids; counts them."""
        stoi, itos = self.stoi, self.itos
        to_corpus = np.empty(len(table), dtype=np.int32)
        for k, t in enumerate(table):
            i = stoi.get(t)
            if i is None:
                i = stoi[t] = len(itos)
                itos.append(t)
            to_corpus[k] = i
        ids = to_corpus[ids]
        if len(itos) > len(self._counts):
            self._counts = np.concatenate([self._counts, np.zeros(len(self._counts) + len(itos), np.int64)])
        self._counts[:len(itos)] += np.bincount(ids, minlength=len(itos))
        return ids

    @property
    def counts(self) -> np.ndarray:
        return self._counts[:len(self.itos)]


def tokenize_corpus(source: TextSource, lang: str = "en", cache_dir: Path | None = None, num_workers: int = 0,
                    desc: str = "Tokenizing", progress: bool = True, min_parallel: int = 2000) -> Tokenized:
    """Tokenize `source` into token ids (Arrow) and a token table, reusing the cache when the data is unchanged.

    `num_workers`: processes tokenizing, this one included (0: one per CPU); corpora under `min_parallel`
    texts are tokenized in this process alone (starting workers would cost more than it saves).
    """
    from tqdm.auto import tqdm

    n_texts = len(source)
    if n_texts == 0:
        raise DataError(f"{desc}: no texts to tokenize (the corpus is empty); check the data source")
    fingerprint = source.fingerprint()
    key = cache_key(fingerprint, lang)
    if cache_dir is not None:
        root = Path(cache_dir) / "tokens"
        if (root / key / _META).is_file():
            return load_tokenized(root / key)
        root.mkdir(parents=True, exist_ok=True)
    else:
        root = Path(tempfile.mkdtemp(prefix="ulmfit-tokens-"))
    # written privately and renamed into place: a concurrent run never writes into our folder, a killed run
    # leaves only a temporary folder (removed by the next run), and a run that finishes second uses the first
    # one's; a folder without the metadata is a half-written one from an older version, replaced
    path = root / key
    try:
        with atomic_folder(path, replace=path.exists()) as tmp:
            n_workers = (num_workers or os.cpu_count() or 1) if n_texts >= min_parallel else 1
            table = _TokenTable()
            writer = datasets.arrow_writer.ArrowWriter(features=IDS, path=str(tmp / _IDS_FILE))
            n_docs = 0
            with tqdm(total=n_texts, desc=desc, unit="docs", disable=not progress, mininterval=1.0) as bar:
                for lens, ids, batch_table in _encoded(_batches(source, 1000, 1 << 20), lang, n_workers):
                    offsets = np.zeros(len(lens) + 1, dtype=np.int32)
                    np.cumsum(lens, out=offsets[1:])
                    ids = pa.array(table.add(ids, batch_table), type=pa.int32())
                    writer.write_table(pa.table({"ids": pa.ListArray.from_arrays(pa.array(offsets), ids)}))
                    n_docs += len(lens)
                    bar.update(len(lens))
            writer.finalize()
            if n_docs != n_texts:
                raise DataError(f"{desc}: the source gave {n_docs} texts but says it has {n_texts}")
            np.save(tmp / _COUNTS, table.counts)
            meta = {"version": TOKENIZER_VERSION, "lang": lang, "fingerprint": fingerprint, "n_docs": n_docs,
                    "n_tokens": int(table.counts.sum()), "itos": table.itos}
            (tmp / _META).write_text(json.dumps(meta), encoding="utf-8")
    except BaseException:
        if cache_dir is None:
            shutil.rmtree(root, ignore_errors=True)
        raise
    out = load_tokenized(path)
    if cache_dir is None:  # a private temporary folder: gone with the object
        weakref.finalize(out, shutil.rmtree, str(root), True)
    return out
