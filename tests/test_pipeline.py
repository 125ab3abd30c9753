"""The tiny config through the real CLI: every stage's artifacts, learning, and skipping on a rerun."""

import json

import pandas as pd
from conftest import run_cli

from ulmfit_lab import Predictor

STAGES = ("data", "lm_finetune", "classifier", "evaluate")


def test_all_stage_artifacts_exist(tiny_run):
    d = tiny_run["dir"]
    for stage in STAGES:
        marker = json.loads((d / stage / "DONE.json").read_text())
        assert marker["key"] and (d / stage / "config.yaml").is_file()
    for stage in ("lm_finetune", "classifier"):
        assert (d / stage / "metrics.jsonl").is_file()
        assert (d / stage / "lr_schedule.png").is_file() and (d / stage / "loss.png").is_file()
        for f in ("model.safetensors", "model.json", "vocab.json"):
            assert (d / stage / "model" / f).is_file()
    assert (d / "classifier" / "unfreezing.png").is_file()  # gradual unfreezing drawn
    assert not (d / "lm_finetune" / "unfreezing.png").exists()  # nothing frozen there
    assert (d / "data" / "vocab.json").is_file()
    for f in ("metrics.json", "predictions.csv", "confusion_matrix.png"):
        assert (d / "evaluate" / f).is_file()
    meta = json.loads((d / "classifier" / "model" / "model.json").read_text())
    assert meta["labels"] == ["neg", "pos"] and meta["model"]["n_layers"] == 2


def test_classifier_learned(tiny_run, tiny_csvs):
    train = pd.read_csv(tiny_csvs["train"])
    pred = Predictor.load(tiny_run["dir"] / "classifier" / "model").predict(train.text)
    train_acc = (pd.Series(pred) == train.label).mean()
    assert train_acc >= 0.9, train_acc
    metrics = json.loads((tiny_run["dir"] / "evaluate" / "metrics.json").read_text())
    assert metrics["accuracy"] >= 0.85 and metrics["n"] == 60
    lm_rows = [json.loads(x) for x in (tiny_run["dir"] / "lm_finetune" / "metrics.jsonl").read_text().splitlines()]
    assert lm_rows[-1]["train_loss"] < lm_rows[0]["train_loss"]


def test_second_run_skips_completed_stages(tiny_run):
    again = run_cli(*tiny_run["args"])
    summary = json.loads(again.stdout[again.stdout.index("{"):])
    assert set(summary["skipped"]) == set(STAGES)
    assert "skipped" in again.stdout


def test_changed_classifier_config_reruns_only_downstream(tiny_run, tmp_path):
    again = run_cli(*tiny_run["args"], "classifier.epochs=1")
    summary = json.loads(again.stdout[again.stdout.index("{"):])
    assert set(summary["skipped"]) == {"data", "lm_finetune"}
    run_cli(*tiny_run["args"])  # put the session's run back to its own config


def test_stage_commands_and_predict_cli(tiny_run, tiny_csvs, tmp_path):
    out = run_cli("lm-finetune", *tiny_run["args"][1:])
    skipped = json.loads(out.stdout[out.stdout.index("{"):])["skipped"]
    assert skipped == ["data", "lm_finetune"]
    pred_file = tmp_path / "preds.csv"
    run_cli("predict", str(tiny_run["dir"]), str(tiny_csvs["test"]), "--output", str(pred_file))
    df = pd.read_csv(pred_file)
    truth = pd.read_csv(tiny_csvs["test"])
    assert list(df.columns[:2]) == ["text", "label"] and "proba_pos" in df and len(df) == len(truth)
    assert (df.text == truth.text).all()  # input order kept
    assert (df.prediction == df.label).mean() >= 0.85


def test_cli_errors_are_one_clear_line(tmp_path):
    bad = run_cli("run", "configs/tiny.yaml", "classifier.epohcs=2", check=False)
    assert bad.returncode == 2 and "did you mean 'epochs'" in bad.stderr and "Traceback" not in bad.stderr
    missing = run_cli("run", "configs/tiny.yaml", f"data.train={tmp_path / 'nope.csv'}", f"run.dir={tmp_path}/r",
                      check=False)
    assert missing.returncode == 2 and "not found" in missing.stderr and "Traceback" not in missing.stderr


def test_help_explains_options():
    out = run_cli("run", "--help")
    assert "overrides" in out.stdout and "classifier.epochs=2" in out.stdout
