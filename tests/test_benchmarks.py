"""The benchmark scripts run end to end on a tiny fake copy of ../shared/data (CPU, tiny models).

They are what produces the GPU and embedded-LM figures; these tests check that they work before a GPU
session spends its budget on them, and that their JSON holds what the issues ask for.
"""

from __future__ import annotations

import json
import random
import subprocess
import sys
import tarfile

import numpy as np
import pandas as pd
import pytest
from conftest import ROOT
from synth import make_reviews, review

from ulmfit_lab.device import cpu_has_bf16

TINY_MODEL = ["model.emb_sz=16", "model.n_hid=24", "model.n_layers=2", "model.bptt=16", "data.min_freq=1",
              "data.max_vocab=2000", "run.device=cpu"]
# the scripts that default to configs/quickstart.yaml: no pretrained LM (the shipped one has its own sizes)
NO_LM = ["lm_pretrain.source=none"]


def _fake_shared(root):
    """aclImdb.tar.xz (train/test/unsup), WikiText-2 train CSV + valid tokens, CR and Twitter files."""
    rng = random.Random(0)
    imdb = root / "build" / "aclImdb"
    for split, n in (("train", 64), ("test", 40)):
        for lab in ("pos", "neg"):
            (imdb / split / lab).mkdir(parents=True)
            for i in range(n):
                (imdb / split / lab / f"{i}_7.txt").write_text(review(lab, rng, 3))
    (imdb / "train" / "unsup").mkdir()
    for i in range(60):
        (imdb / "train" / "unsup" / f"{i}_0.txt").write_text(review(rng.choice(["pos", "neg"]), rng, 3))
    (root / "imdb").mkdir()
    with tarfile.open(root / "imdb" / "aclImdb.tar.xz", "w:xz") as tar:
        tar.add(imdb, arcname="aclImdb")
    wiki = root / "wikitext-2"
    (wiki / "fastai_wikitext_tiny").mkdir(parents=True)
    paras = [" ".join(review(rng.choice(["pos", "neg"]), rng, 4).split()) for _ in range(120)]
    pd.DataFrame(paras).to_csv(wiki / "fastai_wikitext_tiny" / "train.csv.xz", index=False, header=False)
    (wiki / "wiki.valid.tokens").write_text("\n".join(f" = Title {i} = \n {p}" for i, p in enumerate(paras[:20])))
    (root / "cr").mkdir()
    for lab in ("pos", "neg"):
        (root / "cr" / f"custrev.{lab}").write_text("\n".join(review(lab, rng, 1) for _ in range(60)) + "\n")
    (root / "twitter_us_airline").mkdir()
    tweets = make_reviews(90, seed=3).rename(columns={"label": "airline_sentiment"})
    tweets.loc[::3, "airline_sentiment"] = "neutral"
    neg = tweets.airline_sentiment == "neg"  # a complaint's reason, for negative tweets only (a partial label)
    tweets["negativereason"] = np.where(neg, np.where(tweets.index % 2 == 0, "Late Flight", "Lost Luggage"), None)
    ag = root / "ag_news" / "hf_subset_project-chimera"  # AG News: 2 x 60 official-train articles, 80 test ones
    ag.mkdir(parents=True)
    words = [["minister", "election", "war"], ["match", "goal", "coach"], ["shares", "profit", "bank"],
             ["software", "space", "chip"]]
    for split in ("train", "validation"):
        labels = [i % 4 for i in range(60)]
        pd.DataFrame({"text": [f"{rng.choice(words[y])} news {rng.choice(words[y])} today" for y in labels],
                      "label": labels, "label_text": ""}).to_parquet(ag / f"{split}.parquet")
    pd.DataFrame([(y % 4 + 1, f"{rng.choice(words[y % 4])} report", f"{rng.choice(words[y % 4])}\\ again")
                  for y in range(80)]).to_csv(root / "ag_news" / "test.csv", header=False, index=False)
    tweets.to_csv(root / "twitter_us_airline" / "Tweets.csv", index=False)
    return root


@pytest.fixture(scope="module")
def shared(tmp_path_factory):
    return _fake_shared(tmp_path_factory.mktemp("shared"))


def _bench(script, *args, check=True):
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / script), *args], capture_output=True,
                          text=True, cwd=ROOT)
    if check and proc.returncode != 0:
        raise AssertionError(f"{script} failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return proc


@pytest.mark.slow  # a long end-to-end run; `pytest -m slow` runs it (the default suite stays under 15 min)
def test_imdb_gpu_benchmark_runs_the_recipe_and_times_stock_fastai(shared, tmp_path, cache_dir):
    out, run_dir = tmp_path / "imdb_gpu.json", tmp_path / "run"
    tiny = [*TINY_MODEL, "lm_pretrain.epochs=1", "lm_pretrain.bs=8", "lm_finetune.epochs=1", "lm_finetune.bs=8",
            "classifier.epochs=2", "classifier.bs=16", "classifier.head=[16]", "classifier.max_len=320",
            f"run.cache_dir={cache_dir}"]
    common = ["--shared", str(shared), "--out", str(out), "--run-dir", str(run_dir)]
    _bench("imdb_gpu.py", "run", *common, *tiny)
    res = json.loads(out.read_text())
    stages = res["ulmfit"]
    for s in ("lm", "lm_bwd", "lm_finetune", "lm_finetune_bwd", "classifier", "classifier_bwd", "evaluate"):
        assert stages[s]["done"], s
    ev = stages["evaluate"]["metrics"]
    assert set(ev["per_direction"]) == {"fwd", "bwd"} and 0.0 <= ev["accuracy"] <= 1.0
    assert ev["n"] == 80  # the whole official test split: 40 pos + 40 neg
    assert stages["lm"]["epochs"][-1]["perplexity"] > 1 and stages["lm"]["epochs"][-1]["train_tokens_per_s"] > 0
    assert res["machine"]["torch"] and res["run_calls"][-1]["exit_code"] == 0

    _bench("imdb_gpu.py", "stock", *common, "--batches", "4", "--warmup", "1", *tiny)
    thr = json.loads(out.read_text())["throughput"]
    for kind in ("lm", "classifier"):
        assert thr[kind]["stock_fastai"]["tokens_per_s"] > 0 and thr[kind]["ulmfit_lab"]["tokens_per_s"] > 0
        assert thr[kind]["speedup"] == pytest.approx(
            thr[kind]["ulmfit_lab"]["tokens_per_s"] / thr[kind]["stock_fastai"]["tokens_per_s"], rel=1e-2)
    assert "evaluate" in json.loads(out.read_text())["ulmfit"]  # the run step's results are kept


@pytest.mark.slow  # a long end-to-end run; `pytest -m slow` runs it (the default suite stays under 15 min)
def test_embedded_lm_benchmark_compares_with_tfidf(shared, tmp_path, cache_dir, tiny_run):
    out = tmp_path / "embedded.json"
    tiny = [*TINY_MODEL, "lm_finetune.epochs=1", "lm_finetune.bs=8", "classifier.epochs=2", "classifier.bs=16",
            "classifier.head=[16]", "classifier.max_len_schedule=null", f"run.cache_dir={cache_dir}"]
    _bench("embedded_lm.py", "--shared", str(shared), "--out", str(out), "--datasets", "cr,twitter",
           "--variants", "scratch,embedded", "--lm", str(tiny_run["dir"] / "lm_finetune" / "model"),
           "--n-train", "80", "--run-root", str(tmp_path / "runs"), *tiny)
    cells = json.loads(out.read_text())["results"]
    assert cells["cr"]["n_train"] == 80 and cells["cr"]["n_test"] == 40
    assert cells["twitter"]["classes"] == ["neg", "neutral", "pos"]
    for cell in cells.values():
        assert 0.0 <= cell["tfidf"]["accuracy"] <= 1.0 and 0.0 <= cell["scratch"]["accuracy"] <= 1.0
        assert cell["scratch"]["lm_valid_perplexity"] > 1 and 0.0 <= cell["embedded"]["accuracy"] <= 1.0
    # the transfer curve gathers it: scratch at 0 tokens, the embedded LM at the tokens given, TF-IDF as a line
    _bench("transfer_curve.py", "--point", f"5000={out}", "--scratch", str(out), "--out", str(tmp_path / "curve"))
    curve = json.loads((tmp_path / "curve.json").read_text())["curve"]
    for ds, cell in cells.items():
        assert [(p["tokens"], p["accuracy"]) for p in curve[ds]["points"]] == [
            (0, cell["scratch"]["accuracy"]), (5000, cell["embedded"]["accuracy"])]
        assert curve[ds]["tfidf"] == cell["tfidf"]["accuracy"]
    assert (tmp_path / "curve.png").stat().st_size > 10_000


@pytest.mark.slow  # a long end-to-end run; `pytest -m slow` runs it (the default suite stays under 15 min)
def test_multitask_benchmark_compares_one_model_with_one_per_task(shared, tmp_path, cache_dir):
    out = tmp_path / "multitask.json"
    tiny = [*TINY_MODEL, *NO_LM, "lm_finetune.epochs=1", "lm_finetune.bs=8", "classifier.epochs=1", "classifier.bs=16",
            "classifier.head=[16]", f"run.cache_dir={cache_dir}"]
    _bench("multitask.py", "--data", str(shared / "twitter_us_airline" / "Tweets.csv"), "--n-train", "60",
           "--run-root", str(tmp_path / "runs"), "--out", str(out), *tiny)
    res = json.loads(out.read_text())
    runs, fig, counts = res["runs"], res["figures"], res["counts"]
    assert set(runs) == {"multi_task", "airline_sentiment", "negativereason"} and counts["test"]["rows"] == 30
    assert runs["negativereason"]["n_train"] == counts["train"]["negativereason"] < counts["train"]["rows"]
    for task in ("airline_sentiment", "negativereason"):  # each scored on the test rows labelled for it
        for run in ("multi_task", task):
            s = runs[run]["scores"][task]
            assert s["n"] == counts["test"][task] and 0 <= s["accuracy"] <= 1 and 0 <= s["macro_f1"] <= 1
    single = runs["airline_sentiment"]["train_seconds"] + runs["negativereason"]["train_seconds"]
    assert fig["time_ratio"] == pytest.approx(runs["multi_task"]["train_seconds"] / single, abs=1e-3)
    lm = fig["lm_finetune_seconds"]
    assert lm > 0 and fig["time_ratio_with_shared_lm"] == pytest.approx(
        (lm + runs["multi_task"]["train_seconds"]) / (lm + single), abs=1e-3)
    for run in runs:  # the LM is fine-tuned once; the classifiers start from it, not fine-tuning it again
        summary = json.loads((tmp_path / "runs" / run / "lm_finetune" / "summary.json").read_text())
        assert "valid_perplexity" not in summary and res["lm_finetune"]["valid_perplexity"] > 1
    assert res["machine"]["torch"] and res["command"]


@pytest.mark.slow  # a long end-to-end run; `pytest -m slow` runs it (the default suite stays under 15 min)
def test_multilabel_benchmark_builds_pairs_and_compares_with_tfidf(shared, tmp_path, cache_dir):
    out = tmp_path / "multilabel.json"
    tiny = [*TINY_MODEL, *NO_LM, "lm_finetune.epochs=1", "lm_finetune.bs=8", "classifier.epochs=2", "classifier.bs=16",
            "classifier.head=[16]", f"run.cache_dir={cache_dir}"]
    _bench("multilabel.py", "--data", str(shared / "ag_news"), "--n-train", "50", "--n-test", "40",
           "--run-dir", str(tmp_path / "run"), "--out", str(out), *tiny)
    res = json.loads(out.read_text())
    counts = res["counts"]
    assert counts["train"]["examples"] == 50 and counts["test"]["examples"] == 40
    assert 0 < counts["train"]["two_labels"] < 50  # one or two labels per text
    assert sum(counts["test"]["per_label"].values()) == 40 + counts["test"]["two_labels"]
    for side in ("ulmfit", "tfidf_ovr_lr"):
        r = res["results"][side]
        assert r["n"] == 40 and r["seconds"] > 0 and set(r["per_label"]) == {"World", "Sports", "Business", "Sci/Tech"}
        assert all(0 <= r[k] <= 1 for k in ("micro_f1", "macro_f1", "subset_accuracy"))
    assert res["results"]["tfidf_ovr_lr"]["micro_f1"] > 0.8  # the fake topics are one word apart: easy


@pytest.mark.slow  # a long end-to-end run; `pytest -m slow` runs it (the default suite stays under 15 min)
def test_tokenization_benchmark_checks_fastai_identity(shared, tmp_path):
    out = tmp_path / "tokenize.json"
    _bench("tokenization.py", "--data", str(shared), "--out", str(out), "--workers", "2")
    res = json.loads(out.read_text())
    assert res["docs"] == 268 and res["tokens"] > 0  # every aclImdb text of the fake tree: train, unsup, test
    assert all(res["identical"].values()) and res["token_mismatches"] == []
    for side in ("fastai", "ulmfit_lab", "ulmfit_lab_warm"):
        assert res[side]["seconds"] > 0 and res[side]["peak_rss_mb"] > 0
    assert res["speedup"] == pytest.approx(res["fastai"]["seconds"] / res["ulmfit_lab"]["seconds"], rel=1e-2)
    assert res["machine"]["cores"] and res["machine"]["fastai"]


@pytest.mark.slow  # a long end-to-end run; `pytest -m slow` runs it (the default suite stays under 15 min)
def test_lm_campaign_chains_passes_and_the_speed_benchmark_compares_trainers(shared, tmp_path, cache_dir):
    wiki = shared / "wikitext-2"
    corpus = f"[{wiki / 'fastai_wikitext_tiny' / 'train.csv.xz'},{shared / 'imdb' / 'aclImdb.tar.xz'}#unlabelled]"
    over = [*TINY_MODEL, f"lm_pretrain.corpus={corpus}", f"lm_pretrain.eval_corpus=[{wiki / 'wiki.valid.tokens'}]",
            "lm_pretrain.bs=8", "lm_pretrain.lr=0.01", "lm_pretrain.valid_pct=0.1", "lm_pretrain.softmax_samples=64",
            "run.precision=fp32", f"run.cache_dir={cache_dir}"]
    camp = tmp_path / "campaign"
    _bench("lm_campaign.py", "--dir", str(camp), "--passes", "2", *over)
    curve = json.loads((camp / "curve.json").read_text())
    assert [p["pass"] for p in curve] == [1, 2]
    assert curve[1]["tokens_seen"] == 2 * curve[0]["tokens_seen"] > 0
    assert {"held-out", "eval"} <= {k.split(" ")[0] for k in curve[0]["perplexity"]}  # per source + WikiText valid
    # pass 2 goes on from pass 1's model: it ends better on every held-out source
    assert all(curve[1]["perplexity"][k] < curve[0]["perplexity"][k] for k in curve[0]["perplexity"])
    assert (camp / "curve.png").stat().st_size > 1000
    again = _bench("lm_campaign.py", "--dir", str(camp), "--passes", "2", *over)  # finished passes: skipped
    assert "campaign: ulmfit" not in again.stdout and json.loads((camp / "curve.json").read_text()) == curve

    out = tmp_path / "speed.json"
    _bench("lm_train_speed.py", "--ids", str(camp / "pass1" / "lm" / "ids"), "--tokens", "4000",
           "--valid-tokens", "1500", "--samples", "32", "--init", str(camp / "pass1" / "lm" / "model"),
           "--out", str(out), *TINY_MODEL, "lm_pretrain.bs=8", "run.precision=fp32",
           *(["--bf16"] if cpu_has_bf16() else []))
    res = json.loads(out.read_text())
    assert {r["loss"] for r in res["candidates"]} == {"plain", "fused", "sampled"}
    bf16_rows = [r for r in res["candidates"] if r["precision"] == "bf16"]
    assert [r["bs"] for r in bf16_rows] == ([8, 16, 32] if cpu_has_bf16() else [])
    rows = {r["trainer"].split(" ")[0]: r for r in res["train"]["rows"]}
    assert set(rows) == {"stock", "today", "sampled"}
    for r in rows.values():  # every trainer saw the same tokens and is measured on the same held-out ids
        assert r["tokens_per_s"] > 0 and 1 < r["held_out_perplexity"] < 1e4
        assert r["speedup_vs_stock"] > 0 and r["perplexity_vs_today"] > 0
    assert res["train"]["train_tokens"] >= 4000 and res["init"]


def _active_learning(shared, tmp_path, cache_dir, tiny_run, datasets: str, seeds: str, *extra: str) -> dict:
    out = tmp_path / "al"
    lm = tiny_run["dir"] / "lm_finetune" / "model"  # an LM folder of the tiny config's sizes
    _bench("active_learning.py", str(ROOT / "configs" / "tiny.yaml"), "lm_pretrain.source=pretrained",
           f"lm_pretrain.weights={lm}", "classifier.epochs=2", f"run.cache_dir={cache_dir}", "--shared", str(shared),
           "--datasets", datasets, "--budgets", "8,16,32", "--seeds", seeds, "--pool", "80", "--n-test", "40",
           "--finetune", "--min-steps", "0", "--out", str(out), "--run-root", str(tmp_path / "runs"), *extra)
    res = json.loads((out / "active_learning.json").read_text())
    assert all(r["scored_on"] == ("dev" if "--dev" in extra else "test") for r in res["results"].values())
    assert res["machine"]["torch"] and set(res["results"]) == set(datasets.split(","))
    key = "finetune_class_prior" if "cold-start" in extra else "finetune"  # --class-prior cold-start
    for name, r in res["results"].items():
        s = r["summary"]
        assert s["budgets"] == [8, 16, 32] and set(r["per_seed"]) == set(seeds.split(","))
        for arm in ("random", "suggested"):
            assert all(0 <= a <= 1 for v in r["per_seed"].values() for a in v[arm]["accuracy"])
            run = r[key][arm]["0"]
            assert run["n_train"] + run["n_valid"] == 32
            assert 0 <= run["roc_auc"] <= 1 and sum(run["predicted_share"].values()) == pytest.approx(1, abs=1e-3)
            assert sum(run["train_share"].values()) == pytest.approx(1, abs=1e-3)
            prior = run["class_prior"]  # --class-prior cold-start: the suggested arm's, from its first (random) texts
            if arm == "suggested" and "cold-start" in extra:
                assert set(prior) == set(r["classes"]) and sum(prior.values()) == pytest.approx(1, abs=1e-3)
                assert (tmp_path / "runs" / name / "suggested_prior_seed0").is_dir()
            else:
                assert prior is None
        assert s["margin"] == pytest.approx([a - b for a, b in zip(s["suggested_mean"], s["random_mean"])], abs=2e-4)
        assert s["suggested_ge_random_at_every_budget"] == (min(s["margin"]) >= 0)
        ft = r[key]  # the fine-tunes are paired by seed: margin ± its standard error over the seeds
        assert ft["margin"] == pytest.approx(ft["mean"]["suggested"] - ft["mean"]["random"], abs=1e-4)
        diffs = [ft["suggested"][k]["accuracy"] - ft["random"][k]["accuracy"] for k in ft["random"]]
        assert ft["n_seeds"] == len(diffs) == len(set(seeds.split(",")) & {"0", "1", "2"})
        assert ft["seeds_where_suggested_wins"] == sum(d >= 0 for d in diffs)
        assert (ft["margin_se"] is None) == (len(diffs) == 1)
        auc = ft["roc_auc"]  # threshold-free, paired the same way
        assert auc["margin"] == pytest.approx(np.mean([ft["suggested"][k]["roc_auc"] - ft["random"][k]["roc_auc"]
                                                       for k in ft["random"]]), abs=1e-4)
        if len(diffs) > 1:
            assert ft["margin_se"] == pytest.approx(np.std(diffs, ddof=1) / np.sqrt(len(diffs)), abs=1e-4)
    assert (out / "active_learning.png").stat().st_size > 5000
    return res


@pytest.mark.slow  # a long end-to-end run; `pytest -m slow` runs it (the default suite stays under 15 min)
def test_active_learning_benchmark_runs_both_arms_and_the_final_finetune(shared, tmp_path, cache_dir, tiny_run):
    # one seed: two tiny fine-tunes, the suggested one trained for the class shares of its first (random) texts
    _active_learning(shared, tmp_path, cache_dir, tiny_run, "cr", "0", "--class-prior", "cold-start")


@pytest.mark.slow
def test_active_learning_benchmark_on_both_datasets_and_seeds(shared, tmp_path, cache_dir, tiny_run):
    _active_learning(shared, tmp_path, cache_dir, tiny_run, "cr,imdb", "0,1", "--dev", "--cold-start", "cluster")


@pytest.mark.slow  # a long end-to-end run; `pytest -m slow` runs it (the default suite stays under 15 min)
def test_lm_vocab_benchmark_scores_both_vocabs_on_train_reviews_outside_the_run(shared, tmp_path, cache_dir,
                                                                                tiny_run):
    out, lm = tmp_path / "lm_vocab.json", tiny_run["dir"] / "lm_finetune" / "model"
    # min_freq 100: the 60 texts alone give (almost) only the special tokens; the LM adds its words
    tiny = [*TINY_MODEL, "data.min_freq=100", "data.max_train=60", "lm_pretrain.source=pretrained",
            f"lm_pretrain.weights={lm}", "lm_finetune.bs=8", "classifier.epochs=2", "classifier.bs=16",
            "classifier.head=[16]", "classifier.max_len_schedule=null", f"run.cache_dir={cache_dir}"]
    _bench("lm_vocab.py", "--data", str(shared / "imdb" / "aclImdb.tar.xz"), "--run-dir", str(tmp_path / "runs"),
           "--n-dev", "40", "--out", str(out), *tiny)
    arms = json.loads(out.read_text())["arms"]
    own, union = arms["own"], arms["union"]
    assert own["vocab_from_lm"] == 0 and union["vocab_from_lm"] > 0
    assert union["vocab_size"] > own["vocab_size"] and union["dev_unknown_rate"] < own["dev_unknown_rate"]
    assert own["n_dev"] == union["n_dev"] == 40 and all(0 <= a["dev_accuracy"] <= 1 for a in arms.values())
    # the same finished runs scored by quickstart_dev.py as given folders: the same dev set, the same figures
    again = tmp_path / "dev.json"
    _bench("quickstart_dev.py", "--data", str(shared / "imdb" / "aclImdb.tar.xz"), "--n-dev", "40",
           "--run", f"a={tmp_path / 'runs' / 'own'}", "--run", f"b={tmp_path / 'runs' / 'union'}", "--out", str(again))
    scored = json.loads(again.read_text())["arms"]
    assert [scored[k]["dev_accuracy"] for k in "ab"] == [own["dev_accuracy"], union["dev_accuracy"]]
    assert scored["b"]["dev_unknown_rate"] == union["dev_unknown_rate"]

