"""SentimentClassifier through its public API: fit, predict on every input kind in input order, each classifier
owning its model, save/load restoring the model's own config, and scikit-learn's conventions and tools."""

import numpy as np
import pandas as pd
import pytest
from conftest import CONFIGS, copy_run
from sklearn.base import clone
from sklearn.exceptions import NotFittedError
from sklearn.model_selection import GridSearchCV, cross_val_score, cross_validate
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import FunctionTransformer
from sklearn.utils.validation import check_is_fitted
from synth import make_reviews

from ulmfit_lab import ConfigError, SentimentClassifier
from ulmfit_lab.data.sources import DataError

FLIP = {"pos": "neg", "neg": "pos"}


pytestmark = pytest.mark.usefixtures("one_thread")  # tiny models: see conftest.one_thread


@pytest.fixture(scope="module")
def fitted(cache_dir):
    clf = SentimentClassifier("tiny", [f"run.cache_dir={cache_dir}"])
    train = make_reviews(240, seed=10)
    assert clf.fit(train.text.tolist(), train.label.tolist()) is clf
    return clf, train


def fast(cache_dir, **params) -> SentimentClassifier:
    """The tiny model with no LM fine-tuning and one classifier phase: seconds per fit, for the sklearn tools."""
    return SentimentClassifier("tiny", [f"run.cache_dir={cache_dir}", "lm_finetune.enabled=false",
                                        "classifier.gradual_unfreezing=false"], epochs=2, **params)


def test_fit_learns_and_predicts_labels(fitted, cache_dir):
    clf, train = fitted
    assert list(clf.classes_) == ["neg", "pos"] and clf.classes == ["neg", "pos"]
    pred = clf.predict(train.text)
    assert len(pred) == len(train) and np.mean(np.array(pred) == train.label.values) >= 0.9
    new = make_reviews(40, seed=99)
    assert np.mean(np.array(clf.predict(new.text.tolist())) == new.label.values) >= 0.85
    assert clf.score(new.text, new.label) == np.mean(np.array(clf.predict(new.text)) == new.label.values)
    # its own run directory, under the cache by default (never the current folder)
    assert clf.run_dir_.parent == cache_dir / "runs" and clf.config.run.dir == str(clf.run_dir_)


def test_batched_predictions_keep_input_order(fitted):
    clf, _ = fitted
    texts = make_reviews(30, seed=7, n_sent=1).text.tolist()
    texts[5] = texts[5] + " " + " ".join(["The plot was great."] * 12)  # much longer: sorted first in a batch
    one_by_one = np.stack([clf.predict_proba(t) for t in texts])
    batched = clf.predict_proba(texts, bs=8)
    np.testing.assert_allclose(batched, one_by_one, atol=1e-5)
    assert batched.shape == (30, 2)
    np.testing.assert_allclose(batched.sum(1), 1, atol=1e-5)


def test_every_input_kind_gives_the_same_answers_in_input_order(fitted):
    clf, _ = fitted
    df = make_reviews(24, seed=21)
    texts = df.text.tolist()
    want, proba = clf.predict(texts), clf.predict_proba(texts)
    assert len(set(want)) == 2  # both labels occur: a reordering would show
    shuffled_index = pd.Series(texts, index=np.random.default_rng(0).permutation(len(texts)))
    same = {"tuple": tuple(texts), "Series": df.text, "Series, shuffled index": shuffled_index,
            "array": np.array(texts), "object array": np.array(texts, dtype=object),
            "column array": np.array(texts)[:, None], "DataFrame": df,
            "DataFrame, text_column": df.rename(columns={"text": "review"})}
    for kind, x in same.items():
        kw = {"text_column": "review"} if kind.endswith("text_column") else {}
        assert clf.predict(x, **kw) == want, kind
        np.testing.assert_allclose(clf.predict_proba(x, **kw), proba, atol=1e-6, err_msg=kind)
    assert clf.predict(texts[::-1]) == want[::-1]
    one = clf.predict(texts[3])  # one string: one label, one row
    assert one == want[3] and isinstance(one, str)
    np.testing.assert_allclose(clf.predict_proba(texts[3]), proba[3], atol=1e-6)
    assert clf.predict([]) == [] and clf.predict_proba([]).shape == (0, 2)


@pytest.mark.parametrize("bad, named", [((t for t in ["a"]), "generator"), ({"a", "b"}, "set"), ({"a": 1}, "dict"),
                                         (7, "int"), (None, "NoneType"), (b"great", "bytes"),
                                         (np.array([1.0, 2.0]), "float64"), (pd.Index(["a"]), "Index")])
def test_other_inputs_are_a_type_error_naming_them(fitted, bad, named):
    clf, _ = fitted
    for method in (clf.predict, clf.predict_proba):
        with pytest.raises(TypeError, match=named):
            method(bad)


def test_input_errors_say_what_to_do(fitted):
    clf, _ = fitted
    with pytest.raises(TypeError, match=r"strings; 1 item\(s\) are not \(first positions: \[1\]\)"):
        clf.predict(["fine", 3, "ok"])
    with pytest.raises(ValueError, match=r"no text column 'text'.*\['review'\].*text_column="):
        clf.predict(pd.DataFrame({"review": ["a"]}))


def test_save_load_identical_predictions_and_the_models_own_config(fitted, tmp_path):
    clf, _ = fitted
    texts = make_reviews(20, seed=8).text
    clf.save(tmp_path / "model")
    loaded = SentimentClassifier.load(tmp_path / "model")
    np.testing.assert_array_equal(loaded.predict_proba(texts), clf.predict_proba(texts))
    assert loaded.predict(texts) == clf.predict(texts)
    assert not list((tmp_path / "model").glob("*.pkl"))
    assert loaded.config == clf.config and loaded.config.model.emb_sz == 16  # tiny's, not the default quickstart's
    assert list(loaded.classes_) == ["neg", "pos"]


def test_load_restores_labels_and_tokenizer_settings(tmp_path, cache_dir):
    # integer labels and French tokenization: a loaded classifier must report and use both
    train = make_reviews(240, seed=31)
    clf = SentimentClassifier("tiny", [f"run.cache_dir={cache_dir}", "data.lang=fr"])
    clf.fit(train.text, np.where(train.label == "pos", 1, 0))
    assert list(clf.classes_) == [0, 1]
    loaded = SentimentClassifier.load(clf.save(tmp_path / "m"))
    assert loaded.config.data.lang == "fr" and loaded.config == clf.config
    assert list(loaded.classes_) == [0, 1] and type(loaded.predict("Superb film.")) is int
    texts = make_reviews(20, seed=32).text
    assert loaded.predict(texts) == clf.predict(texts)
    assert clf.score(texts, (make_reviews(20, seed=32).label == "pos").astype(int)) >= 0.8


def test_each_classifier_owns_its_model(fitted, cache_dir, tmp_path):
    # the scenario of issue 19, at its worst: two classifiers, one config, other labels, the very same run
    # directory; before, `a.save` wrote b's weights. The folder starts as a copy of `fitted`'s run (the same
    # config and data as `a`), so `a` finds its stages done and only `b` trains.
    train, shared = make_reviews(240, seed=10), copy_run(fitted[0].run_dir_, tmp_path / "shared")
    a = SentimentClassifier("tiny", [f"run.cache_dir={cache_dir}"], run_dir=shared).fit(train.text, train.label)
    b = SentimentClassifier("tiny", [f"run.cache_dir={cache_dir}"], run_dir=shared).fit(train.text,
                                                                                          train.label.map(FLIP))
    assert b.run_dir_ == a.run_dir_ == shared and b.model_dir_ != a.model_dir_
    probe = make_reviews(30, seed=41)
    pa, pb = a.predict(probe.text), b.predict(probe.text)
    assert np.mean(np.array(pa) == probe.label.values) >= 0.85
    assert np.mean(np.array(pb) == probe.label.map(FLIP).values) >= 0.85  # b learnt the opposite
    saved = SentimentClassifier.load(a.save(tmp_path / "a"))
    np.testing.assert_array_equal(saved.predict_proba(probe.text), a.predict_proba(probe.text))
    assert SentimentClassifier.load(b.save(tmp_path / "b")).predict(probe.text) == pb


def test_identical_config_and_data_reuse_finished_stages(fitted, capsys):
    a, train = fitted
    capsys.readouterr()
    again = clone(a).fit(train.text.tolist(), train.label.tolist())
    assert again.run_dir_ == a.run_dir_
    assert set(again.result.skipped()) >= {"data", "lm_finetune", "classifier"}
    assert again.predict(train.text[:10]) == a.predict(train.text[:10])
    # verbose (the default) prints the progress lines; verbose=False none
    assert "[ulmfit-lab] classifier: up to date" in capsys.readouterr().out
    quiet = clone(a).set_params(verbose=False).fit(train.text.tolist(), train.label.tolist())
    assert quiet.run_dir_ == a.run_dir_ and "[ulmfit-lab]" not in capsys.readouterr().out


def test_not_fitted_and_fit_errors(cache_dir):
    clf = SentimentClassifier("tiny", [f"run.cache_dir={cache_dir}"])
    for call in (lambda: clf.predict(["x"]), lambda: clf.predict_proba("x"), lambda: clf.score(["x"], ["pos"]),
                 lambda: clf.save("anywhere")):
        with pytest.raises(NotFittedError, match="not fitted yet: call fit"):
            call()
    assert not hasattr(clf, "classes_")
    with pytest.raises(NotFittedError):
        check_is_fitted(clf)
    with pytest.raises(DataError, match="3 texts but 2 labels"):
        clf.fit(["a", "b", "c"], ["pos", "neg"])
    with pytest.raises(DataError, match="labels are missing"):
        clf.fit(["a", "b"])
    with pytest.raises(TypeError, match="found one string"):
        clf.fit("a", ["pos"])
    with pytest.raises(ConfigError, match=r"classifier.epochs: must be > 0"):
        SentimentClassifier("tiny", epochs=0).fit(["a", "b"], ["pos", "neg"])
    with pytest.raises(ConfigError, match=r"no shipped config named 'quickstrat': did you mean 'quickstart'"):
        SentimentClassifier.from_config("quickstrat")


def test_dataframe_fit_and_series_predict(tmp_path, cache_dir):
    df = make_reviews(240, seed=11).rename(columns={"text": "review", "label": "sentiment"})
    clf = SentimentClassifier.from_config(CONFIGS / "tiny.yaml", ["data.text_column=review",
                                                                  "data.label_column=sentiment",
                                                                  f"run.cache_dir={cache_dir}"])
    clf.fit(df, run_dir=tmp_path / "run", test=make_reviews(40, seed=12).rename(
        columns={"text": "review", "label": "sentiment"}))
    assert clf.run_dir_ == tmp_path / "run"
    assert clf.result.evaluate.metrics["accuracy"] >= 0.85
    assert len(clf.predict(pd.Series(["Superb and wonderful.", "Awful, dull."]))) == 2
    assert clf.predict(df.head(3)) == clf.predict(df.review.head(3).tolist())  # its text column, three labels


def test_keyword_hyper_parameters_and_config_resolution(tmp_path):
    clf = SentimentClassifier(epochs=3, lr=0.02, bs=8, max_len=100, seed=5, pretrained=False)
    cfg = clf.config  # the shipped quickstart, found through the package, with the keywords on top
    assert (cfg.model.emb_sz, cfg.classifier.epochs, cfg.classifier.lr, cfg.classifier.bs) == (256, 3, 0.02, 8)
    assert (cfg.classifier.max_len, cfg.run.seed, cfg.data.seed, cfg.lm_pretrain.source) == (100, 5, 5, "none")
    lm = tmp_path / "lm"
    assert SentimentClassifier(pretrained=lm).config.lm_pretrain.weights == str(lm)
    assert SentimentClassifier("tiny", epochs=np.int64(4)).config.classifier.epochs == 4  # from a numpy param grid
    assert SentimentClassifier.from_config(CONFIGS / "tiny.yaml").config == SentimentClassifier("tiny").config
    params = clf.get_params()
    assert params["epochs"] == 3 and params["config"] is None
    clf.set_params(epochs=5, config="tiny")
    assert clf.config.classifier.epochs == 5 and clf.config.model.emb_sz == 16
    twin = clone(clf)
    assert twin.get_params() == clf.get_params() and twin.config == clf.config


def test_cross_validation_trains_one_model_per_fold(cache_dir):
    df = make_reviews(80, seed=51)
    out = cross_validate(fast(cache_dir), df.text, df.label, cv=2, return_estimator=True)
    a, b = out["estimator"]
    assert a.run_dir_ != b.run_dir_ and a.run_dir_.parent == b.run_dir_.parent == cache_dir / "runs"
    assert all(0 <= s <= 1 for s in out["test_score"])
    scores = cross_val_score(fast(cache_dir), df.text.tolist(), df.label.tolist(), cv=2)
    np.testing.assert_allclose(scores, out["test_score"])  # the same folds, the same (reused) models


def test_pipeline_and_grid_search(cache_dir):
    df = make_reviews(60, seed=52)
    pipe = Pipeline([("lower", FunctionTransformer(lambda xs: [x.lower() for x in xs])), ("clf", fast(cache_dir))])
    pipe.fit(df.text, df.label)
    pred = pipe.predict(["SUPERB FILM.", "awful plot."])
    assert len(pred) == 2 and set(pred) <= {"pos", "neg"}
    assert pipe.score(df.text, df.label) == pipe[-1].score(df.text.str.lower(), df.label)
    search = GridSearchCV(fast(cache_dir), {"epochs": [1, 2]}, cv=2).fit(df.text, df.label)
    assert search.cv_results_["params"] == [{"epochs": 1}, {"epochs": 2}]
    best = search.best_estimator_
    assert best.config.classifier.epochs == best.epochs == search.best_params_["epochs"]
    assert len(best.predict(df.text)) == len(df)
