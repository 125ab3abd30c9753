"""Bad input fails fast and clearly; corrupt files, full disks and a second run on the same folder too.

Every user error is checked twice: from the API (a typed exception) and from the CLI's `main` (exit code
2, one line on stderr, no traceback), and each time the run directory is checked to hold nothing that
looks finished and no sign that training started (no `last.pt`, no `metrics.jsonl`, with mid-epoch
checkpoints after every batch).
"""

from __future__ import annotations

import dataclasses
import errno
import json
import logging
import os
import pickle
import re
import subprocess
import sys
import warnings
from pathlib import Path

import pandas as pd
import pytest
import safetensors.torch as st
import torch
from conftest import CONFIGS, ROOT, copy_run
from synth import make_reviews

from ulmfit_lab import cli
from ulmfit_lab.config import ConfigError, DataConfig, ModelConfig, load_config
from ulmfit_lab.data.sources import DataError, DataWarning, load_data
from ulmfit_lab.fileio import StorageError
from ulmfit_lab.models.artifact import WEIGHTS, CheckpointError
from ulmfit_lab.models.awd_lstm import build_lm
from ulmfit_lab.pipeline import run_pipeline
from ulmfit_lab.serving.predict import Predictor
from ulmfit_lab.training.rundir import MARKER, RunLockedError, StageDir, run_lock

TINY = str(CONFIGS / "tiny.yaml")
STAGES = ("data", "lm", "lm_finetune", "classifier", "evaluate")
M = ModelConfig(emb_sz=16, n_hid=24, n_layers=2, bptt=16)  # tiny.yaml's sizes


def _csv(path: Path, df: pd.DataFrame) -> str:
    df.to_csv(path, index=False)
    return str(path)


def _jsonl(path: Path, rows: list[dict]) -> str:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return str(path)


def _wt103(d: Path, vocab: list[str], m: ModelConfig = M, n_rows: int | None = None) -> list[str]:
    """fastai-format pretrained LM files (.pth + itos .pkl); `n_rows` makes the vocab file disagree."""
    lm = build_lm(len(vocab), m)
    torch.save({"model": lm.state_dict()}, d / "lm.pth")
    with open(d / "itos.pkl", "wb") as f:
        pickle.dump(vocab[:n_rows] if n_rows else vocab, f)
    return ["lm_pretrain.source=pretrained", f"lm_pretrain.weights={d / 'lm.pth'}",
            f"lm_pretrain.vocab={d / 'itos.pkl'}"]


VOCAB = ["xxunk", "xxpad", "xxbos", "xxeos", "xxfld", "xxrep", "xxwrep", "xxup", "xxmaj", "the", "film", "was"]


# Each case: (make(tmp) -> overrides, exception type, message regex, stages allowed to be finished)
def _missing_file(d):
    return [f"data.train={d / 'nope.csv'}"]


def _unknown_text_column(d):
    return [f"data.train={_csv(d / 't.csv', make_reviews(40))}", "data.text_column=review"]


def _unknown_label_column(d):
    return [f"data.train={_csv(d / 't.csv', make_reviews(40))}", "data.label_column=sentiment"]


def _empty_table(d):
    return [f"data.train={_csv(d / 't.csv', make_reviews(40).head(0))}"]


def _empty_file(d):
    (d / "t.csv").write_bytes(b"")
    return [f"data.train={d / 't.csv'}"]


def _non_string_texts(d):
    rows = make_reviews(40).to_dict("records")
    rows[3]["text"], rows[7]["text"], rows[8]["text"] = None, 12, float("nan")
    return [f"data.train={_jsonl(d / 't.jsonl', rows)}"]


def _blank_texts(d):
    df = make_reviews(40)
    df.loc[[2, 5], "text"] = ["   ", "\t\n"]
    return [f"data.train={_jsonl(d / 't.jsonl', df.to_dict('records'))}"]


def _single_class(d):
    return [f"data.train={_csv(d / 't.csv', make_reviews(40).assign(label='pos'))}"]


def _unseen_test_label(d):
    test = make_reviews(10, seed=3)
    test.loc[[1, 4], "label"] = "meh"
    return [f"data.train={_csv(d / 't.csv', make_reviews(40))}", f"data.test={_csv(d / 'test.csv', test)}"]


def _non_utf8(d):
    (d / "t.csv").write_bytes(b"text,label\ngood one,pos\nfine one,neg\nbad \xe9 one,neg\n")
    return [f"data.train={d / 't.csv'}"]


def _mixed_label_types(d):
    rows = make_reviews(40).to_dict("records")
    rows[6]["label"] = 1
    return [f"data.train={_jsonl(d / 't.jsonl', rows)}"]


def _malformed_csv(d):
    (d / "t.csv").write_text("text,label\ngood one,pos\na, b, c,neg\n", encoding="utf-8")
    return [f"data.train={d / 't.csv'}"]


def _train(d):
    return [f"data.train={_csv(d / 't.csv', make_reviews(80, seed=2))}"]


def _truncated_pretrained(d):
    args = _wt103(d, VOCAB)
    data = (d / "lm.pth").read_bytes()
    (d / "lm.pth").write_bytes(data[: len(data) // 2])
    return _train(d) + args


def _pretrained_vocab_mismatch(d):
    return _train(d) + _wt103(d, VOCAB, n_rows=9)


def _pretrained_shape_mismatch(d):
    return _train(d) + _wt103(d, VOCAB, ModelConfig(emb_sz=32, n_hid=24, n_layers=2))


def _truncated_lm_folder(d):
    folder = d / "lm"
    from ulmfit_lab.models.checkpoint import save_checkpoint

    save_checkpoint(build_lm(len(VOCAB), M), folder, VOCAB, {"kind": "lm", "model": dataclasses.asdict(M)})
    data = (folder / WEIGHTS).read_bytes()
    (folder / WEIGHTS).write_bytes(data[: len(data) // 3])
    return _train(d) + ["lm_pretrain.source=pretrained", f"lm_pretrain.weights={folder}"]


def _config_unknown_key(d):
    return ["classifier.epohcs=2"]


def _config_wrong_types(d):
    return ["classifier.lr=fast", "model.n_layers=1.5", "data.valid_pct=[1]"]


def _config_not_positive(d):
    return ["classifier.epochs=0", "lm_finetune.lr=-1", "classifier.bs=0", "lm_finetune.bs=-8"]


def _config_not_finite(d):
    return ["classifier.lr=.nan", "lm_finetune.lr=.inf"]


def _config_bad_yaml(d):
    return ["classifier.head=[8,"]


def _cuda_without_gpu(d):
    if torch.cuda.is_available():
        pytest.skip("a GPU is visible: run.device=cuda is valid here")
    return ["run.device=cuda"]


def _fp16_on_cpu(d):
    return ["run.device=cpu", "run.precision=fp16"]


CASES = {
    "missing_file": (_missing_file, DataError, r"not found: .*nope\.csv", ()),
    "unknown_text_column": (_unknown_text_column, DataError,
                            r"t\.csv\): column\(s\) \['review'\] not found; columns found: \['text', 'label'\]", ()),
    "unknown_label_column": (_unknown_label_column, DataError,
                             r"\['sentiment'\] not found; columns found: \['text', 'label'\]", ()),
    "empty_table": (_empty_table, DataError, r"t\.csv\): the dataset is empty \(0 rows\)", ()),
    "empty_file": (_empty_file, DataError, r"t\.csv: the file is empty", ()),
    "non_string_texts": (_non_string_texts, DataError,
                         r"3 row\(s\) have a missing or non-string text.*first rows: \[3, 7, 8\].*drop_invalid=true",
                         ()),
    "blank_texts": (_blank_texts, DataError, r"2 text\(s\) are empty or whitespace only \(first rows: \[2, 5\]\)", ()),
    "single_class": (_single_class, DataError, r"only one class \('pos'\) in \d+ rows", ()),
    "unseen_test_label": (_unseen_test_label, DataError,
                          r"test \(.*test\.csv\): label\(s\) \['meh'\] do not occur in train \(2 row\(s\)", ()),
    "non_utf8": (_non_utf8, DataError, r"t\.csv, line 4: not valid UTF-8 \(byte 0xe9", ()),
    "mixed_label_types": (_mixed_label_types, DataError, r"labels mix types: int \(e\.g\. row 6: 1\), str", ()),
    "malformed_csv": (_malformed_csv, DataError, r"t\.csv: cannot be read as csv \(.*line 3", ()),
    "truncated_pretrained": (_truncated_pretrained, CheckpointError, r"lm\.pth: cannot read weights.*truncated",
                             ("data",)),
    "pretrained_vocab_mismatch": (_pretrained_vocab_mismatch, CheckpointError,
                                  r"embedding has 12 rows but its vocab has 9 tokens", ("data",)),
    "pretrained_shape_mismatch": (_pretrained_shape_mismatch, CheckpointError,
                                  r"does not match model.*pretrained \(\d+, 32\) vs model \(\d+, 16\)", ("data",)),
    "truncated_lm_folder": (_truncated_lm_folder, CheckpointError,
                            r"model\.safetensors: cannot read weights.*corrupt or truncated", ("data",)),
    "config_unknown_key": (_config_unknown_key, ConfigError, r"classifier\.epohcs: unknown key \(did you mean", ()),
    "config_wrong_types": (_config_wrong_types, ConfigError,
                           r"3 problem\(s\).*classifier\.lr: expected float, found 'fast'", ()),
    "config_not_positive": (_config_not_positive, ConfigError,
                            r"4 problem\(s\).*lm_finetune\.lr: must be > 0, found -1.*classifier\.epochs: must be > 0, "
                            r"found 0", ()),
    "config_not_finite": (_config_not_finite, ConfigError, r"classifier\.lr: must be a finite number, found nan", ()),
    "config_bad_yaml": (_config_bad_yaml, ConfigError, r"classifier\.head=\[8,.*not valid YAML", ()),
    "cuda_without_gpu": (_cuda_without_gpu, ConfigError, r"run\.device=cuda, but no CUDA GPU is visible", ()),
    "fp16_on_cpu": (_fp16_on_cpu, ConfigError, r"run\.precision=fp16 needs a GPU.*bf16", ()),
}


def _assert_nothing_finished(run_dir: Path, allowed: tuple[str, ...]) -> None:
    """No stage but `allowed` has a marker, and no training step ever ran (no checkpoint, no epoch log)."""
    if not run_dir.exists():
        return
    done = sorted(p.parent.name for p in run_dir.glob(f"*/{MARKER}"))
    assert set(done) <= set(allowed), f"stages marked done: {done}"
    trained = [str(p.relative_to(run_dir)) for p in run_dir.rglob("*") if p.name in ("last.pt", "metrics.jsonl")]
    assert not trained, f"training started: {trained}"
    for stage in set(STAGES) - set(allowed):
        assert not (run_dir / stage / "model").exists(), f"{stage}/model written"


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input_is_a_clear_error_before_training(case, tmp_path, cache_dir, capsys):
    make, exc, pattern, allowed = CASES[case]
    (tmp_path / "in").mkdir()
    overrides = make(tmp_path / "in")
    common = [f"run.cache_dir={cache_dir}", "run.checkpoint_minutes=0.0001"]  # a checkpoint after every batch

    api_dir = tmp_path / "api"
    with pytest.raises(exc, match=f"(?s){pattern}"):
        run_pipeline(load_config(TINY, [*overrides, f"run.dir={api_dir}", *common]))
    _assert_nothing_finished(api_dir, allowed)

    cli_dir = tmp_path / "cli"
    capsys.readouterr()
    rc = cli.main(["run", TINY, *overrides, f"run.dir={cli_dir}", *common])
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("ulmfit-lab: error:")]
    assert rc == 2 and len(lines) == 1 and "Traceback" not in err, err
    assert re.search(pattern, err, re.S), err
    _assert_nothing_finished(cli_dir, allowed)


def test_invalid_rows_can_be_dropped(tmp_path):
    rows = make_reviews(40).to_dict("records")
    rows[3]["text"], rows[7]["text"], rows[9]["text"] = None, 12, "   "
    path = _jsonl(tmp_path / "t.jsonl", rows)
    data = load_data(DataConfig(train=path, drop_invalid=True, valid_pct=0.25), tmp_path)
    assert len(data.train) + len(data.valid) == 37
    assert all(isinstance(t, str) and t.strip() for t in pd.concat([data.train, data.valid]).text)


def test_bad_unlabelled_texts_from_the_api(tmp_path):
    train = make_reviews(40)
    with pytest.raises(DataError, match=r"unlabelled: 2 text\(s\) are missing.*first positions: \[1, 3\]"):
        load_data(DataConfig(), tmp_path, train=train, unlabelled=["fine", None, "ok", "  "])
    data = load_data(DataConfig(drop_invalid=True), tmp_path, train=train, unlabelled=["fine", None, "ok", "  "])
    assert data.unlabelled == ["fine", "ok"]


def test_cli_error_from_a_real_process_is_one_line(tmp_path):
    rows = make_reviews(40).to_dict("records")
    rows[5]["text"] = None
    path = _jsonl(tmp_path / "t.jsonl", rows)
    proc = subprocess.run([sys.executable, "-m", "ulmfit_lab.cli", "run", TINY, f"data.train={path}",
                           f"run.dir={tmp_path / 'run'}"], capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.count("\n") == 1 and proc.stderr.startswith("ulmfit-lab: error: train ("), proc.stderr
    assert "first rows: [5]" in proc.stderr and "Traceback" not in proc.stderr


# ---------------------------------------------------------------- warnings


def test_conflicting_duplicate_labels_warn_with_counts(tmp_path):
    df = make_reviews(40, seed=1)
    dup = pd.DataFrame({"text": [df.text[0], df.text[0], df.text[1]],
                        "label": ["pos" if df.label[0] == "neg" else "neg", df.label[0],
                                  "pos" if df.label[1] == "neg" else "neg"]})
    test = pd.DataFrame({"text": [df.text[2]], "label": ["pos" if df.label[2] == "neg" else "neg"]})
    with pytest.warns(DataWarning, match=r"3 distinct text\(s\) occur with different labels \(7 rows: train "):
        data = load_data(DataConfig(valid_pct=0.2), tmp_path, train=pd.concat([df, dup]), test=test)
    assert len(data.train) + len(data.valid) == 43  # a warning, not a filter
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        load_data(DataConfig(valid_pct=0.2), tmp_path, train=df)  # clean data: no warning


def test_cli_shows_data_warnings_as_one_line(capsys):
    with warnings.catch_warnings():
        warnings.simplefilter("always")
        warnings.showwarning = cli._one_line_warning
        warnings.warn_explicit("2 distinct text(s) occur with different labels", DataWarning, "x.py", 1)
    assert capsys.readouterr().err == "ulmfit-lab: warning: 2 distinct text(s) occur with different labels\n"


# ---------------------------------------------------------------- long documents


LONG_DOC_SCRIPT = r"""
import json, resource, sys
from pathlib import Path
sys.path.insert(0, "tests")
from synth import make_reviews
from ulmfit_lab.config import load_config
from ulmfit_lab.data import load_data
from ulmfit_lab.pipeline import run_pipeline
from ulmfit_lab.text import FastaiTokenizer

out = Path(sys.argv[1])
n_chars = int(sys.argv[2])
FastaiTokenizer()(["warm up spaCy"])
train = make_reviews(240, seed=0)
sentence = "The plot was GREAT and the acting felt dull, in my opinion. "
train.loc[0, "text"] = sentence * (n_chars // len(sentence))
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
cfg = load_config("configs/tiny.yaml", [f"run.dir={out / 'run'}", f"run.cache_dir={out / 'cache'}"])
res = run_pipeline(cfg, until="data", data=load_data(cfg.data, out, train=train))
after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"chars": len(train.text[0]), "tokens": res.data.metrics["tokens"],
                  "peak_rss_growth_mb": (after - before) / 1024}))
"""


def test_huge_document_tokenizes_in_bounded_memory(tmp_path):
    # 2.4M characters: over spaCy's 1M-character limit, which used to fail the data stage outright
    proc = subprocess.run([sys.executable, "-c", LONG_DOC_SCRIPT, str(tmp_path), "2400000"], capture_output=True,
                          text=True, cwd=ROOT, env=dict(os.environ, PYTHONPATH=str(ROOT)))
    assert proc.returncode == 0, proc.stderr[-3000:]
    res = json.loads(proc.stdout.strip().splitlines()[-1])
    assert res["chars"] > 2_000_000 and res["tokens"]["train"] + res["tokens"]["valid"] > 500_000
    # ~640k tokens as strings, Arrow and ids: measured ~90 MB; spaCy on the whole text would not even run
    assert res["peak_rss_growth_mb"] < 300, res


def test_classifier_backpropagates_through_max_len_tokens_only():
    """BPT3C: a document of any length keeps activations for its last `max_len` tokens only."""
    from ulmfit_lab.models.awd_lstm import build_classifier

    torch.manual_seed(0)
    model = build_classifier(20, 2, M, drop_mult=0.1, head=[8], max_len=64)
    early, late = 5, 6  # the first 4,000 tokens use only word 5, the last 64 only word 6
    x = torch.cat([torch.full((2, 4000), early), torch.full((2, 64), late)], dim=1)  # 2 rows: BatchNorm in the head
    logits = model(x)[0]
    logits.sum().backward()
    emb_grad = model[0].module.encoder.weight.grad
    assert emb_grad[late].abs().sum() > 0
    assert emb_grad[early].abs().sum() == 0  # read for the hidden state, never backpropagated through


def test_long_text_pieces_tokenize_like_one_piece(monkeypatch):
    from ulmfit_lab.text import fasttok
    from ulmfit_lab.text import vocab as text

    tok = text.FastaiTokenizer()
    doc = " ".join(make_reviews(60, seed=3, n_sent=3).text) + " WOW  so   GOOD!!!!!! \n\n the end"
    whole = tok([doc, "short"])
    monkeypatch.setattr(fasttok, "MAX_PIECE_CHARS", 500)
    assert len(text.split_long(doc)) > 10
    assert tok([doc, "short"]) == whole
    assert fasttok.FastTokenizer().tokens(["a start", doc, "short"]) == [tok(["a start"])[0], *whole]


# ---------------------------------------------------------------- corrupt files


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory, cache_dir):
    """A tiny run finished up to the classifier, in-process; tests copy it before breaking it."""
    d = tmp_path_factory.mktemp("finished") / "run"
    train = tmp_path_factory.mktemp("findata") / "train.csv"
    make_reviews(160, seed=8).to_csv(train, index=False)
    args = [f"data.train={train}", f"run.cache_dir={cache_dir}", "classifier.epochs=2", "lm_finetune.epochs=1"]
    run_pipeline(load_config(TINY, [*args, f"run.dir={d}"]), until="classifier")
    return d, args


def _copy(finished_run, tmp_path) -> tuple[Path, list[str]]:
    """A copy of the finished run; its markers' absolute artifact paths are moved to the copy."""
    src, args = finished_run
    dst = copy_run(src, tmp_path / "run")
    return dst, [*args, f"run.dir={dst}"]


def test_corrupt_upstream_model_is_a_checkpoint_error(finished_run, tmp_path):
    d, args = _copy(finished_run, tmp_path)
    weights = d / "lm_finetune" / "model" / WEIGHTS
    weights.write_bytes(weights.read_bytes()[:100])
    with pytest.raises(CheckpointError, match=r"lm_finetune/model/model\.safetensors: cannot load weights.*"
                                              r"delete that stage's folder"):
        run_pipeline(load_config(TINY, [*args, "classifier.epochs=1"]), until="classifier")
    assert not (d / "classifier" / MARKER).exists()


def test_corrupt_predictor_folder_is_a_checkpoint_error(finished_run, tmp_path):
    d, _ = _copy(finished_run, tmp_path)
    folder = d / "classifier" / "model"
    assert Predictor.load(folder).predict(["a great film"])
    (folder / WEIGHTS).write_bytes(b"\x00" * 64)
    with pytest.raises(CheckpointError, match="cannot load weights"):
        Predictor.load(folder)
    (folder / "model.json").write_text("{ not json", encoding="utf-8")
    with pytest.raises(CheckpointError, match="model.json or vocab.json is corrupt"):
        Predictor.load(folder)


def test_truncated_last_checkpoint_restarts_the_stage_cleanly(finished_run, tmp_path, caplog):
    d, args = _copy(finished_run, tmp_path)
    want = st.load_file(str(d / "classifier" / "model" / WEIGHTS))
    marker = json.loads((d / "classifier" / MARKER).read_text())
    (d / "classifier" / MARKER).unlink()  # as if killed while writing last.pt, after some epochs
    torch.save({"key": marker["key"], "next": [1, 0], "model": {"w": torch.zeros(4096)}}, d / "classifier" / "last.pt")
    data = (d / "classifier" / "last.pt").read_bytes()
    (d / "classifier" / "last.pt").write_bytes(data[: len(data) // 2])
    with caplog.at_level(logging.INFO, logger="ulmfit_lab"):
        res = run_pipeline(load_config(TINY, args), until="classifier")
    assert "ignoring unreadable checkpoint" in caplog.text
    assert not res.classifier.skipped and (d / "classifier" / MARKER).is_file()
    got = st.load_file(str(d / "classifier" / "model" / WEIGHTS))
    for k in want:  # restarted from scratch: the same weights as the first, uninterrupted run
        torch.testing.assert_close(got[k], want[k], rtol=0, atol=0)


@pytest.mark.parametrize("kind", ["lm", "classifier"])
def test_killed_at_an_epoch_boundary_resumes_exactly(tmp_path, kind):
    """Killed after an epoch's end-of-epoch checkpoint, before any mid-epoch one: the next epoch's data order,
    RNGs and weights go on as if never stopped (the LM loader's in-place document order included)."""
    from fastai.metrics import accuracy
    from fastai.torch_core import set_seed
    from synth import KillAt

    from ulmfit_lab.config import ClassifierConfig, RunConfig, TrainConfig
    from ulmfit_lab.models.awd_lstm import build_classifier, classifier_layer_groups, lm_layer_groups
    from ulmfit_lab.text.vocab import build_vocab, numericalize, tokenize
    from ulmfit_lab.training.learner import fit_phases, make_learner
    from ulmfit_lab.training.loaders import classifier_loaders, lm_loaders
    from ulmfit_lab.training.schedules import Phase, unfreeze_phases

    m, run, cpu = ModelConfig(emb_sz=8, n_hid=12, n_layers=2, bptt=8), RunConfig(device="cpu", progress=False), "cpu"
    cpu = torch.device(cpu)
    df = make_reviews(96, seed=5)
    tok = tokenize(df.text.tolist())
    vocab = build_vocab([tok], min_freq=1)
    x, y = numericalize(tok, vocab), [int(v == "pos") for v in df.label]

    def learner(path):
        if kind == "lm":
            tc = TrainConfig(epochs=3, lr=3e-3)
            learn = make_learner(lm_loaders(x, x[:12], 4, m.bptt, False, cpu, seed=0), build_lm(len(vocab), m, 0.5),
                                 lm_layer_groups, tc, run, cpu, [], path)
            return learn, tc, [Phase(len(learn.opt.param_lists), tc.epochs)]
        tc = ClassifierConfig(epochs=4, lr=1e-2, bs=8, drop_mult=0.5)
        learn = make_learner(classifier_loaders(x, y, x[:16], y[:16], 8, m.bptt, False, cpu, seed=0),
                             build_classifier(len(vocab), 2, m, 0.5, [8]), classifier_layer_groups, tc, run, cpu,
                             [accuracy], path)
        return learn, tc, unfreeze_phases(len(learn.opt.param_lists), tc.epochs)

    for name in ("a", "b"):
        (tmp_path / name).mkdir()
    set_seed(0)
    learn, tc, phases = learner(tmp_path / "a")
    fit_phases(learn, phases, tc, StageDir(tmp_path / "a", "k"))
    want = {k: v.clone() for k, v in learn.model.state_dict().items()}
    n_batches = len(learn.dls.train)

    set_seed(0)
    learn, tc, phases = learner(tmp_path / "b")
    with pytest.raises(Exception, match="killed"):  # one batch into the 2nd epoch; only epoch-end checkpoints
        fit_phases(learn, phases, tc, StageDir(tmp_path / "b", "k"), extra_cbs=[KillAt(n_batches + 1)])
    set_seed(1234)
    learn, tc, phases = learner(tmp_path / "b")
    fit_phases(learn, phases, tc, StageDir(tmp_path / "b", "k"))
    for k, v in learn.model.state_dict().items():
        torch.testing.assert_close(v, want[k], rtol=0, atol=0, msg=f"{kind}: {k} differs after resume")


def test_predict_cli_rejects_rows_without_text(finished_run, tmp_path, capsys):
    d, _ = finished_run
    path = tmp_path / "new.csv"
    pd.DataFrame({"text": ["a great film", None, "dull"]}).to_csv(path, index=False)
    assert cli.main(["predict", str(d), str(path), "--output", str(tmp_path / "out.csv")]) == 2
    assert "1 row(s) of column 'text' hold no text (empty or not a string; first rows: [1]" in capsys.readouterr().err
    assert not (tmp_path / "out.csv").exists()


def test_garbled_marker_means_not_done(tmp_path):
    stage = StageDir(tmp_path, "k")
    stage.finish({"a": 1})
    assert stage.done() == {"a": 1}
    for garbage in (b'{"key": "k", "res', b"\xff\xfe\x00", b"[1, 2]"):
        (tmp_path / MARKER).write_bytes(garbage)
        assert stage.done() is None


# ---------------------------------------------------------------- full disk, unwritable folder


def _digest(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_disk_full_is_a_clear_error_and_keeps_earlier_artifacts(finished_run, tmp_path, monkeypatch):
    d, args = _copy(finished_run, tmp_path)
    before = _digest(d / "lm_finetune") | {f"clf/{k}": v for k, v in _digest(d / "classifier" / "model").items()}

    def no_space(*_a, **_k):
        raise OSError(errno.ENOSPC, "No space left on device")

    import ulmfit_lab.models

    monkeypatch.setattr(ulmfit_lab.models.checkpoint.st, "save_model", no_space)  # the classifier's weights at the end
    with pytest.raises(StorageError, match=r"cannot write .*/classifier/model: No space left on device\. "
                                           r"Free disk space"):
        run_pipeline(load_config(TINY, [*args, "classifier.epochs=1"]), until="classifier")
    after = _digest(d / "lm_finetune") | {f"clf/{k}": v for k, v in _digest(d / "classifier" / "model").items()}
    assert after == before  # the upstream stage and the previous classifier weights are untouched
    assert not (d / "classifier" / MARKER).exists()
    assert not [p for p in d.rglob("*") if ".tmp" in p.name]  # no temporary left behind


FSIZE_SCRIPT = r"""
import resource, sys
from ulmfit_lab import cli
resource.setrlimit(resource.RLIMIT_FSIZE, (int(sys.argv[1]), resource.RLIM_INFINITY))
sys.exit(cli.main(sys.argv[2:]))
"""


def test_file_size_limit_in_a_real_process(finished_run, tmp_path):
    """A real write failure (EFBIG under RLIMIT_FSIZE; root ignores chmod): torch.save's own error included."""
    d, args = _copy(finished_run, tmp_path)
    before = (_digest(d / "lm_finetune"), _digest(d / "classifier" / "model"))
    limit = 60_000  # the classifier's last.pt (weights + Adam state) is larger; logs and configs are smaller
    assert (d / "classifier" / "model" / WEIGHTS).stat().st_size < limit
    proc = subprocess.run([sys.executable, "-c", FSIZE_SCRIPT, str(limit), "train-classifier", TINY, *args,
                           "classifier.epochs=1"], capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr
    err = [line for line in proc.stderr.splitlines() if line.startswith("ulmfit-lab: error:")]
    assert len(err) == 1, proc.stderr[-2000:]
    assert "classifier/last.pt: file size limit reached (ulimit -f: 60000 bytes)" in err[0], err[0]
    assert (_digest(d / "lm_finetune"), _digest(d / "classifier" / "model")) == before
    assert not (d / "classifier" / MARKER).exists()
    assert not [p for p in d.rglob("*") if ".tmp" in p.name]


def test_unwritable_run_dir_is_a_clear_error(tmp_path, capsys):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    cfg = load_config(TINY, [f"run.dir={blocker / 'run'}"])
    with pytest.raises(StorageError, match=r"run directory .*a_file/run cannot be created or written"):
        run_pipeline(cfg)
    assert cli.main(["run", TINY, f"run.dir={blocker / 'run'}"]) == 2
    assert "point run.dir at a writable folder" in capsys.readouterr().err


# ---------------------------------------------------------------- two runs, one folder


def test_second_run_on_a_locked_run_dir_is_refused(finished_run, tmp_path):
    d, args = _copy(finished_run, tmp_path)
    before = _digest(d)
    with run_lock(d):  # this process holds the run (as a training run would)
        with pytest.raises(RunLockedError, match=rf"in use by another ulmfit-lab process \(pid {os.getpid()}\)"):
            run_pipeline(load_config(TINY, args), until="classifier")
        proc = subprocess.run([sys.executable, "-m", "ulmfit_lab.cli", "train-classifier", TINY, *args],
                              capture_output=True, text=True, cwd=ROOT)
        assert proc.returncode == 2 and proc.stderr.count("\n") == 1, proc.stderr
        assert f"(pid {os.getpid()}); wait for it to finish, or point this run elsewhere" in proc.stderr
        assert _digest(d) == {**before, ".lock": str(os.getpid()).encode()}  # nothing else touched
    res = run_pipeline(load_config(TINY, args), until="classifier")  # released: runs (everything up to date)
    assert set(res.skipped()) == {"data", "lm_finetune", "classifier"}
