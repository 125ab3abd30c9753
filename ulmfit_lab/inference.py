"""The fast eval path of fastai's AWD-LSTM classifier: the same weights, the same result, far fewer calls.

fastai's `SentenceEncoder` cuts each batch into `bptt`-token chunks and calls three separately wrapped
`nn.LSTM` layers (through `WeightDropout`) once per chunk, carrying the hidden state. In eval mode that
is one LSTM pass over the whole document from a zero state, so here each layer runs once over the whole
right-padded batch (oneDNN's fused RNN kernel on CPU, cuDNN on GPU). Right padding never changes the
outputs at real tokens (the LSTM is causal), and pooling only reads real tokens.

BPT3C for long documents: fastai keeps the outputs of the chunks that start within the last `max_len`
positions (`sl - i <= max_len`) and concat-pools [last, max, mean] over them. For one document of length
L those are the positions >= `ceil((L - max_len) / bptt) * bptt`; `pool` keeps exactly those. This is what
fastai computes for a document on its own (`learn.predict`) and in any batch whose composition does not
change it; in some mixed-length batches fastai's result depends on the other documents (see `docs/` in
README, "Inference"): here a document's prediction never depends on its batch.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator, Sequence
from contextlib import nullcontext
from typing import Literal

import numpy as np
import torch
from torch import Tensor, nn

from .text import PAD

Precision = Literal["auto", "fp32", "bf16", "fp16", "int8"]


class FastClassifier(nn.Module):
    """Eval-only AWD-LSTM classifier: embedding -> LSTM layers (once each) -> BPT3C concat pooling -> head.

    Scriptable with `torch.jit.script` (serving without fastai). Inputs are token ids, right-padded.
    """

    def __init__(self, embedding: nn.Embedding, lstms: Sequence[nn.LSTM], head: nn.Sequential, bptt: int,
                 max_len: int):
        super().__init__()
        self.embedding = embedding
        self.lstms = nn.ModuleList(lstms)
        self.head = head
        self.bptt = int(bptt)
        self.max_len = int(max_len)

    @classmethod
    def from_fastai(cls, model: nn.Module) -> FastClassifier:
        """Copy the weights of fastai's `get_text_classifier(AWD_LSTM, ...)` (a `SequentialRNN`)."""
        enc, clas = model[0], model[1]
        awd = enc.module
        lstms = []
        for rnn in awd.rnns:  # WeightDropout(nn.LSTM): the un-dropped hidden weights live in `weight_hh_l0_raw`
            inner = rnn.module
            lstm = nn.LSTM(inner.input_size, inner.hidden_size, batch_first=True)
            lstm.load_state_dict({"weight_ih_l0": inner.weight_ih_l0, "weight_hh_l0": rnn.weight_hh_l0_raw,
                                  "bias_ih_l0": inner.bias_ih_l0, "bias_hh_l0": inner.bias_hh_l0})
            lstms.append(lstm)
        emb = nn.Embedding(awd.encoder.num_embeddings, awd.encoder.embedding_dim)
        emb.weight.data.copy_(awd.encoder.weight.data)
        # the head in eval form: LinBnDrop = BatchNorm1d, Dropout (identity in eval), Linear, ReLU
        layers = [copy.deepcopy(m) for block in clas.layers for m in block.children() if not isinstance(m, nn.Dropout)]
        for m in layers:
            if isinstance(m, nn.ReLU):
                m.inplace = False
        out = cls(emb, lstms, nn.Sequential(*layers), enc.bptt, enc.max_len if enc.max_len is not None else 2**31)
        return out.eval()

    def encode(self, ids: Tensor) -> Tensor:
        """(bs, sl) token ids -> (bs, sl, emb_sz) outputs of the last LSTM layer."""
        x = self.embedding(ids)
        for lstm in self.lstms:
            x, _ = lstm(x)
        return x

    def pool(self, out: Tensor, lengths: Tensor) -> Tensor:
        """BPT3C concat pooling [last, max, mean] over each document's last-`max_len` window.

        `out`: (bs, sl, d) with document i in `out[i, :lengths[i]]`; returns (bs, 3 * d).
        """
        bs, sl = out.shape[0], out.shape[1]
        lengths = lengths.to(out.device)
        # fastai keeps chunk i (starting at i * bptt) when L - i * bptt <= max_len
        start = torch.div((lengths - self.max_len).clamp(min=0) + self.bptt - 1, self.bptt,
                          rounding_mode="floor") * self.bptt
        pos = torch.arange(sl, device=out.device)[None, :]
        keep = ((pos >= start[:, None]) & (pos < lengths[:, None]))[:, :, None]
        last = out[torch.arange(bs, device=out.device), lengths - 1]
        max_pool = out.masked_fill(~keep, float("-inf")).max(dim=1)[0]
        avg_pool = out.masked_fill(~keep, 0.0).sum(dim=1) / (lengths - start).to(out.dtype)[:, None]
        return torch.cat([last, max_pool, avg_pool], dim=1)

    def forward(self, ids: Tensor, lengths: Tensor) -> Tensor:
        """Logits (bs, n_class) for right-padded token ids (bs, sl) and document lengths (bs,)."""
        return self.head(self.pool(self.encode(ids), lengths))


# ---------------------------------------------------------------- precision


def resolve_precision(precision: Precision, device: torch.device) -> str:
    """'auto' is exact fp32 on CPU and mixed precision on GPU (bf16 where the GPU has it, else fp16)."""
    if precision != "auto":
        return precision
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    return "fp32"


def prepare(model: FastClassifier, precision: str, device: torch.device) -> FastClassifier:
    """The model on `device`, int8-quantized for `precision='int8'` (CPU only)."""
    if precision not in ("fp32", "bf16", "fp16", "int8"):
        raise ValueError(f"precision: expected one of auto, fp32, bf16, fp16, int8; found {precision!r}")
    if precision == "int8":
        if device.type != "cpu":
            raise ValueError("precision='int8' (dynamic quantization) runs on CPU only; use bf16/fp16 on GPU")
        # torch marks eager-mode dynamic quantization deprecated (in favour of torchao); it still works,
        # and matters on CPUs without native bf16. LSTM and Linear weights go to int8, activations stay float.
        return torch.ao.quantization.quantize_dynamic(copy.deepcopy(model).cpu(), {nn.LSTM, nn.Linear},
                                                      dtype=torch.qint8).eval()
    if precision == "fp16" and device.type == "cpu":
        raise ValueError("precision='fp16' is for GPUs; on CPU use bf16 (autocast) or int8")
    return model.to(device).eval()


def _autocast(precision: str, device: torch.device):
    if precision in ("bf16", "fp16"):
        return torch.autocast(device.type, dtype=torch.bfloat16 if precision == "bf16" else torch.float16)
    return nullcontext()


# ---------------------------------------------------------------- batching


def plan_batches(lengths: np.ndarray, max_tokens: int = 32768, max_bs: int = 1024) -> list[np.ndarray]:
    """Longest first, each batch padded to its first (longest) document and holding <= `max_tokens` slots.

    Neighbours in length order differ by a few tokens, so padding wastes little; a document longer than
    `max_tokens` gets a batch of its own.
    """
    order = np.argsort(-np.asarray(lengths), kind="stable")
    batches, i = [], 0
    while i < len(order):
        b = max(1, min(max_bs, max_tokens // max(1, int(lengths[order[i]]))))
        batches.append(order[i:i + b])
        i += b
    return batches


def collate(ids: Sequence[np.ndarray], idx: np.ndarray, backwards: bool = False) -> tuple[Tensor, Tensor]:
    """Right-padded (len(idx), max length) int64 ids and the lengths; reversed texts for a backward model."""
    lens = np.fromiter((len(ids[i]) for i in idx), dtype=np.int64, count=len(idx))
    x = np.full((len(idx), int(lens.max())), PAD, dtype=np.int64)
    for row, i in enumerate(idx):
        x[row, :lens[row]] = ids[i][::-1] if backwards else ids[i]
    return torch.from_numpy(x), torch.from_numpy(lens)


@torch.inference_mode()
def run_batches(model: FastClassifier, ids: Sequence[np.ndarray], precision: str, device: torch.device,
                backwards: bool = False, max_tokens: int = 32768, max_bs: int = 1024) -> Iterator[tuple]:
    """Yield (positions, probabilities) batch by batch, longest documents first."""
    for idx in plan_batches(np.fromiter((len(x) for x in ids), dtype=np.int64, count=len(ids)), max_tokens,
                            max_bs):
        x, lens = collate(ids, idx, backwards)
        x = x.to(device, non_blocking=True)
        with _autocast(precision, device):
            out = model.encode(x)
        # pooling and head in fp32: the cast costs little and keeps the mean over long documents accurate
        logits = model.head(model.pool(out.float(), lens))
        yield idx, torch.softmax(logits.float(), dim=-1).cpu().numpy()


def ensure_nonempty(ids: list[np.ndarray]) -> list[np.ndarray]:
    """fastai's rules always add `xxbos`; guard against an empty id list all the same (it has no last token)."""
    return [x if len(x) else np.array([PAD], dtype=np.int64) for x in ids]
