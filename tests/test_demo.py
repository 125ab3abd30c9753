"""`make demo` without DATA: IMDb through fastai's untar_data, here from a local HTTP server on 127.0.0.1 serving a
tiny aclImdb-style archive (no test needs the network); offline, one line on how to use a local copy."""

import functools
import json
import os
import socket
import subprocess
import sys
import tarfile
import threading
from http.server import HTTPServer, SimpleHTTPRequestHandler
from pathlib import Path

import pytest
from conftest import ROOT
from synth import make_reviews


class Quiet(SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def imdb_server(tmp_path_factory):
    """http://127.0.0.1:PORT/imdb.tgz: imdb/{train,test}/{pos,neg}/*.txt and imdb/train/unsup, like fastai's."""
    root = tmp_path_factory.mktemp("imdb_src")
    tree = root / "imdb"
    for split, n, seed in (("train", 120, 61), ("test", 40, 62)):
        for i, (text, label) in enumerate(make_reviews(n, seed=seed).itertuples(index=False)):
            path = tree / split / label / f"{i}_{7 if label == 'pos' else 2}.txt"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text, encoding="utf-8")
    (tree / "train" / "unsup").mkdir()
    (tree / "train" / "unsup" / "0_0.txt").write_text("An unlabelled review of the film.", encoding="utf-8")
    served = tmp_path_factory.mktemp("served")
    with tarfile.open(served / "imdb.tgz", "w:gz") as tar:
        tar.add(tree, arcname="imdb")
    server = HTTPServer(("127.0.0.1", 0), functools.partial(Quiet, directory=str(served)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/imdb.tgz"
    server.shutdown()


def demo(tmp_path: Path, url: str, *args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, ULMFIT_LAB_IMDB_URL=url, FASTAI_HOME=str(tmp_path / "fastai"),
               ULMFIT_LAB_CACHE=str(tmp_path / "cache"), OMP_NUM_THREADS="1")
    return subprocess.run([sys.executable, "-m", "ulmfit_lab.cli", "demo", *args], cwd=tmp_path, env=env,
                          capture_output=True, text=True)


def test_demo_fetches_imdb_through_fastai_and_runs(imdb_server, tmp_path):
    # the tiny recipe for speed; the demo itself is what `make demo` runs (see the Makefile test below)
    proc = demo(tmp_path, imdb_server, "--config", "tiny")
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    assert (tmp_path / "fastai" / "archive" / "imdb.tgz").is_file()  # fastai's archive cache
    assert (tmp_path / "fastai" / "data" / "imdb" / "train" / "pos").is_dir()  # fastai's extracted copy
    summary = json.loads(proc.stdout[proc.stdout.index("{\n"):])
    assert summary["run_dir"] == "runs/demo" and (tmp_path / "runs" / "demo" / "evaluate" / "DONE.json").is_file()
    assert summary["evaluate"]["n"] == 40  # evaluated on the archive's 40 test reviews
    config = (tmp_path / "runs" / "demo" / "config.yaml").read_text()
    assert str(tmp_path / "fastai" / "data" / "imdb") in config


def test_demo_offline_says_in_one_line_how_to_use_a_local_copy(tmp_path):
    with socket.socket() as s:  # a port nothing listens on: the download is refused, as offline
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = demo(tmp_path, f"http://127.0.0.1:{port}/imdb.tgz")
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert proc.returncode == 2 and len(lines) == 1, proc.stderr
    assert "could not download IMDb" in lines[0] and "make demo DATA=" in lines[0] and "--data" in lines[0]
    assert "Traceback" not in proc.stderr and not (tmp_path / "runs").exists()


def test_make_demo_without_data_runs_the_demo_and_passes_data_on():
    def dry(*args: str) -> str:
        # under `make test` the sub-make would print "Leaving directory" lines: run it as a top-level make
        env = {k: v for k, v in os.environ.items() if k not in ("MAKELEVEL", "MAKEFLAGS", "MFLAGS", "MAKEOVERRIDES")}
        cmd = ["make", "--no-print-directory", "-n", "demo", *args]
        out = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, check=True)
        return out.stdout.strip().splitlines()[-1]

    assert dry().split() == [".venv/bin/ulmfit-lab", "demo"]
    assert dry("DATA=/x/aclImdb.tar.xz").split() == [".venv/bin/ulmfit-lab", "demo", "--data", "/x/aclImdb.tar.xz"]


def test_the_default_address_is_fastais_imdb(monkeypatch):
    from fastai.data.external import URLs

    from ulmfit_lab.data.demo import imdb_url

    monkeypatch.delenv("ULMFIT_LAB_IMDB_URL", raising=False)
    assert imdb_url() == URLs.IMDB
