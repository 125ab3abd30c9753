"""The lab on tiny real models: probes, advice, ablations and learning curves, through their functions and
through the CLI (which then finds every run done and rebuilds the tables)."""

import dataclasses
import json
import random
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import CONFIGS, run_cli
from synth import make_reviews

from ulmfit_lab.cli import main
from ulmfit_lab.config import ModelConfig, load_config
from ulmfit_lab.data.sources import DataError
from ulmfit_lab.lab import (
    ablate,
    advise,
    learning_curve,
    merge_curves,
    plot_advice,
    plot_curve,
    probe,
    read_ablation,
    read_advice,
    read_curve,
    read_probe,
)
from ulmfit_lab.lab.curve import small_n_overrides
from ulmfit_lab.lab.probe import layer_features
from ulmfit_lab.models.awd_lstm import build_lm

WIKI = ["the", "river", "dynasty", "province", "census", "railway", "orchestra", "cathedral", "parliament", "in",
        "was", "of", "built", "century", "king", "station", "population", "elected", "north", "founded", "1854"]


def _rows(path):
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _json(stdout):
    """The command's JSON result: from its first unindented `{` line (log lines come before it)."""
    return json.loads(stdout[re.search(r"^\{$", stdout, re.M).start():])


def _png(path):
    data = path.read_bytes()
    return data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 2000


@pytest.fixture(scope="module")
def lab(tmp_path_factory, tiny_csvs, cache_dir):
    """Tiny config + an LM pretrained (once, cached in run.dir) on review-like text, as `source: scratch`."""
    d = tmp_path_factory.mktemp("lab")
    make_reviews(400, seed=5).to_csv(d / "reviews_corpus.csv", index=False)
    rng = random.Random(0)
    wiki = [" ".join(rng.choice(WIKI) for _ in range(12)).capitalize() + "." for _ in range(400)]
    pd.DataFrame({"text": wiki}).to_csv(d / "wiki_corpus.csv", index=False)
    args = [f"data.train={tiny_csvs['train']}", f"data.test={tiny_csvs['test']}", f"run.cache_dir={cache_dir}",
            "lm_finetune.epochs=1", "classifier.epochs=5", "classifier.lr=0.2", "lm_pretrain.source=scratch",
            f"lm_pretrain.corpus=[{d / 'reviews_corpus.csv'}]"]
    return {"dir": d, "args": args + [f"run.dir={d / 'run'}"], "base": args,
            "cfg": load_config(CONFIGS / "tiny.yaml", args + [f"run.dir={d / 'run'}"])}


def test_layer_features_match_fastai_encoder_and_ignore_padding():
    torch.manual_seed(0)
    enc = build_lm(40, ModelConfig(emb_sz=8, n_hid=12, n_layers=2, bptt=5))[0]
    rng = np.random.default_rng(0)
    docs = [rng.integers(2, 40, n) for n in (3, 17, 9, 30)]
    batched = layer_features(enc, docs, bs=4)
    assert [f.shape for f in batched] == [(4, 24), (4, 36), (4, 24)]  # [last, max, mean] of emb, n_hid, emb
    for i, d in enumerate(docs):
        alone = layer_features(enc, [d], bs=1)
        for layer in range(3):  # a text's features do not depend on the texts padded beside it
            np.testing.assert_allclose(batched[layer][i], alone[layer][0], atol=1e-5)
        enc.eval()
        enc.reset()
        with torch.no_grad():
            top = enc(torch.as_tensor(d)[None])[0]  # fastai's own forward: the last layer's outputs (T, emb)
        ref = torch.cat([top[-1], top.max(0).values, top.mean(0)]).numpy()
        np.testing.assert_allclose(batched[-1][i], ref, atol=1e-5)


@pytest.mark.slow  # a long end-to-end run; `pytest -m slow` runs it (the default suite stays under 15 min)
def test_probe_fits_every_layer(lab):
    res = probe(lab["cfg"], ("pretrained", "finetuned"))
    assert [(p.encoder, p.layer) for p in res.layers] == [(e, k) for e in ("pretrained", "finetuned") for k in range(3)]
    assert [p.dim for p in res.layers[:3]] == [48, 72, 48]  # 3 x (emb 16, hidden 24, emb 16)
    assert res.majority == pytest.approx(0.5)
    for p in res.layers:
        assert 0.0 <= p.valid_accuracy <= 1.0 and p.test_accuracy is not None
    # the sentiment words are in the texts: some layer's pooled features separate the classes
    assert res.best("finetuned").valid_accuracy >= 0.85 and res.best("finetuned").test_accuracy >= 0.8
    out = lab["dir"] / "run" / "probe"
    df = pd.read_csv(out / "probe.csv")
    assert len(df) == 6 and {"valid_accuracy", "test_accuracy", "C"} <= set(df.columns)
    assert _png(out / "probe.png") and "| encoder | layer |" in (out / "probe.md").read_text()
    assert (out / "pretrained" / "lm_finetune" / "DONE.json").is_file()  # the no-fine-tuning encoder's own run


def test_advise_similar_small_data_gets_classifier_only(lab):
    adv = advise(lab["cfg"])
    ms = adv.measurements
    assert (ms.n_labelled, ms.n_classes, ms.per_class, ms.n_unlabelled) == (240, 2, 120.0, 0)
    # the LM read the same kind of text: target perplexity close to its own held-out perplexity
    assert 0.6 < ms.perplexity_ratio < 1.6 and ms.oov_token_rate < 0.01
    assert (adv.size, adv.similarity, adv.recipe) == ("small", "similar", "classifier_only")
    lines = (lab["dir"] / "run" / "advise" / "advice_overrides.txt").read_text().split()
    assert lines == adv.overrides == ["lm_finetune.enabled=false", "classifier.trainable_groups=1"]
    cfg = lab["cfg"].replace(*lines)  # the advice is a valid override of the config
    assert cfg.classifier.trainable_groups == 1
    assert "classifier_only" in (lab["dir"] / "run" / "advise" / "advice.md").read_text()


def _wiki_cfg(lab):
    """The lab's config with an LM pretrained on the wiki-like corpus instead (run dir `run_wiki`)."""
    return load_config(CONFIGS / "tiny.yaml", lab["base"] + [f"lm_pretrain.corpus=[{lab['dir'] / 'wiki_corpus.csv'}]",
                                                             f"run.dir={lab['dir'] / 'run_wiki'}"])


def test_advise_different_corpus_and_no_lm(lab):
    cfg = _wiki_cfg(lab)
    adv = advise(cfg)
    assert adv.measurements.oov_token_rate > 0.3  # most review words are unknown to this LM
    assert (adv.size, adv.similarity, adv.recipe) == ("small", "different", "probe")
    none = advise(cfg.replace("lm_pretrain.source=none", f"run.dir={lab['dir'] / 'run_none'}"))
    assert none.similarity == "unknown" and none.measurements.perplexity_ratio is None
    assert any("no pretrained LM is configured" in r for r in none.reasons)


@pytest.mark.slow  # a long end-to-end run; `pytest -m slow` runs it (the default suite stays under 15 min)
def test_ablate_variants_table_and_schedules(lab):
    res = ablate(lab["cfg"], variants=["ulmfit", "clf_one_cycle", "no_lm_finetuning"])
    assert list(res.table["variant"]) == ["ulmfit", "clf_one_cycle", "no_lm_finetuning"]
    assert res.table["valid_error"].between(0, 1).all() and res.table["test_error"].between(0, 1).all()
    assert res.table["test_error"].min() <= 0.25  # at least one variant learned the task
    out = lab["dir"] / "run" / "ablate"
    assert len(pd.read_csv(out / "ablation.csv")) == 3 and "| variant |" in (out / "ablation.md").read_text()
    base, cyc, nolm = (out / v / "seed42" for v in ("ulmfit", "clf_one_cycle", "no_lm_finetuning"))

    def key(run, stage):
        return json.loads((run / stage / "DONE.json").read_text())["key"]

    # a classifier-only variant reuses the LM fine-tuned for the full recipe; the others do not
    assert key(cyc, "lm_finetune") == key(base, "lm_finetune") and key(cyc, "classifier") != key(base, "classifier")
    assert key(nolm, "lm_finetune") != key(base, "lm_finetune")
    assert "valid_loss" not in json.loads((nolm / "lm_finetune" / "DONE.json").read_text())["result"]["metrics"]
    # the LR actually followed each schedule: phase 0, top group (the head), lr 0.2
    top = {run: [s[-1] for s in _rows(run / "classifier" / "lr_trace.jsonl")[0]["lrs"]] for run in (base, cyc)}
    assert top[base][0] == pytest.approx(0.2 / 32)  # STLR starts at lr / ratio
    assert top[cyc][0] == pytest.approx(0.2 / 25) and top[cyc][-1] < 0.2 / 20  # one-cycle: lr / div, then down
    assert 0 < int(np.argmax(top[cyc])) < len(top[cyc]) - 1 and max(top[cyc]) <= 0.2
    assert _png(cyc / "classifier" / "lr_schedule.png") and _png(cyc / "evaluate" / "confusion_matrix.png")


@pytest.mark.slow  # a long end-to-end run; `pytest -m slow` runs it (the default suite stays under 15 min)
def test_curve_points_table_and_plot(lab):
    res = learning_curve(lab["cfg"], [40, 120], seeds=[0], min_steps=40)
    s = res.summary
    assert list(zip(s["method"], s["n"])) == [(m, n) for m in ("ulmfit", "scratch", "tfidf") for n in (40, 120)]
    assert s["accuracy_mean"].between(0, 1).all() and s["macro_f1_mean"].between(0, 1).all()
    assert 0.5 <= res.majority < 1  # the most frequent test label's share: the floor drawn on the plot
    tfidf = s.set_index(["method", "n"])["accuracy_mean"]
    assert tfidf["tfidf", 120] >= 0.9  # a sanity anchor on this easy synthetic task
    for p in res.points:
        assert p.n_train + p.n_valid == p.n
        if p.run_dir:
            assert json.loads((Path(p.run_dir) / "evaluate" / "DONE.json").read_text())["result"]["metrics"]["n"] == 60
    out = lab["dir"] / "run" / "curve"
    point_cfg = (out / "ulmfit" / "n40_seed0" / "config.yaml").read_text()
    assert str(out / "lm_finetune" / "lm_finetune" / "model") in point_cfg  # the LM fine-tuned once, reused
    # N=40: 32 train texts in batches of 8 for >= 40 steps (10 epochs, not the config's 5), for both methods
    for method in ("ulmfit", "scratch"):
        rows = _rows(out / method / "n40_seed0" / "classifier" / "metrics.jsonl")
        assert len(rows) == 10 and load_config(out / method / "n40_seed0" / "config.yaml").classifier.bs == 8
    assert all(p.seconds > 0 for p in res.points if p.method != "tfidf")
    assert _png(out / "curve.png") and len(pd.read_csv(out / "curve_points.csv")) == 6
    assert "ULMFiT minus scratch" in (out / "curve.md").read_text()
    with pytest.raises(DataError, match="exceed"):
        learning_curve(lab["cfg"], [10_000], seeds=[0], methods=("tfidf",))


def test_small_n_overrides():
    cfg = load_config(CONFIGS / "tiny.yaml")  # classifier bs 16, 10 epochs
    assert small_n_overrides(cfg, 1000) == []  # enough steps already: the config as is
    assert small_n_overrides(cfg, 32, min_steps=200) == ["classifier.bs=8", "classifier.epochs=50"]
    assert small_n_overrides(cfg, 96, min_steps=200) == ["classifier.epochs=34"]  # 6 batches of 16
    bs = int(small_n_overrides(cfg, 45)[0].split("=")[1])  # 45 // 4 = 11 would leave a last batch of one
    assert bs < 16 and 45 % bs != 1
    assert small_n_overrides(cfg, 45, min_steps=0) == [f"classifier.bs={bs}"]


@pytest.mark.slow  # a long end-to-end run; `pytest -m slow` runs it (the default suite stays under 15 min)
def test_lab_cli(lab, capsys):
    cfg_file = str(CONFIGS / "tiny.yaml")
    # every run below is already done (the tests above): the CLI finds them and rewrites the tables
    assert main(["probe", cfg_file, *lab["args"], "--encoders", "pretrained,finetuned"]) == 0
    assert len(_json(capsys.readouterr().out)["layers"]) == 6
    assert main(["ablate", cfg_file, *lab["args"], "--variants", "ulmfit,clf_one_cycle,no_lm_finetuning"]) == 0
    table = _json(capsys.readouterr().out)["table"]
    assert [r["variant"] for r in table] == ["ulmfit", "clf_one_cycle", "no_lm_finetuning"]
    assert main(["curve", cfg_file, *lab["args"], "--sizes", "40,120", "--seeds", "0", "--min-steps", "40"]) == 0
    assert len(_json(capsys.readouterr().out)["summary"]) == 6
    proc = run_cli("advise", cfg_file, *lab["args"])  # the real entry point, once
    assert _json(proc.stdout)["recipe"] == "classifier_only" and "Transfer strategy advice" in proc.stderr
    bad = run_cli("ablate", cfg_file, *lab["args"], "--variants", "ulmfit,nope", check=False)
    assert bad.returncode == 2 and "expected a comma-separated list" in bad.stderr


@pytest.mark.slow  # reads back what the probe/ablate/curve tests above wrote (slow too)
def test_read_back_finished_results(lab):
    # every command ran in lab["dir"]/run above; its folder alone gives the same results, without training
    run = lab["dir"] / "run"
    pr = read_probe(run / "probe")
    assert [(p.encoder, p.layer) for p in pr.layers] == [(e, k) for e in ("pretrained", "finetuned") for k in range(3)]
    t = pr.table("test")
    assert t.shape == (3, 2) and list(t.columns) == ["pretrained", "finetuned"]
    assert t.loc["2: lstm 2", "finetuned"] == pr.layers[5].test_accuracy and _png(Path(pr.files["png"]))
    for cfg in (lab["cfg"], _wiki_cfg(lab)):  # written by the default (not slow) advise tests, unless deselected
        if not (Path(cfg.run.dir) / "advise").is_dir():
            advise(cfg)
    adv = read_advice(run / "advise")
    assert adv.recipe == "classifier_only" and adv.measurements.n_labelled == 240 and _png(Path(adv.files["png"]))
    other = read_advice(lab["dir"] / "run_wiki" / "advise")
    assert _png(plot_advice([adv, other], lab["dir"] / "two.png", ["reviews LM", "wiki LM"]))
    ab = read_ablation(run / "ablate")
    assert list(ab.table["variant"]) == ["ulmfit", "clf_one_cycle", "no_lm_finetuning"]
    pd.testing.assert_frame_equal(ab.table, pd.read_csv(run / "ablate" / "ablation.csv"), check_dtype=False)
    assert (ab.table["train_minutes"] > 0).all()  # training time counted although the CLI found every run done
    assert _png(Path(ab.files["png"]))
    cv = read_curve(run / "curve")
    pd.testing.assert_frame_equal(cv.summary, pd.read_csv(run / "curve" / "curve.csv"), check_dtype=False)
    assert "semi-supervised" in cv.definitions["ulmfit"] and cv.gain().index.tolist() == [40, 120]
    # a second curve of ULMFiT alone (e.g. another LM) joins the first one's scratch and TF-IDF points
    only = dataclasses.replace(cv, points=[p for p in cv.points if p.method == "ulmfit"])
    both = merge_curves([cv, only], [{}, {"ulmfit": "ulmfit, other LM"}])
    assert list(dict.fromkeys(both.summary["method"])) == ["ulmfit", "scratch", "tfidf", "ulmfit, other LM"]
    assert both.gain("ulmfit, other LM").tolist() == cv.gain().tolist() and both.n_test == 60
    assert _png(plot_curve(both, lab["dir"] / "both.png"))
    with pytest.raises(FileNotFoundError, match="finished `ulmfit-lab curve`"):
        read_curve(lab["dir"])
