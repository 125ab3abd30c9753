"""The fused decoder + softmax gives fastai's loss and gradients, and an LM trained with it learns."""

import numpy as np
import pytest
import torch
from fastai.losses import CrossEntropyLossFlat

from ulmfit_lab.config import ModelConfig
from ulmfit_lab.models.awd_lstm import build_lm
from ulmfit_lab.training.fused import chunked_softmax_ce, fuse_lm_loss, sample_lm_loss

M = ModelConfig(emb_sz=12, n_hid=16, n_layers=2, bptt=9)


@pytest.mark.parametrize("chunk", [7, 64, 1000])
def test_chunked_ce_matches_cross_entropy(chunk):
    g = torch.Generator().manual_seed(0)
    h = torch.randn(50, 12, generator=g, requires_grad=True)
    w = torch.randn(300, 12, generator=g, requires_grad=True)
    b = torch.randn(300, generator=g, requires_grad=True)
    y = torch.randint(0, 300, (50,), generator=g)
    ref = torch.nn.functional.cross_entropy(h @ w.t() + b, y)
    ref_grads = torch.autograd.grad(ref * 3.0, (h, w, b))
    got = chunked_softmax_ce(h, w, b, y, chunk=chunk)
    grads = torch.autograd.grad(got * 3.0, (h, w, b))
    torch.testing.assert_close(got, ref, rtol=1e-5, atol=1e-6)
    for a, r in zip(grads, ref_grads):
        torch.testing.assert_close(a, r, rtol=1e-4, atol=1e-6)


def test_fused_lm_step_equals_plain_step():
    torch.manual_seed(0)
    plain = build_lm(80, M, drop_mult=0.0001)
    torch.manual_seed(0)
    fused = build_lm(80, M, drop_mult=0.0001)
    loss_fn = fuse_lm_loss(fused)
    x, y = torch.randint(0, 80, (4, M.bptt)), torch.randint(0, 80, (4, M.bptt))
    for model, loss in ((plain, CrossEntropyLossFlat()), (fused, loss_fn)):
        model.train()
        model.reset()
        torch.manual_seed(1)  # the same dropout masks in both
        loss(model(x)[0], y).backward()
    assert fused[1].decoder.weight is fused[0].encoder.weight  # still tied
    for (name, p), q in zip(plain.named_parameters(), fused.parameters()):
        torch.testing.assert_close(q.grad, p.grad, rtol=1e-4, atol=1e-6, msg=name)
    fused.eval()  # evaluation goes through the plain decoder: logits out
    assert fused(x)[0].shape == (4, M.bptt, 80)
    assert set(fused.state_dict()) == set(plain.state_dict())


def _train(loss_for, steps=120):
    torch.manual_seed(0)
    model = build_lm(40, M, drop_mult=0.0001)
    loss_fn = loss_for(model)
    seq = torch.arange(4 * 30).remainder(40).view(4, 30)  # a fully predictable stream
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    model.train()
    losses = []
    for _ in range(steps):
        model.reset()
        loss = loss_fn(model(seq[:, :-1])[0], seq[:, 1:])
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss))
    return losses


def test_lm_learns_with_fused_loss_in_bf16():
    plain = _train(lambda m: CrossEntropyLossFlat())
    fused = _train(lambda m: fuse_lm_loss(m, torch.bfloat16))
    assert fused[-1] < 0.2 * fused[0]
    assert fused[-1] < 1.5 * plain[-1] + 0.05  # bf16 matmuls learn as well as the fp32 plain loss


def test_sampled_softmax_with_every_word_drawn_is_the_full_softmax():
    # with far more draws than words every word is a candidate (pi = 1): exactly the full cross-entropy
    torch.manual_seed(0)
    model = build_lm(50, M, drop_mult=0.0001)
    loss_fn = sample_lm_loss(model, np.ones(50), n_draws=100_000)
    h, y = torch.randn(30, M.emb_sz, requires_grad=True), torch.randint(0, 50, (30,))
    lin = model[1].decoder
    ref = torch.nn.functional.cross_entropy(h @ lin.weight.t() + lin.bias, y)
    torch.testing.assert_close(loss_fn(h, y), ref, rtol=1e-5, atol=1e-6)


def test_sampled_softmax_estimates_the_full_normaliser_without_bias():
    # exp(loss) = Z_hat / exp(s_y) with E[Z_hat] = Z: the mean over draws approaches exp(full CE)
    torch.manual_seed(0)
    model = build_lm(400, M, drop_mult=0.0001)
    counts = 1.0 / np.arange(1, 401)  # Zipf, like a frequency-sorted vocab
    loss_fn = sample_lm_loss(model, counts, n_draws=40)
    h, y = torch.randn(1, M.emb_sz), torch.tensor([7])
    lin = model[1].decoder
    full = torch.nn.functional.cross_entropy(h @ lin.weight.t() + lin.bias, y).exp()
    with torch.no_grad():
        est = torch.stack([loss_fn(h, y).exp() for _ in range(3000)]).mean()
    assert abs(float(est / full) - 1) < 0.05
    # and an unweighted sample (no -log pi) would be far off: the correction is what makes it unbiased
    loss_fn.log_pi.zero_()
    with torch.no_grad():
        naive = torch.stack([loss_fn(h, y).exp() for _ in range(300)]).mean()
    assert float(naive / full) < 0.8


def test_lm_learns_with_sampled_softmax_and_stays_tied():
    # trained with 20 draws from 40 words, then measured as what it is: a full-softmax LM. (With so few words
    # the sampled gradient is noisy and learns slower per step than the full one; in a 20k vocab the frequent
    # words are drawn at almost every step and only the rare ones are estimated.)
    torch.manual_seed(0)
    model = build_lm(40, M, drop_mult=0.0001)
    loss_fn = sample_lm_loss(model, np.ones(40), n_draws=20)
    assert model[1].decoder.weight is model[0].encoder.weight
    seq = torch.arange(4 * 30).remainder(40).view(4, 30)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(240):
        model.train()
        model.reset()
        loss = loss_fn(model(seq[:, :-1])[0], seq[:, 1:])
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    model.reset()
    full = float(CrossEntropyLossFlat()(model(seq[:, :-1])[0], seq[:, 1:]))
    assert full < 0.33 * np.log(40)  # from log(40) = 3.69 at the start


def test_sampled_softmax_needs_counts():
    with pytest.raises(ValueError, match="positive count"):
        sample_lm_loss(build_lm(10, M), np.zeros(10), n_draws=4)
