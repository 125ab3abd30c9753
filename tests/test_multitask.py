"""Multi-task classification: one tiny shared encoder learns two tasks at once (sentiment by its words, topic
by its subject), one softmax per task on one output layer; a column per task through the API, the CLI
(metrics and a confusion matrix per task), save/load and ONNX; weighted losses; clear errors for unknown
tasks and a task with one class; partial labels (a task labelled on some rows only: learned, scored and
lost over those rows). And the progressive sequence length (`classifier.max_len_schedule`)."""

import json
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import CONFIGS
from torch.nn import functional as F

from ulmfit_lab import ConfigError, SentimentClassifier, cli
from ulmfit_lab.config import load_config
from ulmfit_lab.data.sources import DataError, load_data
from ulmfit_lab.serving.export import export_model
from ulmfit_lab.toy import make_multitask
from ulmfit_lab.training.multi import MaxLenSchedule, MultiTaskLoss, TaskAccuracy

TASKS = ["sentiment", "topic"]


pytestmark = pytest.mark.usefixtures("one_thread")  # tiny models: see conftest.one_thread


@pytest.fixture(scope="module")
def fitted(cache_dir):
    train = make_multitask(240, seed=0)
    clf = SentimentClassifier("tiny", [f"run.cache_dir={cache_dir}"])
    return clf.fit(train.text, train[TASKS])  # a label DataFrame names the tasks


def test_learns_both_tasks(fitted):
    test = make_multitask(80, seed=1)
    pred = fitted.predict(test.text)
    assert isinstance(pred, pd.DataFrame) and list(pred.columns) == TASKS and len(pred) == 80
    for task in TASKS:
        assert (pred[task].to_numpy() == test[task].to_numpy()).mean() >= 0.9, task
    assert fitted.tasks_ == TASKS and [list(c) for c in fitted.classes_] == [["neg", "pos"], ["book", "film"]]
    assert fitted.config.data.label_column == TASKS
    assert fitted.score(test.text, test[TASKS]) == pytest.approx(
        (pred.to_numpy() == test[TASKS].to_numpy()).all(axis=1).mean())


def test_predict_shapes(fitted):
    texts = make_multitask(10, seed=3).text.tolist()
    proba = fitted.predict_proba(texts)
    assert [p.shape for p in proba] == [(10, 2), (10, 2)]
    for p in proba:  # a softmax per task
        np.testing.assert_allclose(p.sum(1), 1, atol=1e-5)
    one = fitted.predict(texts[0])
    assert one == fitted.predict(texts).iloc[0].to_dict() and set(one) == set(TASKS)
    assert [p.shape for p in fitted.predict_proba(texts[0])] == [(2,), (2,)]
    assert [lab for lab, _ in fitted.predict_iter(iter(texts))] == fitted.predict(texts).to_dict("records")


def test_save_load_and_onnx_export(fitted, tmp_path):
    texts = make_multitask(20, seed=4).text.tolist()
    saved = fitted.save(tmp_path / "model")
    meta = json.loads((saved / "model.json").read_text())
    assert meta["tasks"] == {"sentiment": ["neg", "pos"], "topic": ["book", "film"]} and meta["format_version"] == 2
    back = SentimentClassifier.load(saved)
    pd.testing.assert_frame_equal(back.predict(texts), fitted.predict(texts))
    assert back.tasks_ == TASKS
    pytest.importorskip("onnxruntime")
    from ulmfit_lab.serving.onnx_export import OnnxPredictor

    onnx = OnnxPredictor(export_model(saved, tmp_path / "onnx", onnx=True))
    np.testing.assert_allclose(onnx.predict_proba(texts), np.hstack(fitted.predict_proba(texts)), atol=1e-4)
    pd.testing.assert_frame_equal(onnx.predict(texts), fitted.predict(texts))


def test_cli_run_reports_each_task_and_predicts_a_column_per_task(tmp_path, cache_dir, capsys):
    make_multitask(200, seed=0).to_csv(tmp_path / "train.csv", index=False)
    make_multitask(50, seed=1).to_csv(tmp_path / "test.csv", index=False)
    run_dir = tmp_path / "run"
    assert cli.main(["run", str(CONFIGS / "tiny.yaml"), f"data.train={tmp_path / 'train.csv'}",
                     f"data.test={tmp_path / 'test.csv'}", "data.label_column=[sentiment, topic]",
                     "classifier.task_weights={topic: 0.5}", "lm_finetune.enabled=false", f"run.dir={run_dir}",
                     f"run.cache_dir={cache_dir}"]) == 0
    assert "mean_accuracy" in capsys.readouterr().out
    metrics = json.loads((run_dir / "evaluate" / "metrics.json").read_text())
    assert set(metrics["tasks"]) == set(TASKS) and metrics["n"] == 50
    for task in TASKS:
        m = metrics["tasks"][task]
        assert m["accuracy"] >= 0.85 and np.array(m["confusion_matrix"]).sum() == 50
        assert (run_dir / "evaluate" / f"confusion_matrix_{task}.png").is_file()
    pred = tmp_path / "pred.csv"
    assert cli.main(["predict", str(run_dir), str(tmp_path / "test.csv"), "--output", str(pred), "--no-progress"]) == 0
    df = pd.read_csv(pred)
    assert {"prediction_sentiment", "prediction_topic", "proba_sentiment:pos", "proba_topic:book"} <= set(df.columns)
    assert (df.prediction_topic == df.topic).mean() >= 0.85


def test_task_weights_weight_each_tasks_cross_entropy():
    logits, target = torch.randn(6, 5), torch.tensor([[0, 2]] * 3 + [[1, 0]] * 3)
    loss = MultiTaskLoss([(0, 2), (2, 5)], [1.0, 0.25])(logits, target)
    want = F.cross_entropy(logits[:, :2], target[:, 0]) + 0.25 * F.cross_entropy(logits[:, 2:], target[:, 1])
    assert loss.item() == pytest.approx(want.item())


def test_errors_name_the_task_and_what_to_do(tmp_path):
    with pytest.raises(ConfigError, match=r"task_weights: unknown task\(s\) \['tpoic'\]; the tasks are"):
        load_config("tiny", ["data.label_column=[sentiment, topic]", "classifier.task_weights={tpoic: 1}"])
    with pytest.raises(ConfigError, match="task_weights: set for a single label column"):
        load_config("tiny", ["classifier.task_weights={topic: 1}"])
    cfg = load_config("tiny", ["data.label_column=[sentiment, topic]"]).data
    with pytest.raises(DataError, match="task 'topic' has one class .'film'. in .* rows; each task needs at least two"):
        load_data(cfg, tmp_path, train=make_multitask(40).assign(topic="film"))
    with pytest.raises(DataError, match=r"column\(s\) \['topic'\] not found"):
        load_data(cfg, tmp_path, train=make_multitask(40).drop(columns="topic"))
    with pytest.raises(DataError, match=r"no column\(s\) \['topic'\] for the task"):
        SentimentClassifier("tiny", ["data.label_column=[sentiment, topic]"]).fit(
            ["a", "b"], pd.DataFrame({"sentiment": ["pos", "neg"], "other": ["x", "y"]}))


def test_max_len_schedule_lengthens_bptt3c_over_the_epochs(tmp_path, cache_dir):
    sched = MaxLenSchedule([100, 300, 700], total_epochs=6, offset=0, final=1400)
    assert [sched.length_at(e) for e in range(6)] == [100, 100, 300, 300, 700, 700]
    train = make_multitask(120, seed=0)
    clf = SentimentClassifier("tiny", [f"run.cache_dir={cache_dir}", "lm_finetune.enabled=false",
                                       "classifier.max_len_schedule=[16, 32]", "classifier.epochs=4"],
                              run_dir=tmp_path / "run")
    clf.fit(train.text, train.sentiment)
    rows = [json.loads(x) for x in (tmp_path / "run" / "classifier" / "metrics.jsonl").read_text().splitlines()]
    assert [r["max_len"] for r in rows] == [16, 16, 32, 32]  # over the unfreezing phases
    assert json.loads((clf.model_dir_ / "model.json").read_text())["max_len"] == 320  # predicts with max_len
    with pytest.raises(ConfigError, match="max_len_schedule: expected one or more lengths > 0"):
        load_config("tiny", ["classifier.max_len_schedule=[10, 0]"])
    short = MaxLenSchedule([140, 280, 700], total_epochs=2, offset=0, final=700)  # fewer epochs than lengths
    assert [short.length_at(e) for e in range(2)] == [280, 700]


def test_max_len_schedule_trains_on_the_pooled_chunks_only():
    """A block shorter than `max_len` feeds the encoder only the chunks BPT3C pools (cut at a chunk boundary);
    the last block and validation read whole texts."""
    from fastai.callback.core import Callback
    from fastai.callback.rnn import RNNCallback
    from fastai.data.core import DataLoaders
    from fastai.data.load import DataLoader
    from fastai.learner import Learner
    from fastai.losses import CrossEntropyLossFlat

    from ulmfit_lab.config import ModelConfig
    from ulmfit_lab.models.awd_lstm import build_classifier

    torch.manual_seed(0)
    ds = list(zip(torch.randint(2, 50, (16, 305)), torch.randint(0, 2, (16,))))
    dls = DataLoaders(DataLoader(ds, bs=8), DataLoader(ds, bs=8))
    model = build_classifier(60, 2, ModelConfig(emb_sz=8, n_hid=8, n_layers=1, bptt=10), 0.1, [4], max_len=200)
    seen = []

    class Widths(Callback):
        order = 10  # after MaxLenSchedule

        def before_batch(self):
            seen.append((self.epoch, self.training, self.xb[0].shape[1]))

    learn = Learner(dls, model, loss_func=CrossEntropyLossFlat(),
                    cbs=[RNNCallback(), MaxLenSchedule([42, 200], total_epochs=2, offset=0, final=200), Widths()])
    learn.fit(2)
    # BPT3C pools the chunks starting at i with 305 - i <= 42: from 270 on, 35 tokens
    assert {w for e, t, w in seen if t and e == 0} == {35}
    assert {w for e, t, w in seen if t and e == 1} == {305}  # the last block: whole texts, as predictions
    assert {w for e, t, w in seen if not t} == {305}  # validation: whole texts


# ---------------------------------------------------------------- partial labels: a task labelled on some rows only


def test_a_task_labelled_on_half_the_rows_is_learned_and_scored_on_those_rows(tmp_path, cache_dir):
    train, test = make_multitask(200, seed=0), make_multitask(50, seed=1)
    train.loc[train.index % 2 == 0, "topic"] = None  # empty cells in the CSV: not labelled for the task
    test.loc[:9, "topic"] = None
    train.to_csv(tmp_path / "train.csv", index=False)
    test.to_csv(tmp_path / "test.csv", index=False)
    run_dir = tmp_path / "run"
    assert cli.main(["run", str(CONFIGS / "tiny.yaml"), f"data.train={tmp_path / 'train.csv'}",
                     f"data.test={tmp_path / 'test.csv'}", "data.label_column=[sentiment, topic]",
                     "lm_finetune.enabled=false", f"run.dir={run_dir}", f"run.cache_dir={cache_dir}"]) == 0
    metrics = json.loads((run_dir / "evaluate" / "metrics.json").read_text())
    assert metrics["n"] == 50 and metrics["tasks"]["sentiment"]["n"] == 50
    topic = metrics["tasks"]["topic"]
    assert topic["n"] == 40 and np.array(topic["confusion_matrix"]).sum() == 40  # the labelled rows only
    assert topic["labels"] == ["book", "film"] and topic["accuracy"] >= 0.85  # no "missing" class; learned
    preds = pd.read_csv(run_dir / "evaluate" / "predictions.csv")
    assert preds.label_topic.isna().sum() == 10 and preds.prediction_topic.notna().all()  # every task predicted
    rows = [json.loads(x) for x in (run_dir / "classifier" / "metrics.jsonl").read_text().splitlines()]
    assert all(np.isfinite(r["train_loss"]) and np.isfinite(r["valid_loss"]) for r in rows)


def test_partial_labels_errors_count_the_labelled_rows(tmp_path):
    cfg = load_config("tiny", ["data.label_column=[sentiment, topic]"]).data
    df = make_multitask(40).assign(topic=lambda d: d.topic.where(d.index % 2 == 0, ""))  # "" is missing too
    df.loc[3, "sentiment"] = np.nan  # and row 3 now has no label at all
    with pytest.raises(DataError, match=r"1 row\(s\) have .* or no label in any task .*first rows: \[3\].*"
                                        r"'sentiment': None, 'topic': None"):
        load_data(cfg, tmp_path, train=df)
    data = load_data(load_config("tiny", ["data.label_column=[sentiment, topic]", "data.drop_invalid=true"]).data,
                     tmp_path, train=df)
    assert len(data.train) + len(data.valid) == 39 and data.spec.tasks[1] == ("topic", ("book", "film"))
    targets = np.array(data.spec.targets(data.train.label))
    assert (targets[:, 1] == -1).any() and (targets[:, 0] >= 0).all()
    one_class = df.drop(index=3).assign(topic=lambda d: d.topic.where(d.topic != "book", ""))
    with pytest.raises(DataError, match=r"task 'topic' has one class .'film'. in \d+ labelled of 3\d rows"):
        load_data(cfg, tmp_path, train=one_class)
    ints = make_multitask(40).assign(topic=[i % 2 if i % 3 else np.nan for i in range(40)])  # read as floats
    assert load_data(cfg, tmp_path, train=ints).spec.tasks[1] == ("topic", (0, 1))


def test_a_batch_without_labels_for_a_task_has_a_finite_loss_and_accuracy():
    logits = torch.randn(6, 5, requires_grad=True)
    target = torch.tensor([[0, -1], [1, -1], [1, -1], [0, 2], [1, -1], [0, 0]])
    loss_fn = MultiTaskLoss([(0, 2), (2, 5)], [1.0, 1.0])
    want = F.cross_entropy(logits[:, :2], target[:, 0]) + F.cross_entropy(logits[3:, 2:][[0, 2]], target[[3, 5], 1])
    assert loss_fn(logits, target).item() == pytest.approx(want.item())  # mean over the labelled rows only
    none = loss_fn(logits[:3], target[:3])  # no row labelled for task 2
    none.backward()
    assert torch.isfinite(none) and none.item() == pytest.approx(F.cross_entropy(logits[:3, :2], target[:3, 0]).item())
    assert torch.isfinite(logits.grad).all() and (logits.grad[:, 2:] == 0).all()
    acc = TaskAccuracy([(0, 2), (2, 5)])
    acc.reset()
    for rows in (slice(0, 3), slice(3, 6)):  # the first batch has no label for task 2
        acc.accumulate(SimpleNamespace(pred=logits[rows].detach(), y=target[rows]))
    right = (logits[:, :2].argmax(1) == target[:, 0]).float().mean()
    right2 = (logits[[3, 5], 2:].argmax(1) == target[[3, 5], 1]).float().mean()
    assert acc.value.item() == pytest.approx(((right + right2) / 2).item())
