"""Progress messages go through `logging`, under the `ulmfit_lab` loggers: the library only emits them, the
command line (and `SentimentClassifier(verbose=True)`, see test_api) prints them as `[ulmfit-lab] ...` lines."""

import json
import logging

import torch
from conftest import CONFIGS
from synth import make_reviews

from ulmfit_lab import device, load_config, run_pipeline
from ulmfit_lab.cli import main
from ulmfit_lab.config import RunConfig
from ulmfit_lab.data.sources import load_data
from ulmfit_lab.logs import TO_STDERR, console
from ulmfit_lab.stages import common
from ulmfit_lab.training import distributed


def test_a_stage_reports_through_logging_and_prints_nothing_itself(tmp_path, cache_dir, caplog, capsys):
    cfg = load_config(CONFIGS / "tiny.yaml", [f"run.dir={tmp_path / 'run'}", f"run.cache_dir={cache_dir}"])
    with caplog.at_level(logging.INFO, logger="ulmfit_lab"):
        run_pipeline(cfg, until="data", data=load_data(cfg.data, tmp_path, train=make_reviews(60, seed=3)))
    records = {r.name: r.getMessage() for r in caplog.records if r.levelno == logging.INFO}
    assert records["ulmfit_lab.stages.common"] == f"data: running -> {tmp_path / 'run' / 'data'}"
    assert records["ulmfit_lab.stages.data"].startswith("data: 48 train / 12 valid / 0 test")
    assert "[ulmfit-lab]" not in capsys.readouterr().out  # no handler of its own: the application decides


def test_cli_prints_progress_lines_before_its_json_and_leaves_logging_as_it_was(tmp_path, cache_dir, capsys):
    logger = logging.getLogger("ulmfit_lab")
    before = (list(logger.handlers), logger.level)
    assert main(["lm", str(CONFIGS / "tiny.yaml"), f"run.dir={tmp_path / 'run'}", f"run.cache_dir={cache_dir}"]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"[ulmfit-lab] run directory {tmp_path / 'run'}, device cpu\n[ulmfit-lab] done in ")
    assert json.loads(out[out.index("\n{") + 1:])["run_dir"] == str(tmp_path / "run")
    assert (list(logger.handlers), logger.level) == before


def test_console_lines_read_as_the_prints_they_replace(monkeypatch, capsys):
    monkeypatch.setattr(device, "cpu_has_bf16", lambda: False)
    with console():
        device.amp_dtype(RunConfig(precision="bf16"), torch.device("cpu"))
        logging.getLogger("ulmfit_lab.training.distributed").info("launching: %s", "x", extra=TO_STDERR)
        logging.getLogger("ulmfit_lab.stages.lm").debug("below INFO: not shown")
    device.amp_dtype(RunConfig(precision="bf16"), torch.device("cpu"))  # outside: not printed
    out, err = capsys.readouterr()
    assert out == ("[ulmfit-lab] warning: run.precision=bf16, but this CPU has no native bf16 (AVX-512 BF16 or AMX): "
                   "training in fp32 instead (set run.precision=fp32 to silence this)\n")
    assert err == "[ulmfit-lab] launching: x\n"


def test_only_rank_0_reports_stage_progress(monkeypatch, caplog):
    log = logging.getLogger(common.__name__)
    with caplog.at_level(logging.INFO, logger="ulmfit_lab"):
        monkeypatch.setattr(distributed, "rank", lambda: 1)
        log.info("from rank 1")
        monkeypatch.setattr(distributed, "rank", lambda: 0)
        log.info("from rank 0")
    assert [r.getMessage() for r in caplog.records] == ["from rank 0"]
