"""The fast inference path against stock fastai on the same weights: per document, long documents (BPT3C),
mixed-length batches, backward models; input order, streaming, parallel tokenization, reduced precision."""

import warnings

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import randomize_
from synth import make_reviews

from ulmfit_lab import SentimentClassifier
from ulmfit_lab.config import ModelConfig
from ulmfit_lab.models.awd_lstm import build_classifier
from ulmfit_lab.serving import predict as predict_mod
from ulmfit_lab.serving.fastai_compat import batch_dependent, stock_learner
from ulmfit_lab.serving.inference import FastClassifier, plan_batches, run_batches
from ulmfit_lab.serving.predict import Predictor
from ulmfit_lab.training.loaders import pad_batch


def _texts(n: int, seed: int = 0) -> list[str]:
    """Reviews of 1 to 60 sentences: from shorter than bptt (16) to past max_len (320 tokens)."""
    rng = np.random.default_rng(seed)
    return [make_reviews(2, seed=seed * 1000 + i, n_sent=int(k)).text[0] for i, k in enumerate(rng.integers(1, 60, n))]


@pytest.fixture(scope="module")
def model_dir(tiny_run):
    return tiny_run["dir"] / "classifier" / "model"


@pytest.fixture(scope="module")
def learner(model_dir):
    return stock_learner(model_dir)


def _fastai_preds(learn, texts, bs):
    with learn.no_bar():
        return learn.get_preds(dl=learn.dls.test_dl(texts, bs=bs))[0].numpy()


def test_equals_stock_fastai_per_document(model_dir, learner):
    texts = _texts(30)
    pred = Predictor.load(model_dir, precision="fp32")
    lens = [len(x) for x in pred.encode(texts)]
    assert min(lens) < pred.bptt and max(lens) > pred.meta["max_len"]  # short, multi-chunk and BPT3C-cut texts
    ours = pred.predict_proba(texts)
    # fastai with each document in its own batch (= learn.predict): the result that depends on no other text
    np.testing.assert_allclose(ours, _fastai_preds(learner, texts, bs=1), atol=1e-4)
    with learner.no_bar():
        single = np.stack([learner.predict(t)[2].numpy() for t in texts[:4]])
    np.testing.assert_allclose(ours[:4], single, atol=1e-4)
    assert pred.predict(texts) == [learner.dls.vocab[1][i] for i in ours.argmax(1)]


def test_equals_stock_fastai_batched_short_texts(model_dir, learner):
    # texts of one chunk: fastai's batched get_preds does not depend on the batch, so it must match exactly
    texts = make_reviews(40, seed=3, n_sent=1).text.tolist()
    pred = Predictor.load(model_dir, precision="fp32")
    assert max(len(x) for x in pred.encode(texts)) <= pred.bptt
    np.testing.assert_allclose(pred.predict_proba(texts), _fastai_preds(learner, texts, bs=16), atol=1e-4)


def test_prediction_does_not_depend_on_the_batch(model_dir):
    texts = _texts(25, seed=1)
    pred = Predictor.load(model_dir, precision="fp32")
    alone = np.concatenate([pred.predict_proba([t]) for t in texts])
    for bs in (2, 7, None):
        np.testing.assert_allclose(pred.predict_proba(texts, bs=bs), alone, atol=1e-5)
    pred.max_tokens = 64  # tiny budget: every long text alone, short ones a few per batch
    np.testing.assert_allclose(pred.predict_proba(texts), alone, atol=1e-5)


@pytest.mark.parametrize("backwards", [False, True])
def test_fast_classifier_equals_fastai_model(backwards):
    """Random (not trained) weights large enough to matter, every length around the bptt and max_len edges."""
    torch.manual_seed(0)
    bptt, max_len = 8, 24
    model = randomize_(build_classifier(
        60, 3, ModelConfig(emb_sz=16, n_hid=24, n_layers=3, bptt=bptt, backwards=backwards), 0.5, [8], max_len).eval())
    g = torch.Generator().manual_seed(1)
    lens = [1, 2, 7, 8, 9, 16, 17, 23, 24, 25, 31, 32, 33, 47, 48, 49, 100]
    ids = [np.r_[2, torch.randint(4, 60, (n - 1,), generator=g).numpy()].astype(np.int64) for n in lens]
    with torch.no_grad():
        ref = torch.stack([model(torch.as_tensor(x[::-1].copy() if backwards else x)[None])[0].softmax(-1)[0]
                           for x in ids]).numpy()
    out = np.zeros_like(ref)
    for idx, p in run_batches(FastClassifier.from_fastai(model), ids, "fp32", torch.device("cpu"), backwards,
                              max_tokens=120):
        out[idx] = p
    assert ref.std(0).max() > 0.01  # the texts really get different predictions
    np.testing.assert_allclose(out, ref, atol=1e-5)


def test_segments_stop_at_document_ends_and_do_not_change_features():
    """However the LSTM pass is cut into segments, the pooled features are those of one pass; and no document
    runs `min_seg` or more steps past its end (padding costs no compute)."""
    torch.manual_seed(0)
    model = randomize_(build_classifier(60, 3, ModelConfig(emb_sz=16, n_hid=24, n_layers=2, bptt=8), 0.5, [8], 24))
    fast = FastClassifier.from_fastai(model.eval())
    lens = torch.tensor([100, 49, 48, 33, 25, 24, 17, 9, 8, 2, 1])
    ids = torch.randint(4, 60, (len(lens), int(lens.max())), generator=torch.Generator().manual_seed(1))
    slots = []
    hook = fast.lstms[0].register_forward_pre_hook(lambda m, args: slots.append(args[0].shape[0] * args[0].shape[1]))
    with torch.no_grad():
        one_pass = fast.features(ids, lens, seg_len=10**6, min_seg=10**6)
        for seg_len, min_seg in [(256, 32), (256, 1), (8, 3), (5, 5), (1, 1)]:
            slots.clear()
            torch.testing.assert_close(fast.features(ids, lens, seg_len, min_seg), one_pass, atol=1e-5, rtol=0)
            assert sum(slots) < int(lens.sum()) + len(lens) * min_seg, (seg_len, min_seg)
            if min_seg == 1:
                assert sum(slots) == int(lens.sum())  # exactly the real tokens
    hook.remove()


def test_plan_batches_respects_the_token_budget():
    lens = np.array([5, 300, 17, 17, 1000, 2, 64, 900])
    batches = plan_batches(lens, max_tokens=600, max_bs=3, seg_len=256)
    assert sorted(np.concatenate(batches).tolist()) == list(range(len(lens)))
    # long documents: the budget counts one segment (256 steps); short ones: their own length
    assert [lens[b].tolist() for b in batches] == [[1000, 900], [300, 64], [17, 17, 5], [2]]
    assert all(len(b) * min(256, lens[b].max()) <= 600 for b in batches)


def test_streams_iterables_in_input_order(model_dir):
    texts = _texts(23, seed=2)
    pred = Predictor.load(model_dir)
    full = pred.predict_proba(texts)
    chunks = list(pred.iter_proba((t for t in texts), chunk_size=5))  # a generator, read 5 at a time
    assert [len(c) for c in chunks] == [5, 5, 5, 5, 3]
    np.testing.assert_allclose(np.concatenate(chunks), full, atol=1e-6)
    np.testing.assert_allclose(pred.predict_proba(pd.Series(texts, index=range(100, 123))), full, atol=1e-6)
    assert pred.predict_proba([]).shape == (0, 2)
    with pytest.raises(TypeError, match="first positions: \\[7\\]"):
        pred.predict_proba(iter([*texts[:7], None]))


def test_parallel_tokenization_gives_the_same_ids(model_dir, monkeypatch):
    texts = _texts(40, seed=4)
    serial = Predictor.load(model_dir, num_workers=0)
    monkeypatch.setattr(predict_mod, "MIN_PARALLEL_CHARS", 100)
    parallel = Predictor.load(model_dir, num_workers=2)
    with parallel._pool() as pool:
        got = parallel._encode_chunk(texts, pool)
    assert all(np.array_equal(a, b) for a, b in zip(got, serial.encode(texts)))
    np.testing.assert_allclose(parallel.predict_proba(texts), serial.predict_proba(texts), atol=1e-6)


@pytest.mark.parametrize("precision", ["bf16", "int8"])
def test_reduced_precision_stays_close(model_dir, precision):
    texts = _texts(30, seed=5)
    exact = Predictor.load(model_dir, precision="fp32").predict_proba(texts)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch's deprecation notice for eager int8 quantization
        low = Predictor.load(model_dir, precision=precision).predict_proba(texts)
    assert np.abs(low - exact).max() < 0.05
    assert (low.argmax(1) == exact.argmax(1)).mean() >= 0.9


def test_bad_precision_is_refused(model_dir):
    with pytest.raises(ValueError, match="expected one of auto, fp32, bf16, fp16, int8"):
        Predictor.load(model_dir, precision="fp8")
    with pytest.raises(ValueError, match="fp16.*for GPUs"):
        Predictor.load(model_dir, precision="fp16", device="cpu")


def test_equals_stock_fastai_batched_wherever_fastai_is_batch_independent(model_dir, learner):
    """fastai's batched get_preds on mixed lengths: equal on every document whose fastai result does not depend
    on its batch (`batch_dependent` says which do; the next test checks that it says so correctly)."""
    texts = _texts(40, seed=6)
    pred = Predictor.load(model_dir, precision="fp32")
    ours = pred.predict_proba(texts)
    lens = [len(x) for x in pred.encode(texts)]
    for bs in (8, 64):
        dep = batch_dependent(lens, bs, pred.bptt, pred.meta["max_len"])
        assert 0 < dep.sum() < len(texts)
        np.testing.assert_allclose(ours[~dep], _fastai_preds(learner, texts, bs=bs)[~dep], atol=1e-4)


def test_batch_dependent_names_exactly_the_documents_fastai_changes():
    """Random fastai encoders (features, not saturating probabilities): in a batch, a document's pooled
    features differ from its features alone if and only if `batch_dependent` flags it."""
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    flagged = 0
    for _ in range(6):
        bptt = int(rng.integers(3, 9))
        max_len = bptt * int(rng.integers(2, 5)) + int(rng.integers(0, 3))
        model = build_classifier(50, 2, ModelConfig(emb_sz=8, n_hid=12, n_layers=2, bptt=bptt), 0.5, [8],
                                 max_len).eval()
        for p in model.parameters():
            p.data.normal_(0, 0.6)
        model[1].layers = torch.nn.Identity()  # compare the pooled features themselves
        lens = rng.integers(1, 8 * bptt, 14)
        xs = [torch.as_tensor(np.r_[2, rng.integers(4, 50, n - 1)]) for n in lens]
        bs = int(rng.integers(3, 10))
        order = np.argsort(-lens, kind="stable")
        with torch.no_grad():
            alone = torch.stack([model(x[None])[0][0] for x in xs])
            batched = torch.empty_like(alone)
            for b in range(0, len(order), bs):
                idx = order[b:b + bs]
                x = torch.stack([s[0] for s in pad_batch(bptt)([(xs[i],) for i in idx])])
                batched[torch.as_tensor(idx)] = model(x)[0]
        differs = (batched - alone).abs().max(1)[0].numpy() > 1e-5
        dep = batch_dependent(lens, bs, bptt, max_len)
        np.testing.assert_array_equal(dep, differs)
        flagged += dep.sum()
    assert flagged > 5


def test_api_streams_labels_and_probabilities(model_dir):
    texts = _texts(9, seed=7)
    clf = SentimentClassifier.load(model_dir, precision="fp32")
    streamed = list(clf.predict_iter((t for t in texts), chunk_size=4))
    assert [lab for lab, _ in streamed] == clf.predict(texts)
    np.testing.assert_allclose(np.stack([p for _, p in streamed]), clf.predict_proba(texts), atol=1e-6)
