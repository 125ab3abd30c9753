"""The paper's LM by name: `lm_pretrain.weights=wt103-fwd`/`wt103-bwd` through fastai's own downloader, here from a
local HTTP server on 127.0.0.1 serving tiny archives in fastai's layout (no test needs the network); vocab pickles
read without running code; offline, one line on how to use a local copy."""

import functools
import os
import pickle
import socket
import tarfile
import threading
from http.server import HTTPServer, SimpleHTTPRequestHandler

import pytest
import torch
from conftest import CONFIGS
from synth import make_reviews

from ulmfit_lab import load_config, run_pipeline
from ulmfit_lab.cli import main as cli_main
from ulmfit_lab.config import ModelConfig
from ulmfit_lab.data.sources import load_data
from ulmfit_lab.models import hub
from ulmfit_lab.models.artifact import CheckpointError
from ulmfit_lab.models.awd_lstm import build_lm
from ulmfit_lab.models.checkpoint import load_lm_checkpoint, read_vocab

M = ModelConfig(emb_sz=16, n_hid=24, n_layers=2, bptt=16)  # tiny.yaml's sizes
TRAIN = make_reviews(120, seed=4)
WORDS = sorted({w for t in TRAIN.text for w in t.lower().replace(".", " ").split()})
VOCAB = ["xxunk", "xxpad", "xxbos", "xxeos", "xxfld", "xxrep", "xxwrep", "xxup", "xxmaj"] + WORDS[:20]


class Quiet(SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


class Planted:
    """Unpickling this runs a shell command that writes `marker`: what a malicious vocab pickle would do."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"echo planted > {self.marker}",)


def _archive(folder, name: str, itos) -> None:
    """`folder/name.tgz` as fastai publishes it: `name/lstm_{fwd,bwd}.pth` (state dict + opt) and `itos_wt103.pkl`."""
    src = folder / "src" / name
    src.mkdir(parents=True)
    torch.manual_seed(0 if name.endswith("fwd") else 1)
    torch.save({"model": build_lm(len(VOCAB), M).state_dict(), "opt": {}}, src / f"lstm_{name[-3:]}.pth")
    (src / "itos_wt103.pkl").write_bytes(pickle.dumps(itos))
    with tarfile.open(folder / f"{name}.tgz", "w:gz") as tar:
        tar.add(src, arcname=name)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """http://127.0.0.1:PORT/{good,evil}/wt103-{fwd,bwd}.tgz; `evil` holds a vocab pickle that would run code."""
    root = tmp_path_factory.mktemp("wt103_served")
    marker = root / "planted.txt"
    for kind, itos in (("good", VOCAB), ("evil", [*VOCAB[:3], Planted(marker)])):
        (root / kind).mkdir()
        for name in ("wt103-fwd", "wt103-bwd"):
            _archive(root / kind, name, itos)
    httpd = HTTPServer(("127.0.0.1", 0), functools.partial(Quiet, directory=str(root)))
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{httpd.server_address[1]}"
    yield {"good": f"{base}/good", "evil": f"{base}/evil", "root": root, "marker": marker}
    httpd.shutdown()


@pytest.fixture()
def fastai_home(tmp_path, monkeypatch):
    """fastai's config and cache under tmp_path: nothing is written to the real ~/.fastai."""
    from fastai.data.external import fastai_cfg

    home = tmp_path / "fastai"
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("FASTAI_HOME", str(home))
    fastai_cfg.cache_clear()  # fastai reads $FASTAI_HOME once per process
    yield home
    fastai_cfg.cache_clear()


def _dead_base() -> str:
    with socket.socket() as s:  # a port nothing listens on: the download is refused, as offline
        s.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{s.getsockname()[1]}"


def test_the_names_are_fastais_published_archives(monkeypatch):
    from fastai.data.external import URLs

    monkeypatch.delenv(hub.WT103_BASE_ENV, raising=False)
    assert hub.fastai_lm_url("wt103-fwd") == URLs.WT103_FWD
    assert hub.fastai_lm_url("wt103-bwd") == URLs.WT103_BWD
    monkeypatch.setenv(hub.WT103_BASE_ENV, "http://mirror.example/models/")
    assert hub.fastai_lm_url("wt103-bwd") == "http://mirror.example/models/wt103-bwd.tgz"


def test_pipeline_from_wt103_fwd_fetched_by_fastai(server, fastai_home, tmp_path, cache_dir, monkeypatch):
    monkeypatch.setenv(hub.WT103_BASE_ENV, server["good"])
    cfg = load_config(CONFIGS / "tiny.yaml", [
        "lm_pretrain.source=pretrained", "lm_pretrain.weights=wt103-fwd", "lm_finetune.enabled=false",
        f"run.dir={tmp_path / 'run'}", f"run.cache_dir={cache_dir}"])
    res = run_pipeline(cfg, until="lm_finetune", data=load_data(cfg.data, tmp_path, train=TRAIN))
    folder = fastai_home / "models" / "wt103-fwd"  # fastai's own layout: archive/ and models/ under FASTAI_HOME
    assert (fastai_home / "archive" / "wt103-fwd.tgz").is_file()
    assert res.lm.kind == "fastai" and res.lm.weights == str(folder / "lstm_fwd.pth")
    assert res.lm.vocab == str(folder / "itos_wt103.pkl")
    pre = torch.load(folder / "lstm_fwd.pth", weights_only=True)["model"]["0.encoder.weight"]
    lm, target_vocab, _ = load_lm_checkpoint(res.lm_finetune.model_dir)
    shared = [w for w in target_vocab if w in VOCAB]
    assert len(shared) > 10
    for w in shared:  # the pretrained rows, mapped onto the target vocab
        torch.testing.assert_close(lm[0].encoder.weight[target_vocab.index(w)], pre[VOCAB.index(w)])

    # fastai's cache is used from now on: no download, even with the server gone
    monkeypatch.setenv(hub.WT103_BASE_ENV, _dead_base())
    assert hub.fetch_fastai_lm("wt103-fwd") == folder


def test_each_direction_gets_its_own_and_a_mismatch_is_an_error(server, fastai_home, tmp_path, monkeypatch):
    monkeypatch.setenv(hub.WT103_BASE_ENV, server["good"])
    bwd = hub.locate_lm("wt103", None, tmp_path, backwards=True)
    assert bwd["weights"] == str(fastai_home / "models" / "wt103-bwd" / "lstm_bwd.pth")
    with pytest.raises(CheckpointError, match="wt103-fwd is a forward LM .* use lm_pretrain.weights=wt103-bwd"):
        hub.locate_lm("wt103-fwd", None, tmp_path, backwards=True)


def test_sha256_pins_the_archive(server, fastai_home, tmp_path, monkeypatch):
    monkeypatch.setenv(hub.WT103_BASE_ENV, server["good"])
    good = hub.sha256_file(server["root"] / "good" / "wt103-fwd.tgz")
    assert hub.locate_lm("wt103-fwd", None, tmp_path, sha256=good)["kind"] == "fastai"
    with pytest.raises(CheckpointError, match="sha256 of .* expected 000"):
        hub.locate_lm("wt103-fwd", None, tmp_path, sha256="0" * 64)


def test_planted_vocab_pickle_runs_no_code(server, fastai_home, tmp_path, monkeypatch):
    monkeypatch.setenv(hub.WT103_BASE_ENV, server["evil"])
    info = hub.locate_lm("wt103-fwd", None, tmp_path)
    with pytest.raises(CheckpointError) as err:
        read_vocab(info["vocab"])
    msg = str(err.value)
    assert "\n" not in msg and ".system" in msg and "only a plain list of strings" in msg
    assert not server["marker"].exists()  # nothing in the pickle ran


def test_offline_one_line_says_how_to_use_a_local_copy(fastai_home, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv(hub.WT103_BASE_ENV, _dead_base())
    rc = cli_main(["lm", str(CONFIGS / "tiny.yaml"), "lm_pretrain.source=pretrained",
                   "lm_pretrain.weights=wt103-fwd", f"run.dir={tmp_path / 'run'}", f"run.cache_dir={tmp_path}"])
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert rc == 2 and len(lines) == 1, lines
    assert "could not download wt103-fwd" in lines[0] and "lm_pretrain.weights=PATH/wt103-fwd" in lines[0]
    assert not (fastai_home / "models" / "wt103-fwd").exists()


def test_a_local_copy_in_fastais_layout_is_taken_by_path(server, tmp_path):
    folder = server["root"] / "good" / "src" / "wt103-bwd"  # the unpacked archive, as the offline hint says
    info = hub.locate_lm(str(folder), None, tmp_path, backwards=True)
    assert info == {"kind": "fastai", "weights": str(folder / "lstm_bwd.pth"), "vocab": str(folder / "itos_wt103.pkl")}
    assert read_vocab(info["vocab"]) == VOCAB
    from ulmfit_lab.insight.report import _lm_vocab  # `ulmfit-lab report --lm` resolves LMs as the stage does

    assert _lm_vocab(str(folder), load_config(CONFIGS / "tiny.yaml", ["model.backwards=true"]), tmp_path) == VOCAB
    with pytest.raises(CheckpointError, match="found 0 .pth and 0 .pkl"):
        hub.locate_lm(str(tmp_path), None, tmp_path)
