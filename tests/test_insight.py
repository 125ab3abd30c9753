"""The insight commands on real (tiny) models and data: the data report against planted problems, interpretation
(top losses, confusion, integrated gradients, the page rendered in headless Chromium), and suggestions."""

import json
import shutil
import subprocess
from itertools import combinations

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import CONFIGS, call_cli
from synth import make_reviews

from ulmfit_lab.insight import data_report, interpret, near_duplicate_pairs, select, suggest
from ulmfit_lab.insight.interpret import _logits_from_embeddings, attribute, integrated_gradients
from ulmfit_lab.insight.planted import plant_problems, random_reviews, score_report
from ulmfit_lab.insight.report import _WORD, _shingles, normalize
from ulmfit_lab.serving.predict import Predictor
from ulmfit_lab.toy import NEG, POS

# ---------------------------------------------------------------- report


@pytest.fixture(scope="module")
def planted(tmp_path_factory, cache_dir):
    d = tmp_path_factory.mktemp("planted")
    base = random_reviews(700, seed=0)
    p = plant_problems({"train": base[:500], "valid": base[500:600], "test": base[600:]}, seed=1)
    args = [f"run.cache_dir={cache_dir}"]
    for k, v in p.splits.items():
        v.to_csv(d / f"{k}.csv", index=False)
        args.append(f"data.{k}={d / f'{k}.csv'}")
    rep = data_report(CONFIGS / "tiny.yaml", args, out_dir=d / "report")
    return {"planted": p, "report": rep, "dir": d, "args": args}


def test_report_finds_planted_problems(planted):
    scores = score_report(planted["report"].details, planted["planted"])
    print("\ncheck               planted found recall precision")
    for k, s in scores.items():
        print(f"{k:20s} {s['planted']:7d} {s['found']:5d} {s['recall']:6.2f} {s['precision']:9.2f}")
    assert scores["exact_duplicates"]["recall"] == 1.0  # every planted exact duplicate found
    for k in ("exact_duplicates", "exact_leakage", "conflicting_labels", "empty_looking", "other_language"):
        assert scores[k]["recall"] == 1.0 and scores[k]["precision"] == 1.0, k
    for k in ("near_duplicates", "near_leakage"):
        assert scores[k]["recall"] >= 0.9 and scores[k]["precision"] >= 0.9, k
    # flipped labels: cleanlab on cross-validated TF-IDF (conflicting copies, empty and foreign rows count as right)
    assert scores["label_issues"]["recall"] >= 0.7 and scores["label_issues"]["precision"] >= 0.8


def test_report_files_and_every_warning_says_what_to_do(planted):
    rep = planted["report"]
    assert {f.check for f in rep.warnings} >= {"exact_duplicates", "conflicting_labels", "exact_leakage",
                                               "near_duplicates", "near_leakage", "label_issues"}
    assert all(f.action for f in rep.warnings)
    saved = json.loads((planted["dir"] / "report" / "report.json").read_text())
    assert [f["check"] for f in saved["findings"]] == [f.check for f in rep.findings]
    page = (planted["dir"] / "report" / "report.html").read_text()
    assert page.count("What to do:") == sum(bool(f.action) for f in rep.findings)
    assert page.count("data:image/png;base64,") == 2
    rows = pd.read_csv(planted["dir"] / "report" / "report_rows.csv")
    assert set(rows["issue"]) >= {"exact_duplicate", "near_leakage", "label_issue", "other_language"}
    assert not list((planted["dir"] / "report").glob(".*tmp*"))  # atomic writes leave no temporary files
    # the rows point at the texts they name
    train = planted["planted"].splits["train"]
    for r in rows[rows["split"] == "train"].head(20).itertuples():
        assert train["text"].iloc[r.row] == r.text


def test_report_lengths_against_max_len_and_oov(tmp_path, cache_dir, tiny_run):
    df = make_reviews(80, seed=3)
    df.loc[:9, "text"] = [" ".join(["The plot was dull and the ending was clumsy."] * 10)] * 10  # ~110 tokens
    df.loc[:9, "label"] = "neg"
    df.to_csv(tmp_path / "d.csv", index=False)
    lm = tiny_run["dir"] / "lm_finetune" / "model"  # an LM folder whose vocab lacks the word below
    df.loc[10, "text"] = "Zyxwvut qqqq " + df.loc[10, "text"]
    df.to_csv(tmp_path / "d.csv", index=False)
    rep = data_report(tmp_path / "d.csv", ["classifier.max_len=60", f"run.cache_dir={cache_dir}"],
                      out_dir=tmp_path / "r", lm=str(lm))
    length = rep.finding("length")
    assert length.severity == "warning" and "classifier.max_len" in length.action
    assert rep.summary["lengths"]["train"]["max"] > 60 and 0 < rep.summary["lengths"]["train"]["cut_share"] < 0.3
    oov = rep.summary["oov"]
    assert 0 < oov["token_rate"] < 0.05 and "zyxwvut" in [t for t, _ in oov["top_unknown"]]
    # the ten long copies, carved between train and valid: repeats within a split, or valid rows leaked from train
    assert rep.finding("exact_duplicates").count + rep.finding("exact_leakage").count >= 9


def test_near_duplicate_pairs_are_exact_jaccard_and_complete():
    rng = np.random.default_rng(0)
    words = [f"w{i}" for i in range(40)]
    texts = [" ".join(rng.choice(words, 15)) for _ in range(60)]
    texts += [t.replace(t.split()[3], "zz", 1) for t in texts[:20]]  # one word changed
    found = {(i, j): jac for i, j, jac in near_duplicate_pairs(texts, threshold=0.5)}
    sets = [set(_shingles(_WORD.findall(normalize(t)))) for t in texts]
    truth = {(i, j): len(sets[i] & sets[j]) / len(sets[i] | sets[j]) for i, j in combinations(range(len(texts)), 2)}
    want = {k for k, v in truth.items() if v >= 0.5}
    assert set(found) <= want and len(set(found)) >= 0.95 * len(want) and len(want) >= 20
    assert all(abs(found[k] - truth[k]) < 1e-3 for k in found)


def test_report_cli_help_and_one_line_errors(tmp_path, cache_dir, capsys):
    make_reviews(60, seed=4).to_csv(tmp_path / "d.csv", index=False)
    code, out, err = call_cli(capsys, "report", str(tmp_path / "d.csv"), f"run.cache_dir={cache_dir}", "--out",
                          str(tmp_path / "r"))
    assert code == 0 and json.loads(out)["files"]["html"] == str(tmp_path / "r" / "report.html")
    code, out, err = call_cli(capsys, "report", str(tmp_path / "missing.csv"))
    assert code == 2 and err.startswith("ulmfit-lab: error:") and err.count("\n") == 1
    (tmp_path / "bad.csv").write_text("text,label\n\"unclosed,pos\n")
    code, out, err = call_cli(capsys, "report", str(tmp_path / "bad.csv"))
    assert code == 2 and err.startswith("ulmfit-lab: error:") and err.count("\n") == 1
    for cmd in ("report", "interpret", "suggest"):
        code, out, _ = call_cli(capsys, cmd, "--help")
        assert code == 0 and out.startswith(f"usage: ulmfit-lab {cmd}")


# ---------------------------------------------------------------- interpret


@pytest.fixture(scope="module")
def interpreted(tiny_run, tmp_path_factory):
    out = tmp_path_factory.mktemp("interpret")
    res = interpret(tiny_run["dir"], out, split="test", n_attr=4, steps=32,
                    texts=["The acting was wonderful and the story was superb."])
    return {"res": res, "out": out}


def test_interpret_top_losses_confusion_and_per_class(interpreted, tiny_csvs, tiny_run):
    res = interpreted["res"]
    test = pd.read_csv(tiny_csvs["test"])
    proba = Predictor.load(tiny_run["dir"], precision="fp32").predict_proba(test["text"])
    labels = res.metrics["labels"]
    t = res.table
    assert len(t) == len(test) and t["loss"].is_monotonic_decreasing
    expect = -np.log(proba[t["row"], [labels.index(y) for y in test["label"].iloc[t["row"]]]])
    np.testing.assert_allclose(t["loss"], expect, rtol=1e-4, atol=1e-5)
    cm = np.array(res.metrics["confusion_matrix"])
    assert cm.sum() == len(test) and res.per_class["errors"].sum() == cm.sum() - np.trace(cm)
    assert (interpreted["out"] / "confusion_matrix.png").stat().st_size > 2000
    saved = json.loads((interpreted["out"] / "interpret.json").read_text())
    assert len(saved["attributions"]) == 5 and saved["metrics"]["n"] == len(test)


def test_integrated_gradients_add_up_and_point_at_sentiment_words(interpreted, tiny_run):
    pred = Predictor.load(tiny_run["dir"], precision="fp32")
    text = "The acting was wonderful and the story was superb."
    ids = pred.encode([text])[0]
    with torch.no_grad():  # the embedding path computes what the serving path computes
        logits = _logits_from_embeddings(pred.fast, pred.fast.embedding(torch.as_tensor(ids)[None]))
    np.testing.assert_allclose(torch.softmax(logits, -1)[0].numpy(), pred.predict_proba([text])[0], atol=1e-5)
    scores, p_x, p_b = integrated_gradients(pred.fast, ids, pred.labels.index("pos"), steps=64)
    assert abs(scores.sum() - (p_x - p_b)) < 0.02  # completeness
    # explaining "pos" (whatever the tiny model predicts for it): the two sentiment words push towards it most
    a = attribute(pred, ["The acting was wonderful. The story was superb."], targets=["pos"])[0]
    # (punctuation may carry some of it too: a tiny LSTM reads "." as where a sentence's evidence ends)
    words = [t for t, _ in a.top(len(a.tokens)) if t.isalpha()]
    assert a.target == "pos" and set(words[:2]) == {"wonderful", "superb"}, a.top(4)
    for a in interpreted["res"].attributions[:-1]:  # the highest-loss test texts: their top word is a sentiment word
        if a.target == a.label and a.p_target > 0.6:
            assert a.top(1)[0][0] in set(POS) | set(NEG), a.top(3)


def _png_pixels(path):
    import matplotlib.image

    return matplotlib.image.imread(str(path))[..., :3]


def test_interpret_page_renders_in_headless_chromium(interpreted, tmp_path):
    browser = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
    if browser is None:
        pytest.skip("no Chromium on PATH (Debian: apt-get install -y chromium); the page is checked as text only")
    shot = tmp_path / "shot.png"
    subprocess.run([browser, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                    f"--screenshot={shot}", "--window-size=1100,2600",
                    (interpreted["out"] / "interpret.html").resolve().as_uri()],
                   capture_output=True, timeout=120, check=True)
    px = _png_pixels(shot)
    assert px.shape[0] >= 2000 and px.std() > 0.05  # not blank
    assert (px.min(-1) < 0.9).mean() > 0.02  # ink: text, tables, the plot
    green = (px[..., 1] - px[..., 0] > 0.2) & (px[..., 1] - px[..., 2] > 0.1)
    red = (px[..., 0] - px[..., 1] > 0.3) & (px[..., 0] - px[..., 2] > 0.3)
    assert green.sum() > 200 and red.sum() > 50  # highlighted words drawn


def test_interpret_errors(tmp_path, tiny_run, capsys):
    code, _, err = call_cli(capsys, "interpret", str(tmp_path))
    assert code == 2 and err.startswith("ulmfit-lab: error:") and err.count("\n") == 1
    code, _, err = call_cli(capsys, "interpret", str(tiny_run["dir"]), "--n-attr", "-1")
    assert code == 2 and "expected an integer >= 0" in err
    pd.DataFrame({"text": ["a fine film"], "label": ["meh"]}).to_csv(tmp_path / "d.csv", index=False)
    code, _, err = call_cli(capsys, "interpret", str(tiny_run["dir"]), "--data", str(tmp_path / "d.csv"))
    assert code == 2 and "not classes of the model" in err and err.count("\n") == 1


# ---------------------------------------------------------------- suggest


def test_select_prefers_uncertain_texts_spread_over_clusters():
    rng = np.random.default_rng(0)
    centres = rng.normal(0, 10, (5, 8))
    feats = np.concatenate([c + rng.normal(0, 0.5, (60, 8)) for c in centres])
    p = np.full(len(feats), 0.99)
    p[::3] = 0.55  # a third of every cluster is uncertain
    proba = np.stack([p, 1 - p], 1)
    picks = select(feats, 5, proba, seed=0)
    assert len(set(picks.tolist())) == 5 and all(p[i] == 0.55 for i in picks)
    assert len({i // 60 for i in picks}) == 5  # one per cluster, not five from one
    # nothing labelled: a random sample (seeded), never an excluded text
    taken = np.zeros(len(feats), bool)
    taken[:150] = True
    colds = [select(feats, 20, None, seed=s, exclude=taken) for s in range(3)]
    assert all(len(set(c.tolist())) == 20 and c.min() >= 150 for c in colds)
    assert (colds[0] == select(feats, 20, None, seed=0, exclude=taken)).all() and (colds[0] != colds[1]).any()
    done = np.zeros(len(feats), bool)
    done[picks] = True
    assert not set(select(feats, 5, proba, seed=0, exclude=done).tolist()) & set(picks.tolist())


def test_lm_features_are_every_layers_mean_over_the_real_tokens(tiny_run):
    """Against fastai's own forward, one text at a time (no padding): eval mode, padding not counted, all layers."""
    from ulmfit_lab.insight.suggest import lm_features
    from ulmfit_lab.models.checkpoint import load_lm_checkpoint
    from ulmfit_lab.text.vocab import encode, fast_tokenizer, vocab_index

    folder = tiny_run["dir"] / "lm_finetune" / "model"
    texts = ["a great film , loved it", "terrible acting . " * 30, "ok"]  # batched together, so padded
    feats = lm_features(folder, texts)
    model, vocab, _ = load_lm_checkpoint(folder)
    enc = model[0].eval()
    widths = [enc.encoder.embedding_dim] + [r.module.hidden_size for r in enc.rnns]
    assert feats.shape == (3, sum(widths))
    outs: list = []
    enc.encoder_dp.register_forward_hook(lambda m, i, o: outs.append(o))
    for r in enc.rnns:
        r.register_forward_hook(lambda m, i, o: outs.append(o[0]))
    for k, ids in enumerate(encode(fast_tokenizer("en"), vocab_index(vocab), texts)):
        outs.clear()
        enc.reset()
        with torch.no_grad():
            enc(torch.as_tensor(ids)[None])
        np.testing.assert_allclose(feats[k], torch.cat([o[0].mean(0) for o in outs]).numpy(), rtol=1e-4, atol=1e-5)
    assert lm_features(folder, texts, layers="top").shape == (3, 3 * widths[-1])
    with pytest.raises(ValueError, match="expected 'all' or 'top'"):
        lm_features(folder, texts, layers="middle")


def test_suggest_writes_a_csv_ready_to_label(tiny_run, tmp_path, capsys):
    pool = make_reviews(120, seed=9).drop(columns="label")
    pool = pd.concat([pool, pool.head(10)], ignore_index=True)  # repeats are suggested once at most
    pool["id"] = np.arange(len(pool))
    pool.to_csv(tmp_path / "pool.csv", index=False)
    pool.head(30).to_csv(tmp_path / "done.csv", index=False)
    code, printed, _ = call_cli(capsys, "suggest", str(tiny_run["dir"]), str(tmp_path / "pool.csv"), "--n", "12",
                                "--exclude", str(tmp_path / "done.csv"), "-o", str(tmp_path / "next.csv"))
    assert code == 0
    # selected texts are not a random sample: the summary and the JSON beside the CSV say to train with a prior
    advice = json.loads(printed[printed.index("{"):])["advice"]
    assert "not a random sample" in advice and "classifier.class_prior" in advice
    assert json.loads((tmp_path / "next.json").read_text())["advice"] == advice
    out = pd.read_csv(tmp_path / "next.csv", keep_default_na=False)
    assert list(out.columns[:4]) == ["rank", "text", "label", "id"] and (out["label"] == "").all()
    assert len(out) == 12 and out["text"].is_unique and not set(out["text"]) & set(pool.head(30)["text"])
    assert out["uncertainty"].is_monotonic_decreasing
    assert (pool["text"].iloc[out["row"]].values == out["text"].values).all()
    # an LM folder (nothing labelled yet): a random sample, repeats and excluded texts left out
    lm = suggest(tiny_run["dir"] / "lm_finetune" / "model", tmp_path / "pool.csv", n=8, out=tmp_path / "cold.csv",
                 exclude=tmp_path / "done.csv")
    assert len(lm.table) == 8 and "uncertainty" not in lm.table and lm.table["text"].is_unique
    assert lm.advice.startswith("a random sample") and "classifier.class_prior" in lm.advice
    assert not set(lm.table["text"]) & set(pool.head(30)["text"])

def test_suggest_one_line_errors(tiny_run, tmp_path, capsys):
    code, _, err = call_cli(capsys, "suggest", str(tiny_run["dir"]), str(tmp_path / "nope.csv"))
    assert code == 2 and err.startswith("ulmfit-lab: error:") and err.count("\n") == 1
    code, _, err = call_cli(capsys, "suggest", str(tmp_path / "no_model"), str(tmp_path / "nope.csv"))
    assert code == 2 and "model not found" in err and err.count("\n") == 1
    pd.DataFrame({"body": ["x"]}).to_csv(tmp_path / "p.csv", index=False)
    code, _, err = call_cli(capsys, "suggest", str(tiny_run["dir"]), str(tmp_path / "p.csv"))
    assert code == 2 and "--text-column" in err and err.count("\n") == 1
