"""The tiny config through the real CLI: every stage's artifacts, learning, and skipping on a rerun.

The run itself and one rerun go through a real `python -m ulmfit_lab.cli` process (`run_cli`); the other commands
call the same `main` in this process (`call_cli`), which spares the ~10 s a fresh interpreter spends importing
torch and fastai. Real processes for errors, `predict` and locks: test_reliability, test_predict_cli, test_wheel.
"""

import json

import pandas as pd
from conftest import CONFIGS, call_cli, copy_run, run_cli

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


def test_changed_classifier_config_reruns_only_downstream(tiny_run, tmp_path, capsys):
    # on a copy of the session's run: the shared run keeps its own config (no second classifier training to put
    # it back)
    copy = copy_run(tiny_run["dir"], tmp_path / "tiny")
    code, out, _ = call_cli(capsys, *tiny_run["args"], f"run.dir={copy}", "classifier.epochs=1")
    summary = json.loads(out[out.index("{"):])
    assert code == 0 and set(summary["skipped"]) == {"data", "lm_finetune"}
    assert len((copy / "classifier" / "metrics.jsonl").read_text().splitlines()) == 1  # retrained: one epoch


def test_stage_commands_and_predict_cli(tiny_run, tiny_csvs, tmp_path, capsys):
    code, out, _ = call_cli(capsys, "lm-finetune", *tiny_run["args"][1:])
    skipped = json.loads(out[out.index("{"):])["skipped"]
    assert code == 0 and skipped == ["data", "lm_finetune"]
    pred_file = tmp_path / "preds.csv"
    assert call_cli(capsys, "predict", str(tiny_run["dir"]), str(tiny_csvs["test"]), "--output", str(pred_file))[0] == 0
    df = pd.read_csv(pred_file)
    truth = pd.read_csv(tiny_csvs["test"])
    assert list(df.columns[:2]) == ["text", "label"] and "proba_pos" in df and len(df) == len(truth)
    assert (df.text == truth.text).all()  # input order kept
    assert (df.prediction == df.label).mean() >= 0.85


def test_cli_errors_are_one_clear_line(tmp_path, capsys):
    # (an exception escaping `main` fails this test; a real process's stderr: test_reliability, test_wheel)
    code, _, err = call_cli(capsys, "run", str(CONFIGS / "tiny.yaml"), "classifier.epohcs=2")
    assert code == 2 and "did you mean 'epochs'" in err and "Traceback" not in err
    code, _, err = call_cli(capsys, "run", str(CONFIGS / "tiny.yaml"), f"data.train={tmp_path / 'nope.csv'}",
                            f"run.dir={tmp_path}/r")
    assert code == 2 and "not found" in err and "Traceback" not in err


def test_help_explains_options(capsys):
    code, out, _ = call_cli(capsys, "run", "--help")
    assert code == 0 and "overrides" in out and "classifier.epochs=2" in out
