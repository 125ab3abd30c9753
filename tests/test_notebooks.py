"""Every notebook runs top to bottom on tiny settings (ULMFIT_LAB_NB=tiny): toy data, a tiny model."""

from pathlib import Path

import nbformat
import pytest
from conftest import ROOT
from nbclient import NotebookClient

NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))


# 04 (report, interpret, suggest) runs in the default suite; the others train several tiny runs each (minutes
# together): `pytest -m slow` runs them
SLOW = {"01_quickstart.ipynb", "02_three_stages.ipynb", "03_which_strategy.ipynb"}
PARAMS = [pytest.param(p, id=p.name, marks=[pytest.mark.slow] if p.name in SLOW else []) for p in NOTEBOOKS]


@pytest.mark.parametrize("path", PARAMS)
def test_notebook_runs(path: Path, tmp_path, monkeypatch):
    monkeypatch.setenv("ULMFIT_LAB_NB", "tiny")
    monkeypatch.setenv("ULMFIT_LAB_NB_RUNS", str(tmp_path / "runs"))
    monkeypatch.setenv("ULMFIT_LAB_CACHE", str(tmp_path / "cache"))
    nb = nbformat.read(path, as_version=4)
    NotebookClient(nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(path.parent)}}).execute()
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []) if o.output_type == "error"]
    assert not errors


def test_committed_notebooks_carry_outputs_with_images():
    # they are committed after a real run on ../shared/data (see notebooks/README.md), images rendered
    for path in NOTEBOOKS:
        nb = nbformat.read(path, as_version=4)
        code = [c for c in nb.cells if c.cell_type == "code"]
        assert all(c.get("execution_count") for c in code), f"{path.name}: not executed"
        assert any("image/png" in o.get("data", {}) for c in code for o in c["outputs"]), path.name


def test_notebook_03_carries_the_real_lab_run():
    # committed after reading the finished real-data lab run (benchmarks/lab_cr.sh), not the tiny fallback
    nb = nbformat.read(ROOT / "notebooks" / "03_which_strategy.ipynb", as_version=4)
    text = "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []))
    assert "reading the finished run" in text and "computing on tiny settings" not in text
