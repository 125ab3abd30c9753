"""Continuous batching for `ulmfit-lab serve`: documents join and leave the running batch between LSTM segments.

Why: a batch gathered from requests runs until its longest document ends, and in its tail only a few
documents are left, where an LSTM step costs almost as much per document as in a full batch is worth (paper-size
model, fp32, 2 CPU cores: 1.2 ms per step for 1 document, 7.8 ms for 16, 18 ms for 48, 30 ms for 80; tokens/s
level off from about 48 documents on). Served in batches of the ~48 reviews that 32 clients had waiting, IMDb
reviews ran at 0.69x the speed of offline `predict`, which sorts its whole input by length first. A server
cannot wait for a pool to sort; instead the model thread here keeps one running set of documents and, between
segments of at most `seg_len` steps, lets the finished ones leave (their pooled features go through the head
and answer their request) and the waiting ones join with a zero state. The LSTM thus runs with every document
in flight, whatever their lengths.

The answers are the offline ones: an LSTM row does not depend on the other rows, a document's segments carry
its own state from its first token, and pooling reads the window `FastClassifier.features` reads. Requests are
tokenized in a thread of their own (not on the event loop, not on the model's thread).
"""

from __future__ import annotations

import collections
import functools
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np
import torch

from ..data.labels import MULTI_LABEL
from ..text.vocab import PAD
from .inference import _autocast, activate, ensure_nonempty

MAX_DOCS = 256  # documents in one segment: more gains nothing on CPU (see `inference.plan_batches`)


class ServerBusy(RuntimeError):
    """The queue is full, or the server is shutting down: the client should retry later."""


def admit(stats: dict, closed: bool, n: int, max_queued_texts: int) -> None:
    """Count `n` more texts as queued in `stats`, or refuse them: the admission rule of both batchers (called
    under the batcher's lock). One request is always let in, however large, when nothing waits.

    Raises:
        ServerBusy: the batcher is closed, or `max_queued_texts` would be passed.
    """
    if closed:
        raise ServerBusy("the server is shutting down; retry on another instance or after it restarts")
    queued = stats["queued_texts"]
    if queued and queued + n > max_queued_texts:
        raise ServerBusy(f"{queued} texts are waiting for the model (limit {max_queued_texts}, "
                         "--max-queued-texts); retry shortly")
    stats["queued_texts"] += n


@dataclass(eq=False)
class _Request:
    texts: int
    future: Future
    ids: list[np.ndarray] = field(default_factory=list)  # in reading order (reversed for a backward model)
    proba: np.ndarray | None = None
    left: int = 0  # documents not answered yet
    admitted: bool = False


class ContinuousBatcher:
    """Runs one `Predictor`'s model over the documents of all requests, in one background thread.

    Args:
        predictor: a `Predictor` (one model; its `model` is a `FastClassifier`, possibly int8).
        max_wait_ms: when the model is idle, how long the first request waits for others to start with it.
        max_batch_tokens: token slots per segment (documents x steps): the segment shortens as documents join,
            down to `min_seg` steps; documents wait while `max_batch_tokens // min_seg` run.
        max_queued_texts: `submit` refuses (`ServerBusy`) while this many texts wait.
        seg_len: at most this many steps per segment: how long a new document may wait to join.
        min_seg: at least this many steps per segment (a document ending sooner runs on padding until then).
    """

    def __init__(self, predictor, max_wait_ms: float = 5.0, max_batch_tokens: int = 32768,
                 max_queued_texts: int = 8192, seg_len: int = 64, min_seg: int = 32):
        self.predictor = predictor
        self.max_wait = max_wait_ms / 1000
        self.max_batch_tokens, self.max_queued_texts = max_batch_tokens, max_queued_texts
        self.seg_len, self.min_seg = seg_len, min(min_seg, seg_len)
        self.max_docs = max(1, min(MAX_DOCS, max_batch_tokens // self.min_seg))
        self._activation = functools.partial(activate, sigmoid=predictor.spec.mode == MULTI_LABEL,
                                             bounds=predictor.spec.bounds())
        self._waiting: collections.deque[tuple[_Request, int]] = collections.deque()  # (request, row)
        self._cond = threading.Condition()
        self._closed = False  # submit refuses
        self._tokenized_all = False  # closed, and every submitted request is queued for the model (or failed)
        self._tokenizer = ThreadPoolExecutor(1, thread_name_prefix="ulmfit-lab-tokenizer")
        self._thread = threading.Thread(target=self._run, name="ulmfit-lab-batcher", daemon=True)
        self._reset()
        self.stats = {"requests": 0, "texts": 0, "batches": 0, "largest_batch_texts": 0, "errors": 0,
                      "queued_texts": 0, "running_texts": 0, "model_seconds": 0.0, "steps": 0, "document_steps": 0,
                      "tokens": 0}

    def start(self) -> ContinuousBatcher:
        self._thread.start()
        return self

    @property
    def alive(self) -> bool:
        return self._thread.is_alive() and not self._closed

    def submit(self, texts: list[str]) -> Future:
        """Queue `texts` (tokenized in the batcher's tokenizer thread); the future's result is their
        probabilities, in order.

        Raises:
            ServerBusy: the queue holds `max_queued_texts` already, or the batcher is closed.
        """
        req = _Request(len(texts), Future())
        with self._cond:
            admit(self.stats, self._closed, len(texts), self.max_queued_texts)
            self._tokenizer.submit(self._enqueue, req, texts)  # before close() shuts the tokenizer down
        return req.future

    def close(self, timeout: float | None = None) -> None:
        """Refuse new work, answer everything queued and running, stop the threads."""
        with self._cond:
            if self._closed:
                return
            self._closed = True
        self._tokenizer.shutdown(wait=True)  # every submitted request is queued for the model now
        with self._cond:
            # only now may the model thread stop once idle: stopping at `_closed` lost a request that was
            # still being tokenized (its client waited for ever)
            self._tokenized_all = True
            self._cond.notify_all()
        if self._thread.is_alive():
            self._thread.join(timeout)

    # ------------------------------------------------------------ the tokenizer thread

    def _enqueue(self, req: _Request, texts: list[str]) -> None:
        try:
            ids = ensure_nonempty(self.predictor.encode(texts))
            if self.predictor.backwards:  # the model reads each text from its end
                ids = [x[::-1].copy() for x in ids]
        except Exception as e:  # noqa: BLE001 -- the request gets it (a 500), the server goes on
            self._unqueue(req.texts)
            if req.future.set_running_or_notify_cancel():
                self._error(req, e)
            return
        req.ids, req.left = ids, len(ids)
        req.proba = np.zeros((len(ids), len(self.predictor.labels)), dtype=np.float32)
        with self._cond:
            self._waiting.extend((req, i) for i in range(len(ids)))
            self._cond.notify_all()

    def _unqueue(self, n: int) -> None:
        with self._cond:
            self.stats["queued_texts"] -= n

    # ------------------------------------------------------------ the model thread

    def _reset(self) -> None:
        """No document running."""
        self._docs: list[tuple[_Request, int]] = []
        self._seq: list[np.ndarray] = []  # each running document's ids, in reading order
        self._pos = np.zeros(0, dtype=np.int64)  # the next step of each running document
        self._len = np.zeros(0, dtype=np.int64)
        self._state: list[tuple[torch.Tensor, torch.Tensor]] | None = None
        self._pool: list[torch.Tensor] | None = None  # last, max, sum

    @torch.inference_mode()
    def _run(self) -> None:
        while True:
            if not self._admit():
                return
            if not self._docs:  # all that joined were cancelled
                continue
            t = time.perf_counter()
            try:
                self._segment()
            except Exception:  # noqa: BLE001 -- run each request alone, so only the one that breaks fails
                self._fail_over()
            self.stats["model_seconds"] += time.perf_counter() - t

    def _admit(self) -> bool:
        """Let waiting documents join (after `max_wait` when the model was idle); False once closed and done."""
        with self._cond:
            if not self._docs:
                while not self._waiting and not self._tokenized_all:
                    self._cond.wait()
                if not self._waiting:
                    return False  # closed, nothing queued, nothing running
                deadline = time.monotonic() + self.max_wait
                while not self._closed and len(self._waiting) < self.max_docs:
                    left = deadline - time.monotonic()
                    if left <= 0:
                        break
                    self._cond.wait(left)
            joining = []
            while self._waiting and len(self._docs) + len(joining) < self.max_docs:
                joining.append(self._waiting.popleft())
            self.stats["queued_texts"] -= len(joining)
        new = []
        for req, row in joining:
            # a request whose client went away was cancelled: its documents never run
            if not req.admitted:
                req.admitted = True
                if not req.future.set_running_or_notify_cancel():
                    req.left = 0
            if req.left:
                new.append((req, row))
        self._join(new)
        return True

    def _join(self, new: list[tuple[_Request, int]]) -> None:
        if not new:
            return
        device = self.predictor.device
        self._docs += new
        self._seq += [req.ids[row] for req, row in new]
        self._pos = np.concatenate([self._pos, np.zeros(len(new), dtype=np.int64)])
        self._len = np.concatenate([self._len, [len(req.ids[row]) for req, row in new]]).astype(np.int64)
        lstms = self.predictor.model.lstms
        zeros = [torch.zeros(1, len(new), rnn.hidden_size, device=device) for rnn in lstms]
        d = lstms[-1].hidden_size
        pool = [torch.zeros(len(new), d, device=device), torch.full((len(new), d), float("-inf"), device=device),
                torch.zeros(len(new), d, device=device)]
        if self._state is None:
            self._state, self._pool = [(z, z) for z in zeros], pool
        else:
            self._state = [(torch.cat([h, z], 1), torch.cat([c, z], 1)) for (h, c), z in zip(self._state, zeros)]
            self._pool = [torch.cat([a, b]) for a, b in zip(self._pool, pool)]
        self.stats["running_texts"] = len(self._docs)

    def _segment(self) -> None:
        """One segment of every running document; the finished ones answered and dropped."""
        model, device = self.predictor.model, self.predictor.device
        n = len(self._docs)
        # up to the end of the first document to finish (at least min_seg steps), within the token budget
        k = int(min(self.seg_len, max(self.min_seg, min(int((self._len - self._pos).min()),
                                                          self.max_batch_tokens // n))))
        x = np.full((n, k), PAD, dtype=np.int64)
        for i, (seq, p) in enumerate(zip(self._seq, self._pos)):
            part = seq[p:p + k]
            x[i, :len(part)] = part
        with _autocast(self.predictor.precision, device):
            h = model.embedding(torch.from_numpy(x).to(device))
            for i, rnn in enumerate(model.lstms):
                h, self._state[i] = rnn(h, self._state[i])
        out = h.float()
        self._pool_segment(out, model.max_len, model.bptt)
        # real tokens run (not padding): what the model did in a time window, whether or not answered in it
        self.stats["tokens"] += int(np.minimum(k, self._len - self._pos).sum())
        self._pos += k
        self.stats["batches"] += 1  # segments
        self.stats["steps"] += k  # LSTM steps; document_steps / steps: documents running per step
        self.stats["document_steps"] += n * k  # token slots (some padding)
        self.stats["largest_batch_texts"] = max(self.stats["largest_batch_texts"], n)
        done = self._pos >= self._len
        if done.any():
            self._finish(np.flatnonzero(done), np.flatnonzero(~done))

    def _pool_segment(self, out: torch.Tensor, max_len: int, bptt: int) -> None:
        """Concat pooling over the window fastai keeps (positions >= ceil((L - max_len) / bptt) * bptt)."""
        dev = out.device
        pos, length = torch.from_numpy(self._pos).to(dev), torch.from_numpy(self._len).to(dev)
        start = torch.div((length - max_len).clamp(min=0) + bptt - 1, bptt, rounding_mode="floor") * bptt
        steps = pos[:, None] + torch.arange(out.shape[1], device=dev)[None, :]
        keep = ((steps >= start[:, None]) & (steps < length[:, None]))[:, :, None]
        last, max_pool, sum_pool = self._pool
        torch.maximum(max_pool, out.masked_fill(~keep, float("-inf")).max(dim=1)[0], out=max_pool)
        sum_pool += out.masked_fill(~keep, 0.0).sum(dim=1)
        end = length - 1 - pos  # the last token's place in this segment, if it is in it
        here = (end >= 0) & (end < out.shape[1])
        at_end = out[torch.arange(out.shape[0], device=dev), end.clamp(0, out.shape[1] - 1)]
        self._pool[0] = torch.where(here[:, None], at_end, last)

    def _finish(self, done: np.ndarray, rest: np.ndarray) -> None:
        model, dev = self.predictor.model, self.predictor.device
        length = torch.from_numpy(self._len[done]).to(dev)
        start = torch.div((length - model.max_len).clamp(min=0) + model.bptt - 1, model.bptt,
                          rounding_mode="floor") * model.bptt
        i = torch.from_numpy(done).to(dev)
        last, max_pool, sum_pool = (p[i] for p in self._pool)
        feats = torch.cat([last, max_pool, sum_pool / (length - start).to(sum_pool.dtype)[:, None]], dim=1)
        proba = self._activation(model.head(feats).float()).cpu().numpy()  # the head in fp32, as offline
        answered = []
        for j, p in zip(done, proba):
            req, row = self._docs[j]
            req.proba[row] = p
            req.left -= 1
            if not req.left:
                answered.append(req)
        keep = torch.from_numpy(rest).to(dev)
        self._docs = [self._docs[j] for j in rest]
        self._seq = [self._seq[j] for j in rest]
        self._pos, self._len = self._pos[rest], self._len[rest]
        self._state = [(h[:, keep].contiguous(), c[:, keep].contiguous()) for h, c in self._state]
        self._pool = [p[keep] for p in self._pool]
        self.stats["running_texts"] = len(self._docs)
        if not self._docs:
            self._reset()
        for req in answered:  # once the counters say so: a client reading /health next sees them
            self._count(req)
            req.future.set_result(req.proba)

    def _fail_over(self) -> None:
        """A segment failed: run each running request alone (offline path); only those that fail again fail."""
        requests = list(dict.fromkeys(req for req, _ in self._docs if req.left))
        self._reset()
        self.stats["running_texts"] = 0
        for req in requests:
            ids = [seq[::-1] for seq in req.ids] if self.predictor.backwards else req.ids
            try:
                req.proba = self.predictor.proba_of_ids(ids)
            except Exception as e:  # noqa: BLE001
                self._error(req, e)
                continue
            req.left = 0
            self._count(req)
            req.future.set_result(req.proba)

    def _count(self, req: _Request) -> None:
        self.stats["requests"] += 1
        self.stats["texts"] += req.texts

    def _error(self, req: _Request, e: Exception) -> None:
        req.left = 0
        with self._cond:  # the tokenizer thread counts its errors too
            self.stats["errors"] += 1
        req.future.set_exception(e)
