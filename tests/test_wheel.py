"""The package as a user gets it: a wheel, installed into a fresh virtual environment, used from a folder that
is not the source tree. The README's API quickstart, copied verbatim, runs there."""

import os
import re
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest
from conftest import ROOT


def readme_quickstart() -> str:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    section = text[text.index("## Quickstart: Python"):]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


@pytest.fixture(scope="module")
def wheel_venv(tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("wheel")
    src = tmp / "src"  # a copy holding only what the build reads: no stray files from this checkout
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, src / name)
    shutil.copytree(ROOT / "ulmfit_lab", src / "ulmfit_lab", ignore=shutil.ignore_patterns("__pycache__"))
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
    subprocess.run([*pip, "wheel", "--no-deps", "--no-build-isolation", "--no-index", "-w", str(tmp / "dist"),
                    str(src)], check=True, capture_output=True)
    wheel = next((tmp / "dist").glob("ulmfit_lab-*.whl"))
    venv = tmp / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    subprocess.run([*pip, "--python", str(venv / "bin" / "python"), "install", "--no-deps", "--no-index",
                    str(wheel)], check=True, capture_output=True)
    # the dependencies (torch, fastai, ...) come from this environment, behind the wheel's own site-packages;
    # a path in a .pth file is not a site dir, so this environment's editable install of the source stays out
    site = Path(subprocess.run([venv / "bin" / "python", "-c", "import sysconfig; print(sysconfig.get_paths()"
                                "['purelib'])"], check=True, capture_output=True, text=True).stdout.strip())
    (site / "zz_dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    return venv


def run_in(venv: Path, code: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
    env.update(ULMFIT_LAB_CACHE=str(cwd / "cache"), OMP_NUM_THREADS="1")  # a tiny model: one thread is faster
    (cwd / "script.py").write_text(code, encoding="utf-8")
    return subprocess.run([venv / "bin" / "python", "-I", "script.py"], cwd=cwd, env=env, capture_output=True,
                          text=True)


CHECKS = f"""
import sys, pathlib
import ulmfit_lab
venv = pathlib.Path(sys.prefix)
assert pathlib.Path(ulmfit_lab.__file__).is_relative_to(venv), ulmfit_lab.__file__
assert {str(ROOT)!r} not in sys.path and not any(pathlib.Path(p) == pathlib.Path({str(ROOT)!r}) for p in sys.path)
"""


CONFIG_CHECKS = """
from ulmfit_lab import SentimentClassifier, load_config
from ulmfit_lab.config import shipped_configs
assert {"quickstart", "tiny", "imdb"} <= set(shipped_configs())
assert SentimentClassifier().config == SentimentClassifier.from_config("quickstart").config == load_config("quickstart")
assert load_config("tiny").model.emb_sz == 16
print("CONFIGS OK")
"""

QUICKSTART_CHECKS = """
assert pathlib.Path("my_model", "config.yaml").is_file() and not pathlib.Path("runs").exists()
assert clf.config.model.emb_sz == 256  # the shipped quickstart recipe, found in the installed package
assert clf.config.lm_pretrain.weights == "reviews-fwd"  # ... from the LM shipped in the wheel
assert clf.predict(["The plot was lovely.", "The plot was dull and far too long."]) == ["pos", "neg"]
assert clf.predict("The acting was wonderful.") == "pos"
print("QUICKSTART OK")
"""


@pytest.fixture(scope="module")
def installed_script(wheel_venv, tmp_path_factory) -> subprocess.CompletedProcess:
    """One interpreter for the checks below (each fresh one spends ~10 s importing torch and fastai): the shipped
    configs first, then the README quickstart, which is all the script's own code from then on."""
    code = readme_quickstart()
    assert "SentimentClassifier" in code
    return run_in(wheel_venv, CHECKS + CONFIG_CHECKS + code + QUICKSTART_CHECKS, tmp_path_factory.mktemp("script"))


def test_readme_quickstart_runs_from_the_installed_wheel(installed_script):
    proc = installed_script
    assert proc.returncode == 0 and "QUICKSTART OK" in proc.stdout, proc.stdout[-2000:] + proc.stderr[-4000:]


def test_shipped_configs_by_name_from_any_folder(wheel_venv, installed_script, tmp_path):
    proc = installed_script
    assert "CONFIGS OK" in proc.stdout, proc.stderr[-3000:]
    cli = subprocess.run([wheel_venv / "bin" / "ulmfit-lab", "run", "tiny", "classifier.epohcs=2"], cwd=tmp_path,
                         capture_output=True, text=True, env={"PATH": os.environ["PATH"], "HOME": str(tmp_path)})
    assert cli.returncode == 2 and "did you mean 'epochs'" in cli.stdout + cli.stderr
