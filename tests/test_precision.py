"""`run.precision=bf16` trains on any CPU: in bf16 where the CPU has it natively, else in fp32 with a warning.

(A CPU without AVX-512 BF16 / AMX has no oneDNN bf16 LSTM: autocast there used to end in "could not create
a primitive descriptor for the LSTM forward propagation primitive", deep inside torch.)
"""

import math

import pytest
import torch
from conftest import CONFIGS
from synth import make_reviews

from ulmfit_lab import device, load_config, run_pipeline
from ulmfit_lab.config import RunConfig
from ulmfit_lab.data.sources import load_data

CPU = torch.device("cpu")


def test_bf16_without_native_support_trains_in_fp32_with_a_warning(monkeypatch, caplog):
    monkeypatch.setattr(device, "cpu_has_bf16", lambda: False)
    assert device.amp_dtype(RunConfig(precision="bf16"), CPU) is None
    assert [r.levelname for r in caplog.records if "no native bf16" in r.getMessage()] == ["WARNING"]
    monkeypatch.setattr(device, "cpu_has_bf16", lambda: True)
    assert device.amp_dtype(RunConfig(precision="bf16"), CPU) == torch.bfloat16


def test_predicting_in_bf16_without_native_support_is_fp32(monkeypatch):
    monkeypatch.setattr(device, "cpu_has_bf16", lambda: False)
    with pytest.warns(UserWarning, match="no native bf16"):
        assert device.resolve_precision("bf16", CPU) == "fp32"
    monkeypatch.setattr(device, "cpu_has_bf16", lambda: True)
    assert device.resolve_precision("bf16", CPU) == "bf16"


def test_cpu_bf16_detection_matches_what_autocast_can_run():
    if device.cpu_has_bf16():  # then oneDNN has the bf16 LSTM the trainer needs
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out, _ = torch.nn.LSTM(8, 8, batch_first=True)(torch.zeros(2, 3, 8))
        assert out.shape == (2, 3, 8)


def test_lm_pretraining_with_bf16_and_sampled_softmax_runs_on_this_cpu(tmp_path, cache_dir, caplog):
    corpus = tmp_path / "corpus.csv"
    make_reviews(200, seed=21, n_sent=3)[["text"]].to_csv(corpus, index=False)
    cfg = load_config(CONFIGS / "tiny.yaml", ["lm_pretrain.source=scratch", f"lm_pretrain.corpus=[{corpus}]",
                                              "lm_pretrain.epochs=4", "lm_pretrain.lr=0.03",
                                              "lm_pretrain.softmax_samples=64", "run.precision=bf16",
                                              f"run.dir={tmp_path / 'run'}", f"run.cache_dir={cache_dir}"])
    res = run_pipeline(cfg, until="lm", data=load_data(cfg.data, tmp_path, train=make_reviews(80)))
    ppl = res.lm.metrics["valid_perplexity"]  # the full softmax's, on held-out text
    vocab = res.lm.metrics["vocab_size"]
    assert math.isfinite(ppl) and ppl < 0.3 * vocab, (ppl, vocab)
    assert ("no native bf16" in caplog.text) != device.cpu_has_bf16()
