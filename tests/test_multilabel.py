"""Multi-label classification: a tiny model learns tags planted as words (F1 far above the best constant
guess), with thresholds tuned on validation data; lists and separators in, lists of labels out, through the
API, the CLI, save/load and ONNX export; clear errors for empty label lists and odd configs."""

import json

import numpy as np
import pandas as pd
import pytest
from conftest import CONFIGS
from sklearn.metrics import f1_score
from sklearn.preprocessing import MultiLabelBinarizer

from ulmfit_lab import ConfigError, SentimentClassifier, cli
from ulmfit_lab.config import load_config
from ulmfit_lab.data.labels import LabelSpec
from ulmfit_lab.data.sources import DataError, load_data
from ulmfit_lab.serving.export import export_model
from ulmfit_lab.serving.predict import Predictor, decode
from ulmfit_lab.toy import TAGS, make_tagged
from ulmfit_lab.training.multi import tune_thresholds

TAG_NAMES = sorted(TAGS)


pytestmark = pytest.mark.usefixtures("one_thread")  # tiny models: see conftest.one_thread


@pytest.fixture(scope="module")
def fitted(cache_dir):
    clf = SentimentClassifier("tiny", [f"run.cache_dir={cache_dir}", "data.label_column=tags"])
    return clf.fit(make_tagged(240, seed=0))


def f1(truth, pred) -> float:
    mlb = MultiLabelBinarizer(classes=TAG_NAMES)
    return f1_score(mlb.fit_transform(truth), mlb.transform(pred), average="micro")


def test_learns_planted_tags_far_above_chance(fitted):
    test = make_tagged(80, seed=1)
    pred = fitted.predict(test.text)
    assert list(fitted.classes_) == TAG_NAMES and all(isinstance(p, list) for p in pred)
    best_constant = f1(test.tags, [TAG_NAMES] * len(test))  # every tag on every text: the best constant micro-F1
    score = f1(test.tags, pred)
    assert score >= 0.75 and score >= best_constant + 0.15, (score, best_constant)  # (0.83-0.85 vs 0.58)
    meta = json.loads((fitted.model_dir_ / "model.json").read_text())
    assert meta["label_mode"] == "multi_label" and meta["format_version"] == 2
    assert len(meta["thresholds"]) == 4 and all(0 < t < 1 for t in meta["thresholds"])
    assert fitted.result.classifier.metrics["thresholds"] == meta["thresholds"]


def test_predict_shapes_and_score(fitted):
    texts = make_tagged(12, seed=5).text.tolist()
    proba = fitted.predict_proba(texts)
    assert proba.shape == (12, 4) and ((proba >= 0) & (proba <= 1)).all()
    assert not np.allclose(proba.sum(1), 1)  # a sigmoid per label, not a softmax
    one = fitted.predict(texts[0])
    assert isinstance(one, list) and one == fitted.predict(texts)[0]
    th = np.array(json.loads((fitted.model_dir_ / "model.json").read_text())["thresholds"])
    assert fitted.predict(texts) == [[t for t, p, h in zip(TAG_NAMES, row, th) if p >= h] for row in proba]
    test = make_tagged(40, seed=6)
    subset = np.mean([set(p) == set(t) for p, t in zip(fitted.predict(test.text), test.tags)])
    assert fitted.score(test.text, test.tags) == pytest.approx(subset)
    streamed = list(fitted.predict_iter(iter(texts)))
    assert [lab for lab, _ in streamed] == fitted.predict(texts)


def test_save_load_and_onnx_export(fitted, tmp_path):
    texts = make_tagged(20, seed=7).text.tolist()
    saved = fitted.save(tmp_path / "model")
    back = SentimentClassifier.load(saved)
    assert back.predict(texts) == fitted.predict(texts) and back.config.data.label_column == "tags"
    np.testing.assert_allclose(back.predict_proba(texts), fitted.predict_proba(texts), atol=1e-6)
    pytest.importorskip("onnxruntime")
    from ulmfit_lab.serving.onnx_export import OnnxPredictor

    onnx = OnnxPredictor(export_model(saved, tmp_path / "onnx", onnx=True))
    np.testing.assert_allclose(onnx.predict_proba(texts), fitted.predict_proba(texts), atol=1e-4)
    assert onnx.predict(texts) == fitted.predict(texts)


def test_cli_run_with_a_separator_evaluates_and_predicts(tmp_path, cache_dir):
    train, test = make_tagged(240, seed=0), make_tagged(60, seed=1)
    for df, name in ((train, "train"), (test, "test")):
        df.assign(tags=df.tags.map("|".join)).to_csv(tmp_path / f"{name}.csv", index=False)
    run_dir = tmp_path / "run"
    assert cli.main(["run", str(CONFIGS / "tiny.yaml"), f"data.train={tmp_path / 'train.csv'}",
                     f"data.test={tmp_path / 'test.csv'}", "data.label_column=tags", "data.label_sep=|",
                     "lm_finetune.enabled=false", f"run.dir={run_dir}", f"run.cache_dir={cache_dir}"]) == 0
    metrics = json.loads((run_dir / "evaluate" / "metrics.json").read_text())
    assert metrics["n"] == 60 and metrics["labels"] == TAG_NAMES and metrics["micro_f1"] >= 0.7
    assert {"subset_accuracy", "macro_f1", "thresholds"} <= set(metrics)
    assert set(metrics["per_label"]["food"]) == {"precision", "recall", "f1", "support"}
    out = tmp_path / "pred.csv"
    assert cli.main(["predict", str(run_dir), str(tmp_path / "test.csv"), "--output", str(out), "--no-progress"]) == 0
    df = pd.read_csv(out, keep_default_na=False)
    assert list(df.columns) == ["text", "tags", "prediction"] + [f"proba_{t}" for t in TAG_NAMES]
    assert f1(test.tags, [p.split("|") if p else [] for p in df.prediction]) >= 0.7


def test_empty_label_list_is_a_clear_error_or_dropped(tmp_path):
    cfg = load_config("tiny", ["data.label_column=tags"]).data
    df = make_tagged(40, seed=2)
    df.at[3, "tags"] = []
    with pytest.raises(DataError, match=r"1 row\(s\) have an empty label list \(first rows: \[3\].*data.drop_invalid"):
        load_data(cfg, tmp_path, train=df)
    kept = load_data(load_config("tiny", ["data.label_column=tags", "data.drop_invalid=true"]).data, tmp_path, train=df)
    assert len(kept.train) + len(kept.valid) == 39 and kept.mode == "multi_label"
    one = make_tagged(40, seed=2).assign(tags=[["food"]] * 40)
    with pytest.raises(DataError, match="only one label .'food'. occurs.*needs at least two"):
        load_data(cfg, tmp_path, train=one)
    sep = make_tagged(40, seed=2).assign(tags=lambda d: d.tags.map(" | ".join))
    parsed = load_data(load_config("tiny", ["data.label_column=tags", "data.label_sep='|'"]).data, tmp_path, train=sep)
    assert parsed.classes == TAG_NAMES and all(isinstance(t, tuple) for t in parsed.train.label)


def test_config_errors_say_what_to_do():
    with pytest.raises(ConfigError, match="label_sep: multi-label reads one label column"):
        load_config("tiny", ["data.label_column=[a, b]", "data.label_sep=|"])
    with pytest.raises(ConfigError, match="label_sep: must not be empty"):
        load_config("tiny", ["data.label_sep=''"])


def test_tune_thresholds_and_decode():
    proba = np.array([[0.9, 0.3], [0.7, 0.2], [0.2, 0.35], [0.1, 0.1]])
    y = np.array([[1, 0], [1, 0], [0, 1], [0, 0]])
    th = tune_thresholds(proba, y)
    assert 0.2 < th[0] <= 0.7 and 0.3 < th[1] <= 0.35  # each label's F1 is 1 there
    assert tune_thresholds(proba, np.zeros_like(y)) == [0.5, 0.5]  # no positives: nothing to tune on
    spec = LabelSpec("multi_label", ("a", "b"))
    assert decode(spec, proba, np.array(th)) == [["a"], ["a"], ["b"], []]


def test_single_label_folders_stay_format_1(random_model):
    meta = json.loads((random_model / "model.json").read_text())
    assert meta["format_version"] == 1 and "label_mode" not in meta
    assert Predictor.load(random_model, num_workers=0).spec.mode == "single"
