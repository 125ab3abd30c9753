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
change it; in some mixed-length batches fastai's result depends on the other documents (README, "Inference
and serving"; `fastai_compat.batch_dependent`): here a document's prediction never depends on its batch.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterator, Sequence
from contextlib import nullcontext

import numpy as np
import torch
from torch import Tensor, nn

from ..models.awd_lstm import activate
from ..text.vocab import PAD


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

    def features(self, ids: Tensor, lengths: Tensor, seg_len: int = 256, min_seg: int = 32) -> Tensor:
        """BPT3C concat pooling [last, max, mean] of the last LSTM layer: (bs, sl) ids -> (bs, 3 * emb_sz).

        Document i is `ids[i, :lengths[i]]` (right padding). The LSTMs run a segment of at most `seg_len` steps
        at a time with the state carried over (the same result as one pass; memory stays bs x seg_len whatever
        the length), each segment only on the documents not yet finished, longest first. A segment ends where
        the shortest running document ends (but runs at least `min_seg` steps), so no document runs `min_seg`
        steps past its end: with fixed 256-step segments a 300-token review ran 512 steps, padding that cost
        int8 (whose kernel is otherwise at its ceiling) 40% of its speed on IMDb reviews.
        Pooling reads the window fastai keeps: positions >= ceil((L - max_len) / bptt) * bptt.
        """
        lengths = lengths.to(ids.device)
        lengths, order = torch.sort(lengths, descending=True)
        ids = ids[order]
        bs, sl = ids.shape[0], ids.shape[1]
        start = torch.div((lengths - self.max_len).clamp(min=0) + self.bptt - 1, self.bptt,
                          rounding_mode="floor") * self.bptt
        d = self.lstms[-1].hidden_size
        states: list[tuple[Tensor, Tensor]] = []
        for layer in self.lstms:
            z = torch.zeros(1, bs, layer.hidden_size, device=ids.device)
            states.append((z, z))
        last = torch.zeros(bs, d, device=ids.device)
        max_pool = torch.full((bs, d), float("-inf"), device=ids.device)
        sum_pool = torch.zeros(bs, d, device=ids.device)
        s = 0
        while s < sl:
            n = int((lengths > s).sum())  # documents still running: a prefix, as they are sorted
            # up to the end of the shortest running document, but at least min_seg steps
            e = min(sl, s + seg_len, max(s + min_seg, int(lengths[n - 1])))
            x = self.embedding(ids[:n, s:e])
            for i, rnn in enumerate(self.lstms):
                h, c = states[i]
                x, (h, c) = rnn(x, (h[:, :n].contiguous(), c[:, :n].contiguous()))
                states[i] = (h, c)
            out = x.float()  # pooling in fp32, also under autocast: a mean over 1,400 steps wants it
            pos = torch.arange(s, s + out.shape[1], device=ids.device)[None, :]
            keep = ((pos >= start[:n, None]) & (pos < lengths[:n, None]))[:, :, None]
            max_pool[:n] = torch.maximum(max_pool[:n], out.masked_fill(~keep, float("-inf")).max(dim=1)[0])
            sum_pool[:n] += out.masked_fill(~keep, 0.0).sum(dim=1)
            end = lengths[:n] - 1 - s  # the last token's position in this segment, if it is in it
            here = (end >= 0) & (end < out.shape[1])
            at_end = out[torch.arange(n, device=ids.device), end.clamp(0, out.shape[1] - 1)]
            last[:n] = torch.where(here[:, None], at_end, last[:n])
            s = e
        pooled = torch.cat([last, max_pool, sum_pool / (lengths - start).to(sum_pool.dtype)[:, None]], dim=1)
        return pooled[torch.argsort(order)]

    def forward(self, ids: Tensor, lengths: Tensor) -> Tensor:
        """Logits (bs, n_class) for right-padded token ids (bs, sl) and document lengths (bs,)."""
        return self.head(self.features(ids, lengths))



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


def plan_batches(lengths: np.ndarray, max_tokens: int = 32768, max_bs: int = 256,
                 seg_len: int = 256) -> list[np.ndarray]:
    """Longest first; each batch holds <= `max_tokens` token slots per LSTM segment (bs x min(longest, seg_len)).

    `max_bs` 256: larger batches gain nothing on CPU (the gate buffers leave the caches). Length order keeps
    neighbours within a few tokens, and `FastClassifier.features` stops computing a document at its end.
    """
    order = np.argsort(-np.asarray(lengths), kind="stable")
    batches, i = [], 0
    while i < len(order):
        b = max(1, min(max_bs, max_tokens // max(1, min(seg_len, int(lengths[order[i]])))))
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
                backwards: bool = False, max_tokens: int = 32768, max_bs: int = 256,
                activation: Callable[[Tensor], Tensor] | None = None) -> Iterator[tuple]:
    """Yield (positions, probabilities) batch by batch, longest documents first.

    `activation`: logits -> probabilities (default: a softmax over the classes; see `activate`).
    """
    for idx in plan_batches(np.fromiter((len(x) for x in ids), dtype=np.int64, count=len(ids)), max_tokens,
                            max_bs):
        x, lens = collate(ids, idx, backwards)
        with _autocast(precision, device):
            feats = model.features(x.to(device), lens)
        logits = model.head(feats)  # the head in fp32: a few small matmuls
        yield idx, (activation or activate)(logits.float()).cpu().numpy()


def ensure_nonempty(ids: list[np.ndarray]) -> list[np.ndarray]:
    """fastai's rules always add `xxbos`; guard against an empty id list all the same (it has no last token)."""
    return [x if len(x) else np.array([PAD], dtype=np.int64) for x in ids]
