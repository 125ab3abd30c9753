"""`ulmfit-lab export MODEL OUT --onnx`: the ONNX graph on onnxruntime gives the torch path's probabilities
to 1e-4, whatever the batch (dynamic axes, texts of mixed lengths padded together), in both directions."""

import numpy as np
import pandas as pd
import pytest
from conftest import make_random_model
from synth import make_reviews

from ulmfit_lab import CheckpointError, cli
from ulmfit_lab.serving.base import BasePredictor
from ulmfit_lab.serving.ensemble import EnsemblePredictor
from ulmfit_lab.serving.export import export_model
from ulmfit_lab.serving.onnx_export import OnnxPredictor
from ulmfit_lab.serving.predict import Predictor

# lengths from 1 token to far past max_len (24) and several bptt (8) windows
TEXTS = make_reviews(20, seed=7, n_sent=3).text.tolist() + [
    "", "ok", "Great.", " ".join(["The plot was dull."] * 12), "superb " * 23, "superb " * 24, "superb " * 40]


@pytest.mark.parametrize("backwards", [False, True])
def test_onnx_equals_the_torch_path(tmp_path, backwards):
    model = make_random_model(tmp_path / "model", seed=3, backwards=backwards)
    out = export_model(model, tmp_path / "onnx", onnx=True)
    exact = Predictor.load(model, precision="fp32", num_workers=0)
    expected = exact.predict_proba(TEXTS)
    onnx = OnnxPredictor(out)
    assert onnx.labels == ["neg", "pos"]
    for max_tokens in (10**6, 64, 1):  # one padded batch of every length; a few per batch; one text per batch
        onnx.max_tokens = max_tokens
        np.testing.assert_allclose(onnx.predict_proba(TEXTS), expected, atol=1e-4)
    assert onnx.predict(TEXTS) == exact.predict(TEXTS)
    assert onnx.predict_proba([]).shape == (0, 2)


def test_every_predictor_shares_one_base(random_model, tmp_path):
    """predict / predict_proba / iter_proba are written once (`serving.base`): each predictor only says how to
    get the probabilities of a chunk of texts, so all three stream, check and answer alike."""
    fwd = Predictor.load(random_model, precision="fp32", num_workers=0)
    other = Predictor.load(make_random_model(tmp_path / "other", seed=1), precision="fp32", num_workers=0)
    ens = EnsemblePredictor({"a": fwd, "b": other})
    onnx = OnnxPredictor(export_model(random_model, tmp_path / "onnx", onnx=True))
    for p in (fwd, ens, onnx):
        assert isinstance(p, BasePredictor) and not {"predict", "predict_proba", "iter_proba"} & set(vars(type(p)))
        whole = p.predict_proba(TEXTS, bs=3)
        chunks = list(p.iter_proba(pd.Series(TEXTS), chunk_size=5))
        assert [len(c) for c in chunks] == [5] * 5 + [2]
        np.testing.assert_allclose(np.concatenate(chunks), whole, atol=1e-5)
        assert p.predict(iter(TEXTS)) == [p.labels[i] for i in whole.argmax(axis=1)]
        assert p.predict_proba([]).shape == (0, 2) and p.labels == ["neg", "pos"]
        with pytest.raises(TypeError, match="wrap it"):
            p.predict("one text")
        with pytest.raises(TypeError, match=r"first positions: \[6\]"):
            p.predict_proba([*TEXTS[:6], None])
    np.testing.assert_allclose(ens.predict_proba(TEXTS), (fwd.predict_proba(TEXTS) + other.predict_proba(TEXTS)) / 2,
                               atol=1e-6)


def test_export_cli_writes_onnx(random_model, tmp_path, capsys):
    assert cli.main(["export", str(random_model), str(tmp_path / "out"), "--onnx"]) == 0
    assert (tmp_path / "out" / "model.onnx").is_file() and "exported to" in capsys.readouterr().err
    assert cli.main(["export", str(random_model), str(tmp_path / "plain")]) == 0
    with pytest.raises(CheckpointError, match="export it with `ulmfit-lab export MODEL OUT --onnx`"):
        OnnxPredictor(tmp_path / "plain")
