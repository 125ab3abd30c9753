"""Text generation from an LM folder: an LM trained on a fully predictable text continues it."""

import pytest
from conftest import CONFIGS

from ulmfit_lab import load_config, run_pipeline
from ulmfit_lab.models.artifact import CheckpointError
from ulmfit_lab.models.generate import detokenize, generate


def test_detokenize_undoes_case_markers():
    assert detokenize(["xxbos", "xxmaj", "this", "film", "is", "xxup", "great", "."]) == "This film is GREAT."


def test_trained_lm_continues_its_pattern(tmp_path):
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("\n".join(["one two three four five six seven eight nine ten"] * 300), encoding="utf-8")
    cfg = load_config(CONFIGS / "tiny.yaml", ["lm_pretrain.source=scratch", f"lm_pretrain.corpus=[{corpus}]",
                                              "lm_pretrain.epochs=6", "lm_pretrain.lr=0.03",
                                              "lm_pretrain.drop_mult=0.01", f"run.dir={tmp_path / 'run'}",
                                              f"run.cache_dir={tmp_path / 'cache'}"])
    res = run_pipeline(cfg, until="lm")
    text = generate(res.lm.weights, "one two three", n_words=7, temperature=0.3)
    assert text == "one two three four five six seven eight nine ten", text
    with pytest.raises(CheckpointError, match="backward LM"):
        bwd = run_pipeline(cfg.replace("model.backwards=true", f"run.dir={tmp_path / 'bwd'}"), until="lm")
        generate(bwd.lm.weights, "one two")
