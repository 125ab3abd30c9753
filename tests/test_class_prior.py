"""The single-label classifier's loss options: `classifier.class_prior` (trained for the class shares of the data,
not of its labelled texts) and `classifier.label_smoothing`."""

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import call_cli, copy_run

from ulmfit_lab import load_config
from ulmfit_lab.config import ConfigError
from ulmfit_lab.data.labels import LabelSpec
from ulmfit_lab.data.tables import DataError
from ulmfit_lab.serving.predict import Predictor
from ulmfit_lab.training.multi import class_weights_for, loss_and_metrics


def test_class_weights_give_each_class_its_prior_share_of_the_loss():
    y = np.array([0] * 30 + [1] * 10)
    for prior in ({"neg": 0.5, "pos": 0.5}, {"neg": 0.2, "pos": 0.8}, {"pos": 3, "neg": 1}):  # shares: any scale
        w = class_weights_for(prior, ["neg", "pos"], y)
        mass = w * np.bincount(y)
        total = sum(prior.values())
        assert mass / mass.sum() == pytest.approx([prior["neg"] / total, prior["pos"] / total])
        assert w[y].mean() == pytest.approx(1.0)  # the loss keeps its size over the training texts
    assert class_weights_for({0: 0.75, 1: 0.25}, [0, 1], y) == pytest.approx([1, 1])  # YAML int keys; already so
    with pytest.raises(DataError, match=r"expected a share for each class \['neg', 'pos'\]; found \['neg', 'pso'\]"):
        class_weights_for({"neg": 0.5, "pso": 0.5}, ["neg", "pos"], y)
    with pytest.raises(DataError, match=r"\['pos'\] have no training text"):
        class_weights_for({"neg": 0.5, "pos": 0.5}, ["neg", "pos"], np.zeros(5, dtype=np.int64))


@pytest.mark.parametrize("option, good, parsed, bad, error", [
    ("class_prior", "{pos: 0.6, neg: 0.4}", {"pos": 0.6, "neg": 0.4}, "{pos: 0.6, neg: 0}",
     "expected a share > 0 for each class"),
    ("label_smoothing", "0.1", 0.1, "1", r"expected a share in \[0, 1\)")])
def test_loss_option_config_errors_say_what_to_do(option, good, parsed, bad, error):
    assert getattr(load_config("tiny", [f"classifier.{option}={good}"]).classifier, option) == parsed
    with pytest.raises(ConfigError, match=f"{option}: {error}"):
        load_config("tiny", [f"classifier.{option}={bad}"])
    with pytest.raises(ConfigError, match=f"{option}: set for a multi-task or multi-label config"):
        load_config("tiny", ["data.label_column=[sentiment, topic]", f"classifier.{option}={good}"])


def _retrained(tiny_run, tmp_path, capsys, variants: dict[str, list[str]]) -> dict[str, Predictor]:
    """The tiny run's classifier trained again (same data, encoder and seed) with each variant's overrides."""
    out = {}
    for name, extra in variants.items():
        run = copy_run(tiny_run["dir"], tmp_path / name)
        code, _, err = call_cli(capsys, *tiny_run["args"], f"run.dir={run}", *extra)
        assert code == 0, err
        out[name] = Predictor.load(run / "classifier" / "model")
    return out


def test_class_prior_moves_the_classifier_toward_that_prior(tiny_run, tiny_csvs, tmp_path, capsys):
    # the same data, encoder and seed, one epoch each (the head alone: not yet sure of every text), once plain and
    # once for a prior of 90% "pos" (the texts are 50/50): the second must lean to "pos" on the test texts
    test = pd.read_csv(tiny_csvs["test"])
    one = "classifier.epochs=1"
    models = _retrained(tiny_run, tmp_path, capsys,
                        {"plain": [one], "prior": [one, "classifier.class_prior={pos: 0.9, neg: 0.1}"]})
    pos = {name: p.predict_proba(test.text)[:, 1].mean() for name, p in models.items()}
    assert pos["prior"] > pos["plain"] + 0.05, pos


def test_label_smoothing_loss_is_the_smoothed_cross_entropy():
    spec = LabelSpec(classes=("neg", "pos", "mid"))
    logits, y = torch.tensor([[4.0, -2.0, 0.5], [0.1, 0.2, 3.0]]), torch.tensor([0, 2])
    loss, _ = loss_and_metrics(spec, label_smoothing=0.3)
    logp = torch.log_softmax(logits, -1)
    target = torch.full_like(logp, 0.3 / 3)
    target[torch.arange(2), y] += 0.7
    assert float(loss(logits, y)) == pytest.approx(float(-(target * logp).sum(-1).mean()), rel=1e-5)
    assert loss_and_metrics(spec)[0] is None  # 0: the learner's plain cross-entropy


def test_label_smoothing_keeps_the_classifier_from_certainty(tiny_run, tiny_csvs, tmp_path, capsys):
    # the same data, encoder and seed, trained plain and with 40% of the target spread over the 2 classes (the
    # smoothed target of a text's label is 0.8): the plain classifier grows surer of the training texts than 0.8
    train = pd.read_csv(tiny_csvs["train"])
    models = _retrained(tiny_run, tmp_path, capsys, {"plain": [], "smoothed": ["classifier.label_smoothing=0.4"]})
    conf = {name: p.predict_proba(train.text).max(1).mean() for name, p in models.items()}
    assert conf["smoothed"] < 0.85 < conf["plain"], conf
