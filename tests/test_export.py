"""The exported model folder: loads in a fresh process with identical predictions, no pickles, clear errors
for corrupt or mismatched files, and a TorchScript classifier that matches the PyTorch one."""

import json
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch
from conftest import ROOT, run_cli
from synth import make_reviews

from ulmfit_lab import CheckpointError
from ulmfit_lab.models.artifact import WEIGHTS
from ulmfit_lab.serving.export import export_model, load_torchscript
from ulmfit_lab.serving.inference import collate
from ulmfit_lab.serving.predict import Predictor

TEXTS = make_reviews(12, seed=21, n_sent=3).text.tolist() + [" ".join(["The plot was dull."] * 90), "ok"]

_FRESH = """
import json, sys
import numpy as np, torch
from ulmfit_lab.predict import Predictor
from ulmfit_lab.export import load_torchscript
from ulmfit_lab.inference import collate
folder, texts = sys.argv[1], json.loads(sys.argv[2])
pred = Predictor.load(folder, precision="fp32")
out = {"proba": pred.predict_proba(texts).tolist(), "labels": pred.predict(texts)}
if len(sys.argv) > 3:
    ts, meta, vocab = load_torchscript(folder)
    ids = pred.encode(texts)
    x, lens = collate(ids, np.arange(len(ids)))
    with torch.inference_mode():
        out["ts_logits"] = ts(x, lens).tolist()
print(json.dumps(out))
"""


def _fresh(folder, *extra) -> dict:
    proc = subprocess.run([sys.executable, "-c", _FRESH, str(folder), json.dumps(TEXTS), *extra],
                          capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def exported(tiny_run, tmp_path_factory):
    dest = tmp_path_factory.mktemp("export") / "model"
    export_model(tiny_run["dir"], dest, torchscript=True)  # a run directory resolves to its classifier
    return dest


def test_export_is_self_contained(exported):
    names = sorted(p.name for p in exported.iterdir())
    assert names == ["model.json", "model.safetensors", "model.torchscript.pt", "vocab.json"]
    meta = json.loads((exported / "model.json").read_text())
    assert meta["labels"] == ["neg", "pos"] and meta["n_classes"] == 2
    assert meta["vocab_size"] == len(json.loads((exported / "vocab.json").read_text()))
    assert meta["tokenizer"]["kind"] == "fastai-spacy" and "replace_rep" in meta["tokenizer"]["rules"]
    assert {"emb_sz", "n_hid", "n_layers", "bptt"} <= set(meta["model"]) and meta["max_len"] == 320
    assert len(meta["weights_sha256"]) == 64 and meta["versions"]["ulmfit_lab"]


def test_fresh_process_gives_identical_predictions(exported):
    here = Predictor.load(exported, precision="fp32")
    there = _fresh(exported, "torchscript")
    np.testing.assert_array_equal(np.array(there["proba"], dtype=np.float32), here.predict_proba(TEXTS))
    assert there["labels"] == here.predict(TEXTS)
    # the TorchScript classifier (no fastai needed to run it) matches the PyTorch model to 1e-4
    ids = here.encode(TEXTS)
    x, lens = collate(ids, np.arange(len(ids)))
    with torch.inference_mode():
        ref = here.fast(x, lens)
    np.testing.assert_allclose(np.array(there["ts_logits"]), ref.numpy(), atol=1e-4)
    np.testing.assert_allclose(torch.softmax(torch.tensor(there["ts_logits"]), -1).numpy(), here.predict_proba(TEXTS),
                               atol=1e-4)


def test_torchscript_loads_here_too(exported):
    ts, meta, vocab = load_torchscript(exported)
    assert meta["labels"] == ["neg", "pos"] and len(vocab) == meta["vocab_size"]


def _copy(src, tmp_path):
    dest = tmp_path / "m"
    shutil.copytree(src, dest)
    return dest


def test_corrupt_weights_are_reported(exported, tmp_path):
    m = _copy(exported, tmp_path)
    data = bytearray((m / WEIGHTS).read_bytes())
    data[-10] ^= 0xFF  # one flipped byte inside a tensor: the file still parses
    (m / WEIGHTS).write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="SHA-256 differs"):
        Predictor.load(m)
    (m / WEIGHTS).write_bytes(bytes(data[:100]))  # truncated
    meta = json.loads((m / "model.json").read_text())
    del meta["weights_sha256"]
    (m / "model.json").write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match="corrupt or truncated"):
        Predictor.load(m)


def test_mismatched_files_are_reported(exported, tmp_path):
    m = _copy(exported, tmp_path)
    vocab = json.loads((m / "vocab.json").read_text())
    (m / "vocab.json").write_text(json.dumps(vocab + ["extra"]))
    with pytest.raises(CheckpointError, match="vocab and the weights come from different models"):
        Predictor.load(m)
    (m / "vocab.json").write_text(json.dumps(vocab))
    meta = json.loads((m / "model.json").read_text())
    (m / "model.json").write_text(json.dumps({**meta, "labels": ["a", "b", "c"]}))
    with pytest.raises(CheckpointError, match="3 labels but the classifier's output layer has 2"):
        Predictor.load(m)
    (m / "model.json").write_text(json.dumps({**meta, "model": {**meta["model"], "n_hid": 32}}))
    with pytest.raises(CheckpointError, match="cannot load weights|do not fit"):
        Predictor.load(m)
    (m / "model.json").write_text(json.dumps({**meta, "tokenizer": {**meta["tokenizer"], "rules": ["lowercase"]}}))
    with pytest.raises(CheckpointError, match="tokenizer rules"):
        Predictor.load(m)
    (m / "model.json").write_text(json.dumps({**meta, "format_version": 99}))
    with pytest.raises(CheckpointError, match="newer than this ulmfit_lab"):
        Predictor.load(m)
    (m / "model.json").write_text("{not json")
    with pytest.raises(CheckpointError, match="corrupt"):
        Predictor.load(m)
    (m / "model.json").unlink()
    with pytest.raises(CheckpointError, match="missing model.json"):
        Predictor.load(m)


def test_old_folders_without_the_new_fields_still_load(exported, tmp_path):
    m = _copy(exported, tmp_path)
    meta = json.loads((m / "model.json").read_text())
    old = {k: meta[k] for k in ("format_version", "kind", "model", "labels", "lang", "head", "max_len", "drop_mult")}
    (m / "model.json").write_text(json.dumps(old))
    np.testing.assert_array_equal(Predictor.load(m).predict_proba(TEXTS), Predictor.load(exported).predict_proba(TEXTS))


def test_export_cli(tiny_run, tmp_path):
    run_cli("export", str(tiny_run["dir"]), str(tmp_path / "out"))
    assert (tmp_path / "out" / "model.json").is_file() and not (tmp_path / "out" / "model.torchscript.pt").exists()
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "notes.txt").write_text("x")
    proc = run_cli("export", str(tiny_run["dir"]), str(tmp_path / "full"), check=False)
    assert proc.returncode != 0 and "not a saved model" in proc.stderr


def test_export_onto_an_existing_file_is_a_one_line_error(tmp_path, capsys):
    from ulmfit_lab import cli

    model = tmp_path / "model"
    model.mkdir()
    (model / "model.json").write_text("{}")  # enough for the path checks, which come before any reading
    target = tmp_path / "predictions.csv"
    target.write_text("keep me")
    assert cli.main(["export", str(model), str(target)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("ulmfit-lab: error: ") and err.count("\n") == 1 and "Traceback" not in err, err
    assert "predictions.csv is a file; expected a folder" in err
    assert target.read_text() == "keep me"
