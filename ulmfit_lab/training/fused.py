"""Cheaper decoder + softmax cross-entropy for training LMs: chunked and fused (exact), or sampled.

With a 20k vocab the LM's decoder and softmax cost more than its three LSTM layers: fastai computes a
(bs * bptt) x vocab logits matrix (358 MB in fp32 at bs 64, bptt 70), takes its log-softmax and
back-propagates through all of it. Here, during training only, the decoder hands its (dropped-out)
input to the loss, which computes logits, loss and the gradients of hidden state, weight and bias in
chunks of rows that stay in cache: the same maths, ~1.7x faster on this CPU's decoder, no big tensor.
Evaluation (validation loss, accuracy, perplexity, generation) still goes through the plain decoder.

Sampled softmax (`SampledLMLoss`, pretraining only: `lm_pretrain.softmax_samples`) goes further: each
step scores the true next word against a few thousand sampled words instead of all 20k, with the
importance weights that make it estimate the full softmax. The tied decoder then costs a fraction of the
LSTMs, and the model it trains is the same full-softmax LM: nothing changes downstream.
"""

from __future__ import annotations

import numpy as np
import torch
from fastai.losses import CrossEntropyLossFlat
from fastai.text.models.core import LinearDecoder
from torch import nn


class _ChunkedSoftmaxCE(torch.autograd.Function):
    """mean_i CE(h_i @ W.T + b, y_i); gradients are computed in the forward pass, chunk by chunk."""

    @staticmethod
    def forward(ctx, h, weight, bias, target, chunk: int, dtype: torch.dtype):
        hd, wd = h.to(dtype), weight.to(dtype)
        bd = None if bias is None else bias.to(dtype)
        n = h.shape[0]
        grad_h = torch.empty(h.shape, dtype=torch.float32, device=h.device)
        grad_w = torch.zeros(weight.shape, dtype=torch.float32, device=h.device)
        grad_b = None if bias is None else torch.zeros(bias.shape, dtype=torch.float32, device=h.device)
        total = torch.zeros((), dtype=torch.float32, device=h.device)
        rows = torch.arange(chunk, device=h.device)
        for s in range(0, n, chunk):
            hc, yc = hd[s:s + chunk], target[s:s + chunk]
            logits = (hc @ wd.t() if bd is None else torch.addmm(bd, hc, wd.t())).float()  # chunk x vocab
            lse = torch.logsumexp(logits, dim=1)
            total += (lse - logits.gather(1, yc[:, None]).squeeze(1)).sum()
            g = logits.sub_(lse[:, None]).exp_()  # softmax, in place
            g[rows[:len(yc)], yc] -= 1  # d CE / d logits = softmax - one_hot
            if grad_b is not None:
                grad_b += g.sum(0)
            g = g.to(dtype)
            grad_h[s:s + chunk] = g @ wd
            grad_w += (g.t() @ hc).float()
        ctx.save_for_backward(grad_h, grad_w, grad_b)
        ctx.n = n
        return total / n

    @staticmethod
    def backward(ctx, grad_out):
        grad_h, grad_w, grad_b = ctx.saved_tensors
        scale = grad_out / ctx.n
        return (grad_h * scale, grad_w * scale, None if grad_b is None else grad_b * scale,
                None, None, None)


def chunked_softmax_ce(h: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, target: torch.Tensor,
                       chunk: int = 256, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Mean cross-entropy of `h @ weight.T + bias` against `target`, never materialising all logits.

    Args:
        h: hidden states, (n, emb).
        weight, bias: the decoder's (tied) weight (vocab, emb) and bias (vocab,).
        target: token ids, (n,).
        chunk: rows per chunk (256 x 20k logits = 20 MB in fp32).
        dtype: matmul precision (bf16 on a CPU with AVX-512 BF16 is ~2x fp32); softmax is always fp32.
    """
    with torch.autocast(h.device.type, enabled=False):
        return _ChunkedSoftmaxCE.apply(h.reshape(-1, h.shape[-1]), weight, bias, target.reshape(-1), chunk, dtype)


class FusedLinearDecoder(LinearDecoder):
    """fastai's `LinearDecoder` that, in training, returns its dropped-out input instead of the logits.

    The logits are then computed by `FusedLMLoss`. Same parameters and state dict as `LinearDecoder`.
    """

    def forward(self, input):
        if not self.training:
            return super().forward(input)
        dp_inp = self.output_dp(input)
        return dp_inp, input, dp_inp


class FusedLMLoss:
    """Cross-entropy for an LM whose decoder is a `FusedLinearDecoder`: fused in training, plain otherwise."""

    def __init__(self, decoder: FusedLinearDecoder, dtype: torch.dtype = torch.float32, chunk: int = 256):
        self.decoder, self.dtype, self.chunk = decoder, dtype, chunk
        self.plain = CrossEntropyLossFlat()

    def __call__(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if not self.decoder.training:
            return self.plain(pred, target)
        lin = self.decoder.decoder
        return chunked_softmax_ce(pred, lin.weight, lin.bias, target, self.chunk, self.dtype)

    # fastai calls these on its loss function when it gathers predictions
    def activation(self, x: torch.Tensor) -> torch.Tensor:
        return self.plain.activation(x)

    def decodes(self, x: torch.Tensor) -> torch.Tensor:
        return self.plain.decodes(x)


def fuse_lm_loss(model: nn.Module, dtype: torch.dtype = torch.float32) -> FusedLMLoss:
    """Switch an LM built by `get_language_model` to the fused decoder; return the loss to train it with."""
    dec = model[1]
    if not isinstance(dec, LinearDecoder):
        raise TypeError(f"expected a fastai LinearDecoder as model[1], found {type(dec).__name__}")
    dec.__class__ = FusedLinearDecoder  # same attributes and state dict, only forward() differs
    return FusedLMLoss(dec, dtype)


class SampledLMLoss:
    """Sampled softmax cross-entropy for an LM with a `FusedLinearDecoder`, in training; plain CE otherwise.

    Each call draws `n_draws` words (with replacement) from `q` ∝ `counts ** power` and keeps the distinct
    ones, S. Word w is in S with probability pi_w = 1 - (1 - q_w) ** n_draws, so
    exp(s_y) + sum over w in S, w != y of exp(s_w) / pi_w is an unbiased estimate of the full softmax's
    normaliser (the true word y is always scored exactly). With the unigram proposal the frequent words are
    in S at nearly every step, so only the rare ones are estimated. As in Jean et al. (2015) and Bengio &
    Senecal (2008); TensorFlow's `sampled_softmax_loss` is the same estimator with the true logit also
    corrected. The draws use torch's RNG, which the checkpoints keep: a resumed run draws the same words.

    Args:
        decoder: the LM's decoder, switched to `FusedLinearDecoder` (see `fuse_lm_loss`).
        counts: training-token count of every vocab id (the proposal; ids never seen are never drawn).
        n_draws: draws per step (about 2-4k for a 20k vocab).
        power: flattening of the unigram proposal (0.75 spends more draws on rare words than 1.0).
        dtype: matmul precision (bf16 on CPUs that have it natively); the softmax stays fp32.
    """

    def __init__(self, decoder: FusedLinearDecoder, counts: np.ndarray, n_draws: int, power: float = 0.75,
                 dtype: torch.dtype = torch.float32):
        if n_draws < 1:
            raise ValueError(f"n_draws must be >= 1, got {n_draws}")
        q = np.asarray(counts, dtype=np.float64) ** power
        if not q.sum() > 0:
            raise ValueError("counts: no word has a positive count; the proposal needs training counts")
        self.decoder, self.n_draws, self.dtype = decoder, int(n_draws), dtype
        q = torch.as_tensor(q / q.sum(), dtype=torch.float64)
        self.q = q.float()
        # log pi_w, computed in float64 (1 - (1 - q) ** n underflows for rare words in float32)
        self.log_pi = torch.log(-torch.expm1(n_draws * torch.log1p(-q))).float()
        self.plain = CrossEntropyLossFlat()

    def __call__(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if not self.decoder.training:
            return self.plain(pred, target)
        lin = self.decoder.decoder
        with torch.autocast(pred.device.type, enabled=False):
            return self._loss(pred.reshape(-1, pred.shape[-1]), target.reshape(-1), lin.weight, lin.bias)

    def _loss(self, h: torch.Tensor, y: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None):
        q, log_pi = self.q.to(h.device), self.log_pi.to(h.device)
        cand = torch.unique(torch.multinomial(q, self.n_draws, replacement=True))
        hd = h.to(self.dtype)
        neg = (hd @ weight[cand].to(self.dtype).t()).float() - log_pi[cand]  # n x |S|
        true = (h * weight[y]).sum(1)
        if bias is not None:
            neg = neg + bias[cand]
            true = true + bias[y]
        neg = neg.masked_fill(cand[None, :] == y[:, None], float("-inf"))  # y is scored exactly in `true`
        return (torch.logsumexp(torch.cat([true[:, None], neg], 1), 1) - true).mean()

    def activation(self, x: torch.Tensor) -> torch.Tensor:
        return self.plain.activation(x)

    def decodes(self, x: torch.Tensor) -> torch.Tensor:
        return self.plain.decodes(x)


def sample_lm_loss(model: nn.Module, counts: np.ndarray, n_draws: int,
                   dtype: torch.dtype = torch.float32) -> SampledLMLoss:
    """Switch an LM built by `get_language_model` to the fused decoder; return its sampled-softmax loss."""
    fuse_lm_loss(model, dtype)
    return SampledLMLoss(model[1], counts, n_draws, dtype=dtype)
