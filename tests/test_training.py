"""Discriminative LRs, STLR, gradual unfreezing and AR/TAR, checked on real tiny models and runs."""

import json

import numpy as np
import pytest
import torch
from fastai.callback.core import Callback
from fastai.metrics import accuracy
from synth import make_reviews

from ulmfit_lab.config import ClassifierConfig, ModelConfig, RunConfig, TrainConfig
from ulmfit_lab.models.awd_lstm import build_classifier, build_lm, classifier_layer_groups, lm_layer_groups
from ulmfit_lab.text.vocab import build_vocab, numericalize, tokenize
from ulmfit_lab.training.learner import fit_phases, make_learner
from ulmfit_lab.training.loaders import classifier_loaders, lm_loaders
from ulmfit_lab.training.rundir import StageDir
from ulmfit_lab.training.schedules import unfreeze_phases

M = ModelConfig(emb_sz=8, n_hid=12, n_layers=2, bptt=10)
RUN = RunConfig(device="cpu", progress=False)


def _rows(path):
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


@pytest.fixture(scope="module")
def ids():
    df = make_reviews(64, seed=3)
    tok = tokenize(df.text.tolist())
    vocab = build_vocab([tok], min_freq=1)
    return vocab, numericalize(tok, vocab), [0 if y == "neg" else 1 for y in df.label]


def test_lm_groups_put_embedding_lowest():
    model = build_lm(50, M)
    groups = lm_layer_groups(model)
    assert len(groups) == 1 + M.n_layers
    assert groups[0][0] is model[0].encoder.weight
    assert model[1].decoder.weight is model[0].encoder.weight  # tied: the decoder weight is in group 0 too
    assert model[1].decoder.bias is groups[-1][-1]
    flat = [id(p) for g in groups for p in g]
    assert len(flat) == len(set(flat)) == len(list(model.parameters()))


def test_lr_per_group_ratio_2_6_during_training(tiny_run):
    for stage in ("lm_finetune", "classifier"):
        steps = [lrs for row in _rows(tiny_run["dir"] / stage / "lr_trace.jsonl") for lrs in row["lrs"]]
        assert steps, stage
        lrs = np.array(steps)
        np.testing.assert_allclose(lrs[:, 1:] / lrs[:, :-1], 2.6, rtol=1e-6)


def test_stlr_in_training_trace(tiny_run):
    # the top group's LR within one LM fine-tuning fit: up for cut_frac of the steps, then down to lr/ratio
    rows = _rows(tiny_run["dir"] / "lm_finetune" / "lr_trace.jsonl")
    top = np.array([lrs[-1] for row in rows for lrs in row["lrs"]])
    n = len(top)
    peak = int(np.argmax(top))
    assert abs(peak - 0.1 * n) <= 1.5
    assert top[peak] == pytest.approx(0.01, rel=0.15)  # tiny.yaml lm_finetune.lr
    assert top[0] < top[peak] / 5 and top[-1] < top[peak] / 10
    assert np.all(np.diff(top[peak:]) <= 1e-12)


def test_unfreezing_schedule_recorded_per_epoch(tiny_run):
    rows = _rows(tiny_run["dir"] / "classifier" / "metrics.jsonl")
    n_groups = len(rows[0]["trainable_groups"])
    expected = [k for ph in unfreeze_phases(n_groups, 10) for k in [ph.n_trainable] * ph.epochs]
    got = [sum(r["trainable_groups"]) for r in rows]
    assert got == expected
    for r in rows:  # the trainable groups are always the top ones
        k = sum(r["trainable_groups"])
        assert r["trainable_groups"] == [False] * (n_groups - k) + [True] * k


class _Snapshots(Callback):
    order = 99

    def __init__(self):
        self.epochs = []

    def before_epoch(self):
        self.start = [[p.detach().clone() for p in g] for g in self.opt.param_lists]
        self.grad_flags = [[p.requires_grad for p in g] for g in self.opt.param_lists]

    def after_epoch(self):
        changed = [any(not torch.equal(a, p) for a, p in zip(s, g)) for s, g in zip(self.start, self.opt.param_lists)]
        self.epochs.append((self.grad_flags, changed))


def test_only_scheduled_groups_train(ids, tmp_path):
    vocab, x, y = ids
    dls = classifier_loaders(x, y, x[:16], y[:16], 8, M.bptt, False, torch.device("cpu"), seed=0)
    model = build_classifier(len(vocab), 2, M, drop_mult=0.1, head=[8])
    cc = ClassifierConfig(epochs=4, lr=0.01, bs=8)
    learn = make_learner(dls, model, classifier_layer_groups, cc, RUN, torch.device("cpu"), [accuracy], tmp_path)
    snap = _Snapshots()
    phases = unfreeze_phases(len(learn.opt.param_lists), 4)
    fit_phases(learn, phases, cc, StageDir(tmp_path, "k"), extra_cbs=[snap])
    n = len(learn.opt.param_lists)
    assert len(snap.epochs) == 4
    for epoch, (flags, changed) in enumerate(snap.epochs):
        k = epoch + 1
        want = [False] * (n - k) + [True] * k
        assert [all(f) for f in flags] == want
        assert [not any(f) for f in flags] == [not w for w in want]
        assert changed == want  # frozen weights did not move, trained ones did


def test_a_last_batch_of_one_is_dropped_so_batchnorm_trains(ids, tmp_path):
    vocab, x, y = ids
    n = 17  # batches of 8, 8 and 1: BatchNorm in the head cannot train on the last
    dls = classifier_loaders(x[:n], y[:n], x[:16], y[:16], 8, M.bptt, False, torch.device("cpu"), seed=0)
    assert [len(b[1]) for b in dls.train] == [8, 8]
    model = build_classifier(len(vocab), 2, M, drop_mult=0.1, head=[8])
    cc = ClassifierConfig(epochs=1, lr=0.01, bs=8)
    learn = make_learner(dls, model, classifier_layer_groups, cc, RUN, torch.device("cpu"), [accuracy], tmp_path)
    fit_phases(learn, unfreeze_phases(len(learn.opt.param_lists), 1), cc, StageDir(tmp_path, "k"))
    full = classifier_loaders(x[:18], y[:18], x[:16], y[:16], 8, M.bptt, False, torch.device("cpu"), seed=0)
    assert sorted(len(b[1]) for b in full.train) == [2, 8, 8]  # a last batch of two is kept


class _LossGap(Callback):
    order = 5  # after RNNRegularizer

    def __init__(self):
        self.gaps = []

    def after_loss(self):
        if self.training:
            self.gaps.append(float(self.learn.loss_grad) - float(self.learn.loss))


@pytest.mark.parametrize("alpha,beta", [(0.0, 0.0), (2.0, 0.0), (0.0, 1.0)])
def test_ar_tar_act(ids, tmp_path, alpha, beta):
    vocab, x, _ = ids
    dls = lm_loaders(x, x[:8], 4, M.bptt, False, torch.device("cpu"), seed=0)
    tc = TrainConfig(alpha=alpha, beta=beta, clip=None)
    learn = make_learner(dls, build_lm(len(vocab), M), lm_layer_groups, tc, RUN, torch.device("cpu"), [], tmp_path)
    gap = _LossGap()
    learn.fit(1, lr=1e-3, cbs=[gap])
    if alpha == beta == 0:
        assert max(abs(g) for g in gap.gaps) < 1e-6
    else:
        assert min(gap.gaps) > 0  # the regulariser adds to the loss that is back-propagated
