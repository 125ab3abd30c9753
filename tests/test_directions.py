"""Backward models and the forward + backward ensemble (the paper's bidirectional ULMFiT)."""

import json

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import CONFIGS
from synth import make_reviews

from ulmfit_lab import SentimentClassifier, load_config
from ulmfit_lab.config import ConfigError
from ulmfit_lab.device import cpu_has_bf16
from ulmfit_lab.models.artifact import WEIGHTS
from ulmfit_lab.serving.ensemble import EnsemblePredictor, load_model
from ulmfit_lab.serving.predict import Predictor
from ulmfit_lab.training.loaders import lm_loaders


def test_backward_lm_loader_reads_the_stream_reversed():
    doc = np.arange(2, 40)
    fwd = lm_loaders([doc], [doc], 1, 8, False, torch.device("cpu"))
    bwd = lm_loaders([doc], [doc], 1, 8, True, torch.device("cpu"))
    (xf, yf), (xb, yb) = fwd.valid.one_batch(), bwd.valid.one_batch()
    assert xf[0].tolist() == list(range(2, 10)) and yf[0].tolist() == list(range(3, 11))
    assert xb[0].tolist() == list(range(39, 31, -1)) and yb[0].tolist() == list(range(38, 30, -1))


def test_directions_config():
    assert load_config(CONFIGS / "tiny.yaml", ["model.backwards=true"]).model.directions == ["bwd"]
    both = load_config(CONFIGS / "tiny.yaml", ["model.directions=[fwd,bwd]"])
    assert both.for_direction("bwd").model.backwards and not both.for_direction("fwd").model.backwards
    with pytest.raises(ConfigError, match="model.directions"):
        load_config(CONFIGS / "tiny.yaml", ["model.directions=[fwd,up]"])


@pytest.fixture(scope="module")
def bidirectional(tmp_path_factory, cache_dir):
    run_dir = tmp_path_factory.mktemp("bidir") / "run"
    clf = SentimentClassifier.from_config(CONFIGS / "tiny.yaml", [f"run.cache_dir={cache_dir}",
                                                                  "model.directions=[fwd,bwd]"])
    clf.fit(make_reviews(240, seed=12), test=make_reviews(60, seed=13), run_dir=run_dir)
    return clf, run_dir


def test_both_directions_train_and_the_ensemble_averages(bidirectional):
    clf, run_dir = bidirectional
    for stage in ("lm_finetune", "classifier", "lm_finetune_bwd", "classifier_bwd", "evaluate"):
        assert (run_dir / stage / "DONE.json").is_file(), stage
    assert json.loads((run_dir / "classifier_bwd" / "model" / "model.json").read_text())["direction"] == "bwd"
    metrics = json.loads((run_dir / "evaluate" / "metrics.json").read_text())
    assert set(metrics["per_direction"]) == {"fwd", "bwd"}
    assert metrics["accuracy"] >= 0.85 and all(m["accuracy"] >= 0.8 for m in metrics["per_direction"].values())
    assert isinstance(clf.predictor, EnsemblePredictor)
    texts = make_reviews(20, seed=14).text.tolist()
    fwd = Predictor.load(run_dir / "classifier" / "model").predict_proba(texts)
    bwd = Predictor.load(run_dir / "classifier_bwd" / "model").predict_proba(texts)
    assert not np.allclose(fwd, bwd)  # two different models
    np.testing.assert_allclose(clf.predict_proba(texts), (fwd + bwd) / 2, atol=1e-6)


def test_ensemble_save_load_is_self_contained(bidirectional, tmp_path):
    clf, _ = bidirectional
    texts = make_reviews(16, seed=15).text.tolist()
    saved = clf.save(tmp_path / "model")
    assert (saved / "fwd" / WEIGHTS).is_file() and (saved / "bwd" / WEIGHTS).is_file()
    moved = saved.rename(tmp_path / "elsewhere")
    np.testing.assert_allclose(load_model(moved).predict_proba(texts), clf.predict_proba(texts), atol=1e-6)
    assert SentimentClassifier.load(moved).predict(texts) == clf.predict(texts)


def test_ensemble_runs_each_member_through_the_fast_path_and_exports(bidirectional, tmp_path):
    from conftest import run_cli

    from ulmfit_lab.models.artifact import CheckpointError
    from ulmfit_lab.serving.export import export_model

    clf, run_dir = bidirectional
    texts = make_reviews(24, seed=16).text.tolist()
    texts[3] = " ".join(["The ending was superb."] * 80)  # longer than max_len: BPT3C in each member
    ens = load_model(run_dir)  # a run dir with both directions stands for RUN/ensemble
    assert isinstance(ens, EnsemblePredictor) and len(ens._groups) == 1  # one tokenization serves both members
    fwd = Predictor.load(run_dir / "classifier" / "model", precision="fp32").predict_proba(texts)
    bwd = Predictor.load(run_dir / "classifier_bwd" / "model", precision="fp32").predict_proba(texts)
    np.testing.assert_allclose(ens.predict_proba(texts), (fwd + bwd) / 2, atol=1e-6)
    streamed = np.concatenate(list(ens.iter_proba(iter(texts), chunk_size=5)))
    np.testing.assert_allclose(streamed, (fwd + bwd) / 2, atol=1e-6)
    with pytest.raises(CheckpointError, match="is an ensemble"):
        Predictor.load(run_dir / "ensemble")

    out = export_model(run_dir, tmp_path / "exported")
    assert json.loads((out / "ensemble.json").read_text())["members"] == {"fwd": "fwd", "bwd": "bwd"}
    for member in ("fwd", "bwd"):
        meta = json.loads((out / member / "model.json").read_text())
        assert meta["weights_sha256"] and meta["tokenizer"]["kind"] == "fastai-spacy"
    moved = out.rename(tmp_path / "moved")
    np.testing.assert_allclose(load_model(moved).predict_proba(texts), (fwd + bwd) / 2, atol=1e-6)
    low = load_model(moved, precision="bf16")
    # bf16 where the CPU has it natively, else fp32 (with a warning)
    assert low.precision == ("bf16" if cpu_has_bf16() else "fp32")
    assert np.abs(low.predict_proba(texts) - (fwd + bwd) / 2).max() < 0.05

    inp = tmp_path / "in.csv"
    make_reviews(10, seed=17).assign(id=range(10)).to_csv(inp, index=False)
    run_cli("predict", str(run_dir), str(inp), "-o", str(tmp_path / "out.csv"), "--no-progress")
    got = pd.read_csv(tmp_path / "out.csv")
    assert got["id"].tolist() == list(range(10))
    np.testing.assert_allclose(got[["proba_neg", "proba_pos"]].to_numpy(),
                               load_model(moved).predict_proba(got.text.tolist()), atol=1e-6)
