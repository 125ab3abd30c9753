from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from synth import make_reviews  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
CONFIGS = ROOT / "configs"
SHARED = ROOT.parent / "shared" / "data"


@pytest.fixture(scope="module")
def one_thread():
    """Torch on one thread for a module's tests (`pytestmark = pytest.mark.usefixtures("one_thread")`): models of a
    few thousand parameters gain nothing from a second thread, which only contends for the shared CPU."""
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("cache")


@pytest.fixture(scope="session")
def tiny_csvs(tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("tinydata")
    paths = {"train": d / "train.csv", "test": d / "test.csv"}
    make_reviews(240, seed=0).to_csv(paths["train"], index=False)
    make_reviews(60, seed=1).to_csv(paths["test"], index=False)
    return paths


def run_cli(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    proc = subprocess.run([sys.executable, "-m", "ulmfit_lab.cli", *args], capture_output=True, text=True,
                          env=env, cwd=ROOT)
    if check and proc.returncode != 0:
        raise AssertionError(f"CLI failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return proc


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory, tiny_csvs, cache_dir) -> dict:
    """The tiny config trained once through the real CLI; shared by the tests that inspect a finished run."""
    run_dir = tmp_path_factory.mktemp("run") / "tiny"
    args = ["run", str(CONFIGS / "tiny.yaml"), f"data.train={tiny_csvs['train']}", f"data.test={tiny_csvs['test']}",
            f"run.dir={run_dir}", f"run.cache_dir={cache_dir}"]
    first = run_cli(*args)
    return {"dir": run_dir, "args": args, "first": first}


def call_cli(capsys, *args: str) -> tuple[int, str, str]:
    """`ulmfit-lab ARGS` in this process: exit code, stdout, stderr. The command line's own `main`, without the ~10 s
    a fresh interpreter spends importing torch and fastai; the tests that need a real process use `run_cli`."""
    from ulmfit_lab.cli import main

    capsys.readouterr()  # only this command's output
    try:
        code = main(list(args))
    except SystemExit as e:  # argparse: --help (0) and bad options (2)
        code = e.code
    out = capsys.readouterr()
    return code, out.out, out.err


def copy_run(src: Path, dst: Path) -> Path:
    """A copy of a finished run directory; its markers' absolute artifact paths are moved to the copy, so that
    a test can rerun stages there without touching a run other tests share."""
    import shutil

    from ulmfit_lab.training.rundir import MARKER

    shutil.copytree(src, dst)
    for marker in dst.glob(f"*/{MARKER}"):
        marker.write_text(marker.read_text(encoding="utf-8").replace(str(src), str(dst)), encoding="utf-8")
    return dst


def randomize_(model):
    """Random weights large enough to matter, and random BatchNorm statistics (in place; returns the model)."""
    import torch

    for p in model.parameters():
        p.data.normal_(0, 0.5)
    for mod in model.modules():
        if isinstance(mod, torch.nn.BatchNorm1d):
            mod.running_mean.normal_()
            mod.running_var.uniform_(0.5, 2)
    return model


def make_random_model(folder: Path, seed: int = 0, backwards: bool = False, spread: float = 5.0) -> Path:
    """An exported classifier folder with random (untrained) weights over the toy reviews' vocab, in a second.

    Weights and BatchNorm statistics are drawn large enough that texts get clearly different probabilities;
    a short `max_len` and `bptt` put long texts through the BPT3C window.
    """
    import dataclasses

    import numpy as np
    import torch

    from ulmfit_lab.config import ModelConfig
    from ulmfit_lab.models.awd_lstm import build_classifier
    from ulmfit_lab.models.checkpoint import save_checkpoint
    from ulmfit_lab.serving.export import export_model
    from ulmfit_lab.serving.inference import FastClassifier, collate
    from ulmfit_lab.text.vocab import SPECIAL_TOKENS, encode, fast_tokenizer, vocab_index

    _, _, table = fast_tokenizer("en").encode_batch(make_reviews(200, seed=0).text.tolist())
    vocab = SPECIAL_TOKENS + sorted(set(table) - set(SPECIAL_TOKENS))
    m = ModelConfig(emb_sz=16, n_hid=24, n_layers=2, bptt=8, backwards=backwards)
    torch.manual_seed(seed)
    model = randomize_(build_classifier(len(vocab), 2, m, 0.5, [8], max_len=24).eval())
    # spread and centre the logits on toy reviews (random weights alone give one label to every text)
    texts = make_reviews(40, seed=1).text.tolist()
    ids = encode(fast_tokenizer("en"), vocab_index(vocab), texts)
    with torch.no_grad():
        logits = FastClassifier.from_fastai(model)(*collate(ids, np.arange(len(ids)), backwards))
        # the output layer has no bias (a BatchNorm precedes it): shift that BatchNorm's beta instead
        out = [mod for mod in model[1].modules() if isinstance(mod, torch.nn.Linear)][-1]
        bn = [mod for mod in model[1].modules() if isinstance(mod, torch.nn.BatchNorm1d)][-1]
        bn.bias.sub_(torch.linalg.pinv(out.weight) @ logits.mean(0))
        out.weight.mul_(spread)
    raw = folder.with_name(folder.name + "_raw")
    meta = {"kind": "classifier", "model": dataclasses.asdict(m), "labels": ["neg", "pos"], "lang": "en",
            "head": [8], "max_len": 24, "drop_mult": 0.5, "direction": "bwd" if backwards else "fwd"}
    save_checkpoint(model, raw, vocab, meta)
    return export_model(raw, folder)


@pytest.fixture(scope="session")
def random_model(tmp_path_factory) -> Path:
    """A tiny exported classifier with random weights (no training): for the serving and ONNX tests."""
    return make_random_model(tmp_path_factory.mktemp("random_model") / "model")
