"""SIGKILL the real CLI in the middle of every stage; rerunning the same command finishes with the artifacts of
a run that was never interrupted.

One run directory, one command (`run` on the tiny config, with LM pretraining from scratch so all five stages
exist), killed five times: during the data stage (tokenizing), the LM pretraining, the LM fine-tuning, the
classifier (after it has moved past its first unfreezing phase) and the evaluation. Each rerun restarts the
killed stage or resumes it from `last.pt`; mid-epoch checkpoints come after nearly every batch
(`run.checkpoint_minutes=0.0001`), so the kills land inside epochs. After every kill nothing that passes as
finished may be half-written. The reference is the same config run once, uninterrupted, in-process.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pandas as pd
import pytest
import safetensors.torch as st
import torch
from conftest import CONFIGS, ROOT
from synth import make_reviews

from ulmfit_lab.config import load_config
from ulmfit_lab.models.artifact import WEIGHTS, read_checkpoint_meta
from ulmfit_lab.pipeline import run_pipeline
from ulmfit_lab.training.rundir import MARKER

STAGES = ("data", "lm", "lm_finetune", "classifier", "evaluate")
MODELS = {"lm": "lm/model", "lm_finetune": "lm_finetune/model", "classifier": "classifier/model"}


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    d = tmp_path_factory.mktemp("killdata")
    make_reviews(240, seed=0).to_csv(d / "train.csv", index=False)
    make_reviews(400, seed=1).to_csv(d / "test.csv", index=False)  # a test split big enough to kill evaluate in
    args = [f"data.train={d / 'train.csv'}", f"data.test={d / 'test.csv'}", "lm_pretrain.source=scratch",
            f"lm_pretrain.corpus=[{d / 'train.csv'}]", "lm_pretrain.epochs=2", "lm_pretrain.lr=0.01",
            "classifier.epochs=5"]
    ref = tmp_path_factory.mktemp("ref") / "run"
    run_pipeline(load_config(CONFIGS / "tiny.yaml", [*args, f"run.dir={ref}", f"run.cache_dir={d / 'ref_cache'}"]))
    return d, args, ref


def _rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def _start(args: list[str], log: Path) -> subprocess.Popen:
    out = open(log, "ab")
    env = dict(os.environ, PYTHONUNBUFFERED="1", OMP_WAIT_POLICY="PASSIVE")
    return subprocess.Popen([sys.executable, "-m", "ulmfit_lab.cli", "run", str(CONFIGS / "tiny.yaml"), *args],
                            stdout=out, stderr=subprocess.STDOUT, cwd=ROOT, env=env)


def _kill_when(proc: subprocess.Popen, ready: Callable[[], bool], what: str, log: Path, timeout: float = 240) -> None:
    """SIGKILL `proc` as soon as `ready()` holds (polled every few ms)."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        if ready():
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            return
        if proc.poll() is not None:
            raise AssertionError(f"the run ended (rc {proc.returncode}) before it was {what}:\n"
                                 + log.read_text(errors="replace")[-3000:])
        time.sleep(0.003)
    proc.kill()
    raise AssertionError(f"timed out waiting until it was {what}")


def _running(run: Path, stage: str) -> Callable[[], bool]:
    return lambda: (run / stage).is_dir() and not (run / stage / MARKER).exists()


def _checkpointed(run: Path, stage: str, min_epochs: int = 0) -> Callable[[], bool]:
    def ready() -> bool:
        metrics = run / stage / "metrics.jsonl"
        epochs = len(metrics.read_text().splitlines()) if min_epochs and metrics.is_file() else 0
        return (run / stage / "last.pt").is_file() and epochs >= min_epochs
    return ready


def _nothing_half_written(run: Path) -> None:
    """Whatever passes as finished is whole: markers parse, and every model folder with a model.json loads."""
    for marker in run.glob(f"*/{MARKER}"):
        info = json.loads(marker.read_text(encoding="utf-8"))
        assert info["key"] and "result" in info
    for meta in run.glob("*/model/model.json"):
        read_checkpoint_meta(meta.parent)
        st.load_file(str(meta.parent / WEIGHTS))


@pytest.mark.slow  # a long end-to-end run; `pytest -m slow` runs it (the default suite stays under 15 min)
def test_sigkill_in_every_stage_then_rerun_gives_the_uninterrupted_artifacts(setup, tmp_path):
    d, args, ref = setup
    run, log = tmp_path / "run", tmp_path / "cli.log"
    cmd = [*args, f"run.dir={run}", f"run.cache_dir={tmp_path / 'cache'}", "run.checkpoint_minutes=0.0001"]
    kill_points = [
        ("data", _running(run, "data"), "tokenizing (data stage started)"),
        ("lm", _checkpointed(run, "lm", min_epochs=1), "pretraining the LM (in its second epoch)"),
        ("lm_finetune", _checkpointed(run, "lm_finetune"), "fine-tuning the LM (a mid-epoch checkpoint written)"),
        ("classifier", _checkpointed(run, "classifier", min_epochs=2), "training the classifier (phase 2+)"),
        ("evaluate", _running(run, "evaluate"), "evaluating"),
    ]
    for stage, ready, what in kill_points:
        proc = _start(cmd, log)
        _kill_when(proc, ready, what, log)
        assert not (run / stage / MARKER).exists(), f"{stage} marked done after a kill"
        done_after = {p.parent.name for p in run.glob(f"*/{MARKER}")}
        assert done_after == set(STAGES[:STAGES.index(stage)]), done_after
        _nothing_half_written(run)

    proc = _start(cmd, log)
    assert proc.wait(timeout=300) == 0, log.read_text(errors="replace")[-3000:]
    text = log.read_text(errors="replace")
    assert text.count("resuming at phase") == 3  # lm, lm_finetune and classifier went on from last.pt

    for stage in STAGES:  # same stage keys: same config and inputs all the way down
        keys = [json.loads((d / stage / MARKER).read_text())["key"] for d in (run, ref)]
        assert keys[0] == keys[1], stage
        assert not (run / stage / "last.pt").exists()
    assert (run / "data" / "vocab.json").read_text() == (ref / "data" / "vocab.json").read_text()
    for name, folder in MODELS.items():
        got, want = (st.load_file(str(d / folder / WEIGHTS)) for d in (run, ref))
        assert got.keys() == want.keys()
        for k in want:
            torch.testing.assert_close(got[k], want[k], rtol=0, atol=0, msg=f"{name}: {k} differs")
    for stage in ("lm", "lm_finetune", "classifier"):  # one row per epoch, the same validation numbers
        got, want = _rows(run / stage / "metrics.jsonl"), _rows(ref / stage / "metrics.jsonl")
        assert [(r["phase"], r["epoch"]) for r in got] == [(r["phase"], r["epoch"]) for r in want]
        for k in ("valid_loss", "accuracy", "trainable_groups", "lr_per_group_start_mid_end"):
            assert [r.get(k) for r in got] == [r.get(k) for r in want], f"{stage}: {k}"
    assert json.loads((run / "evaluate" / "metrics.json").read_text()) == json.loads(
        (ref / "evaluate" / "metrics.json").read_text())
    pd.testing.assert_frame_equal(pd.read_csv(run / "evaluate" / "predictions.csv"),
                                  pd.read_csv(ref / "evaluate" / "predictions.csv"))
