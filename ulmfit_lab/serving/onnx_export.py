"""The classifier as ONNX (`ulmfit-lab export MODEL OUT --onnx`), and a small runner for it on onnxruntime.

`model.onnx` takes a right-padded batch of token ids with dynamic axes, `ids` int64 (batch, seq) and
`lengths` int64 (batch,), and returns `logits` and `probabilities` (batch, n_class) in the order of
`labels` in model.json. It computes exactly what `inference.FastClassifier` computes, written for a static
graph: each LSTM layer runs once over the whole padded batch (ONNX's LSTM op; right padding never changes
the outputs at real tokens, the LSTM being causal), and BPT3C concat pooling [last, max, mean] reads each
document's own window, positions >= ceil((L - max_len) / bptt) * bptt and < L, through masks. So a
document's probabilities do not depend on its batch, and dynamic axes lose nothing against a fixed batch
of 1 (checked by `tests/test_onnx.py`: within 1e-4 of the torch path, texts of mixed lengths in one batch).
`FastClassifier` itself cannot be exported as is: it sorts the batch and runs the LSTMs segment by segment
over the documents still running, a data-dependent loop that a static graph cannot hold.

`probabilities` follow the model's label mode: a softmax over the classes, a sigmoid per label (multi-label;
the thresholds are in model.json) or a softmax per task's slice of the outputs (multi-task).

Tokenization stays in Python (fastai's rules and spaCy, as in training; settings in model.json), so the
runner reads texts, and the graph only ever sees token ids.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

from ..data.labels import MULTI_LABEL, LabelSpec
from ..models.artifact import META, VOCAB, CheckpointError, label_spec, thresholds
from ..models.awd_lstm import activate
from .base import BasePredictor, check_strings
from .inference import FastClassifier, collate, ensure_nonempty, plan_batches

ONNX = "model.onnx"
OPSET = 17


class PaddedClassifier(nn.Module):
    """`FastClassifier`'s weights and result as one static graph: full-length LSTM passes, masked pooling."""

    def __init__(self, fast: FastClassifier, spec: LabelSpec | None = None):
        super().__init__()
        self.embedding, self.lstms, self.head = fast.embedding, fast.lstms, fast.head
        self.bptt, self.max_len = fast.bptt, fast.max_len
        self.sigmoid = spec is not None and spec.mode == MULTI_LABEL
        self.bounds = None if spec is None else spec.bounds()

    def forward(self, ids: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor]:
        """(logits, probabilities), each (bs, n_class), for right-padded ids (bs, sl) and lengths (bs,)."""
        x = self.embedding(ids)
        for rnn in self.lstms:
            x, _ = rnn(x)  # zero initial state, as in fastai's eval pass over a whole document
        start = torch.div((lengths - self.max_len).clamp(min=0) + self.bptt - 1, self.bptt,
                          rounding_mode="floor") * self.bptt
        pos = torch.arange(x.shape[1], device=ids.device)[None, :]
        keep = ((pos >= start[:, None]) & (pos < lengths[:, None]))[:, :, None]  # (bs, sl, 1)
        max_pool = x.masked_fill(~keep, float("-inf")).max(dim=1)[0]
        mean_pool = x.masked_fill(~keep, 0.0).sum(dim=1) / (lengths - start).to(x.dtype)[:, None]
        last = x.gather(1, (lengths - 1)[:, None, None].expand(-1, 1, x.shape[2]))[:, 0]
        logits = self.head(torch.cat([last, max_pool, mean_pool], dim=1))
        return logits, activate(logits, self.sigmoid, self.bounds)


def export_onnx(fast: FastClassifier, path: str | Path, spec: LabelSpec | None = None) -> Path:
    """Write `fast` (a CPU fp32 `FastClassifier`) as ONNX with dynamic batch and sequence axes; `spec`: the
    label mode its probabilities follow (default: one softmax)."""
    path = Path(path)
    model = PaddedClassifier(fast, spec).eval()
    ids = torch.tensor([[2, 5, 6, 7], [2, 5, 1, 1]], dtype=torch.int64)  # example input: two texts, padded
    lengths = torch.tensor([4, 2], dtype=torch.int64)
    with warnings.catch_warnings():
        # the TorchScript-based exporter (dynamo=False): it maps nn.LSTM onto ONNX's LSTM op and needs no
        # onnxscript; torch calls it deprecated, and warns about the LSTM's batch_first, which it handles
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (ids, lengths), str(path), input_names=["ids", "lengths"],
                          output_names=["logits", "probabilities"], opset_version=OPSET, dynamo=False,
                          dynamic_axes={"ids": {0: "batch", 1: "seq"}, "lengths": {0: "batch"},
                                        "logits": {0: "batch"}, "probabilities": {0: "batch"}})
    return path


class OnnxPredictor(BasePredictor):
    """An exported folder's `model.onnx` on onnxruntime: texts in, probabilities out, in input order.

    Tokenizes as the torch `Predictor` does (fastai's rules + spaCy, the folder's vocab), batches by the
    same token budget, and runs the graph on padded batches. `predict`, `predict_proba` and `iter_proba`
    (chunk by chunk, for inputs of any length) come from `BasePredictor`, as for the torch predictors.

    Args:
        folder: an exported classifier folder with `model.onnx` (`ulmfit-lab export MODEL OUT --onnx`).
        max_tokens: padded token slots per batch.
        providers: onnxruntime execution providers (default: CPU).
    """

    def __init__(self, folder: str | Path, max_tokens: int = 32768, providers: Sequence[str] | None = None):
        try:
            import onnxruntime as ort
        except ImportError:
            raise ImportError("OnnxPredictor needs onnxruntime: pip install onnxruntime") from None

        from ..text.vocab import fast_tokenizer, vocab_index

        folder = Path(folder)
        if not (folder / ONNX).is_file():
            raise CheckpointError(f"{folder}: no {ONNX}; export it with `ulmfit-lab export MODEL OUT --onnx`")
        self.meta = json.loads((folder / META).read_text(encoding="utf-8"))
        vocab = json.loads((folder / VOCAB).read_text(encoding="utf-8"))
        super().__init__(self.meta["labels"], label_spec(self.meta), thresholds(self.meta))
        self.backwards = bool(self.meta["model"].get("backwards", False))
        self.max_tokens = max_tokens
        self.session = ort.InferenceSession(str(folder / ONNX), providers=list(providers or ["CPUExecutionProvider"]))
        self._tok = fast_tokenizer(self.meta.get("lang", "en"))
        self._o2i = vocab_index(vocab)

    def iter_chunks(self, chunks: Iterable[list[str]], bs: int | None = None) -> Iterator[np.ndarray]:
        """Probabilities for each list of texts in `chunks`, in order; `bs`: at most this many texts per batch
        (default 256, fewer where `max_tokens` says so)."""
        from ..text.vocab import encode

        seen = 0
        for chunk in chunks:
            check_strings(chunk, seen)
            seen += len(chunk)
            ids = ensure_nonempty(encode(self._tok, self._o2i, chunk))
            out = np.zeros((len(ids), len(self.labels)), dtype=np.float32)
            # the graph runs every row to the batch's longest text: budget the whole padded batch (no segments)
            for idx in plan_batches(np.array([len(x) for x in ids]), self.max_tokens, bs or 256, seg_len=2**31):
                x, lens = collate(ids, idx, self.backwards)
                out[idx] = self.session.run(["probabilities"], {"ids": x.numpy(), "lengths": lens.numpy()})[0]
            yield out
