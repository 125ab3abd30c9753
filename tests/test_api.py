"""SentimentClassifier: fit, predict in input order, predict_proba, save/load round trip."""

import numpy as np
import pandas as pd
import pytest
from conftest import CONFIGS
from synth import make_reviews

from ulmfit_lab import SentimentClassifier
from ulmfit_lab.data import DataError


@pytest.fixture(scope="module")
def fitted(tmp_path_factory, cache_dir):
    run_dir = tmp_path_factory.mktemp("api") / "run"
    clf = SentimentClassifier.from_config(CONFIGS / "tiny.yaml", [f"run.cache_dir={cache_dir}"])
    train = make_reviews(240, seed=10)
    clf.fit(train.text.tolist(), train.label.tolist(), run_dir=run_dir)
    return clf, train


def test_fit_learns_and_predicts_labels(fitted):
    clf, train = fitted
    assert clf.classes == ["neg", "pos"]
    pred = clf.predict(train.text)
    assert np.mean(np.array(pred) == train.label.values) >= 0.9
    new = make_reviews(40, seed=99)
    assert np.mean(np.array(clf.predict(new.text.tolist())) == new.label.values) >= 0.85


def test_batched_predictions_keep_input_order(fitted):
    clf, _ = fitted
    texts = make_reviews(30, seed=7, n_sent=1).text.tolist()
    texts[5] = texts[5] + " " + " ".join(["The plot was great."] * 12)  # much longer: sorted first in a batch
    one_by_one = np.concatenate([clf.predict_proba([t]) for t in texts])
    batched = clf.predict_proba(texts, bs=8)
    np.testing.assert_allclose(batched, one_by_one, atol=1e-5)
    assert batched.shape == (30, 2)
    np.testing.assert_allclose(batched.sum(1), 1, atol=1e-5)


def test_save_load_identical_predictions(fitted, tmp_path):
    clf, _ = fitted
    texts = make_reviews(20, seed=8).text
    clf.save(tmp_path / "model")
    loaded = SentimentClassifier.load(tmp_path / "model")
    np.testing.assert_array_equal(loaded.predict_proba(texts), clf.predict_proba(texts))
    assert loaded.predict(texts) == clf.predict(texts)
    assert not list((tmp_path / "model").glob("*.pkl"))


def test_dataframe_fit_and_series_predict(tmp_path, cache_dir):
    df = make_reviews(240, seed=11).rename(columns={"text": "review", "label": "sentiment"})
    clf = SentimentClassifier.from_config(CONFIGS / "tiny.yaml", ["data.text_column=review",
                                                                  "data.label_column=sentiment",
                                                                  f"run.cache_dir={cache_dir}"])
    clf.fit(df, run_dir=tmp_path / "run", test=make_reviews(40, seed=12).rename(
        columns={"text": "review", "label": "sentiment"}))
    assert clf.result.evaluate.metrics["accuracy"] >= 0.85
    assert len(clf.predict(pd.Series(["Superb and wonderful.", "Awful, dull."]))) == 2


def test_api_errors():
    clf = SentimentClassifier.from_config(CONFIGS / "tiny.yaml")
    with pytest.raises(RuntimeError, match="not trained"):
        clf.predict(["x"])
    with pytest.raises(DataError, match="3 texts but 2 labels"):
        clf.fit(["a", "b", "c"], ["pos", "neg"])
    with pytest.raises(DataError, match="labels are missing"):
        clf.fit(["a", "b"])


def test_predict_rejects_a_bare_string(fitted):
    clf, _ = fitted
    with pytest.raises(TypeError, match=r"wrap it: predict\(\[text\]\)"):
        clf.predict("great film")
