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
