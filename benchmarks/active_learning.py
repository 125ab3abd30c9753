"""Simulated labelling: does `ulmfit-lab suggest` pick better texts to label than chance?

For each dataset a pool of texts plays the unlabelled data (its labels hidden until a text is "labelled") and a
fixed test set scores every step. Each seed runs two arms from nothing labelled up to the last budget:
  random     the next texts drawn at random from the pool (nested: the 100 contain the 50);
  suggested  what `ulmfit-lab suggest` picks: with nothing labelled a random sample, here the random arm's own
             first draw (the same texts at the first budget pair the arms), then each next batch by
             `ulmfit_lab.insight.select` (margin uncertainty of the current model, uncertainty-weighted k-means
             over the encoder features). `--cold-start centre|cluster`: k-means cold starts instead (the earlier
             rule: the text nearest each centre; or one random text per cluster), for comparison.
Between rounds the model is refitted cheaply: a logistic regression (standardised features, C=`C`) on the frozen
encoder's features (`lm_features`: the mean of every layer of the pretrained LM, embedding and each LSTM; with
--layers top the old [last, max, mean] of its top layer; computed once for pool and test).
Test accuracy is recorded at every budget for both arms. With --finetune, the texts each arm labelled at the
last budget then train the full ULMFiT classifier once per seed of --finetune-seeds (the config's recipe;
`data.valid_pct` of them validate), tested on the same test set; `--class-prior cold-start` trains the
suggested arm's classifier for the class shares of its first budget (`classifier.class_prior`: its only texts
drawn at random; the selected ones are nearer balance than the pool), as `suggest`'s advice says. Each fine-tune
also records the share of test texts predicted per class and, for two classes, ROC AUC. The cheap refits cost
seconds, so they run over more seeds (--seeds) than the fine-tunes: one budget's margin between two arms has a
standard error of about a point over 3 seeds, as large as the effect measured.

Usage:
  python benchmarks/active_learning.py --shared ../shared/data --datasets cr,imdb --budgets 50,100,200,400 \
      --seeds 0,1,2,3,4,5,6,7,8,9 --finetune --finetune-seeds 0,1,2 --out benchmarks/results/active_learning \
      CONFIG [override ...]
Writes OUT/active_learning.json (machine, data, every accuracy, means, margins) and OUT/active_learning.png.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

from ulmfit_lab import load_config
from ulmfit_lab.config import Config, DataConfig
from ulmfit_lab.data.sources import LABEL, TEXT, LabelledData, _carve, read_source
from ulmfit_lab.fileio import write_json
from ulmfit_lab.insight.suggest import kmeans_clusters, lm_features, select
from ulmfit_lab.logs import show_progress
from ulmfit_lab.stages.common import default_cache_dir

sys.path.insert(0, str(Path(__file__).resolve().parent))
from quickstart import ROOT, machine  # noqa: E402

C = 0.1  # L2 strength of the cheap refit: 768 standardised features and 50-400 labels need strong shrinkage


def load_dataset(name: str, shared: Path, pool: int, n_test: int, cache: Path, seed: int = 0, dev: bool = False
                 ) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(pool, test) with columns text, label. IMDb: `pool` random train reviews, `n_test` random test reviews;
    CR: one random permutation, `n_test` sentences to test and up to `pool` of the rest to the pool.

    `dev`: choices are made here, never on test. The same pool draw, scored on texts outside it and outside the
    test set: IMDb `n_test` other train reviews; CR the pool's last third (the pool keeps its first two thirds).
    """
    rng = np.random.default_rng(seed)
    if name == "imdb":
        parts = read_source(str(shared / "imdb" / "aclImdb.tar.xz"), DataConfig(), cache)
        tr, te = parts["train"], parts["test"]
        pidx = rng.choice(len(tr), min(pool, len(tr)), replace=False)
        if dev:
            rest = np.setdiff1d(np.arange(len(tr)), pidx)
            didx = np.random.default_rng(seed + 1).choice(rest, min(n_test, len(rest)), replace=False)
            return tr.iloc[pidx].reset_index(drop=True), tr.iloc[didx].reset_index(drop=True)
        return (tr.iloc[pidx].reset_index(drop=True),
                te.iloc[rng.choice(len(te), min(n_test, len(te)), replace=False)].reset_index(drop=True))
    if name == "cr":
        rows = [(line.strip(), lab) for lab in ("pos", "neg")
                for line in (shared / "cr" / f"custrev.{lab}").read_text(encoding="utf-8").splitlines() if line.strip()]
        df = pd.DataFrame(rows, columns=[TEXT, LABEL])
        idx = rng.permutation(len(df))
        n_test = min(n_test, len(df) // 3)
        pool_df = df.iloc[idx[n_test:n_test + pool]].reset_index(drop=True)
        if dev:
            cut = 2 * len(pool_df) // 3
            return pool_df.iloc[:cut].reset_index(drop=True), pool_df.iloc[cut:].reset_index(drop=True)
        return pool_df, df.iloc[idx[:n_test]].reset_index(drop=True)
    raise SystemExit(f"unknown dataset {name!r}: expected imdb or cr")


def token_stats(lm: Path, texts: list[str], max_len: int) -> dict:
    """What the LM reads of the pool: tokens per text, the share of unknown tokens (xxunk: a wrong vocab would
    show here) and of texts longer than `max_len` (only their last `max_len` tokens are pooled)."""
    from ulmfit_lab.models.artifact import read_checkpoint_meta
    from ulmfit_lab.text.vocab import UNK, encode, fast_tokenizer, vocab_index

    ids = encode(fast_tokenizer("en"), vocab_index(read_checkpoint_meta(lm)[1]), texts)
    lens = np.array([len(x) for x in ids])
    return {"mean": round(float(lens.mean()), 1), "unknown_share": round(float((np.concatenate(ids) == UNK).mean()), 4),
            "over_max_len_share": round(float((lens > max_len).mean()), 4)}


def refit(x: np.ndarray, y: np.ndarray, classes: list) -> object:
    """The cheap refit: standardised features + L2 logistic regression (one class only: predict it)."""
    from sklearn.dummy import DummyClassifier
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    if len(set(y)) < 2:
        return DummyClassifier(strategy="most_frequent").fit(x, y)
    return make_pipeline(StandardScaler(), LogisticRegression(C=C, max_iter=3000)).fit(x, y)


def proba_all(model, x: np.ndarray, classes: list) -> np.ndarray:
    """Probabilities in `classes` order (a model that saw fewer classes gets 0 for the others)."""
    p = model.predict_proba(x)
    out = np.zeros((len(x), len(classes)))
    for j, c in enumerate(model.classes_):
        out[:, classes.index(c)] = p[:, j]
    return out


def kmeans_picks(feats: np.ndarray, n: int, seed: int, member: str) -> np.ndarray:
    """The k-means cold starts, not adopted (`--cold-start`): from each of `n` k-means clusters of the pool (the
    clustering `select` uses) the text nearest its centre (`centre`, the earlier rule) or a random one (`cluster`)."""
    rng = np.random.default_rng(seed)
    labels, dist = kmeans_clusters(feats, n, seed)
    groups = [np.flatnonzero(labels == c) for c in range(n)]
    return np.array([g[np.argmin(dist[g])] if member == "centre" else rng.choice(g) for g in groups if len(g)],
                    dtype=np.int64)


def simulate(feats: np.ndarray, y: np.ndarray, test_x: np.ndarray, test_y: np.ndarray, budgets: list[int],
             seed: int, cold_start: str = "random") -> dict:
    """Both arms for one seed: {arm: {"accuracy": [per budget], "picked": [pool rows at the last budget]}}.

    `cold_start`: the suggested arm's first budget, `random` (what `suggest` does with nothing labelled: the
    random arm's own draw) or a k-means cold start (`centre`, `cluster`: see `kmeans_picks`).
    """
    from threadpoolctl import threadpool_limits

    classes = sorted(set(y.tolist()))
    rng = np.random.default_rng(seed)
    out = {}
    with threadpool_limits(limits=1, user_api="blas"):  # small fits: spinning BLAS threads only slow them down
        perm = rng.permutation(len(y))
        acc = []
        for b in budgets:
            m = refit(feats[perm[:b]], y[perm[:b]], classes)
            acc.append(float((m.predict(test_x) == test_y).mean()))
        out["random"] = {"accuracy": acc, "picked": perm[:budgets[-1]].tolist()}
        labelled = np.zeros(len(y), dtype=bool)
        acc, model = [], None
        for b in budgets:
            proba = None if model is None else proba_all(model, feats, classes)
            if model is None and cold_start == "random":
                labelled[perm[:b]] = True
            elif model is None:
                labelled[kmeans_picks(feats, b, seed, cold_start)] = True
            else:
                labelled[select(feats, b - int(labelled.sum()), proba, seed=seed, exclude=labelled)] = True
            model = refit(feats[labelled], y[labelled], classes)
            acc.append(float((model.predict(test_x) == test_y).mean()))
        out["suggested"] = {"accuracy": acc, "picked": np.flatnonzero(labelled).tolist()}
    return out


def finetune(cfg: Config, pool: pd.DataFrame, test: pd.DataFrame, rows: list[int], run_dir: Path, seed: int,
             min_steps: int) -> dict:
    """The full ULMFiT classifier on the pool rows an arm labelled (at least `min_steps` optimizer steps, as
    `ulmfit-lab curve` trains small N); test accuracy."""
    from ulmfit_lab.lab.common import run_variant
    from ulmfit_lab.lab.curve import small_n_overrides

    tr, va = _carve(pool.iloc[rows].reset_index(drop=True), cfg.data.valid_pct, seed)
    res = run_variant(cfg, [f"run.seed={seed}", *small_n_overrides(cfg, len(tr), min_steps)], run_dir,
                      data=LabelledData(tr, va, test, []))
    return {"accuracy": res.eval_accuracy, "macro_f1": res.eval_macro_f1, "valid_accuracy": res.valid_accuracy,
            **ranking(Path(res.run_dir) / "evaluate" / "predictions.csv"), "n_train": len(tr), "n_valid": len(va),
            "train_share": shares(tr[LABEL]), "seconds": res.seconds, "run_dir": res.run_dir}


def shares(labels: pd.Series) -> dict[str, float]:
    """{class: its share of `labels`}, classes in sorted order."""
    return {str(k): round(float(v), 4) for k, v in labels.astype(str).value_counts(normalize=True).sort_index().items()}


def ranking(predictions: Path) -> dict:
    """What accuracy alone hides: the share of test texts predicted as each class and, for two classes, the
    ROC AUC (threshold-free: how well the classifier ranks the texts, apart from where its 0.5 cut falls)."""
    from sklearn.metrics import roc_auc_score

    df = pd.read_csv(predictions)
    out = {"predicted_share": shares(df["prediction"])}
    cols = [c for c in df.columns if c.startswith("proba_")]
    if len(cols) == 2 and df["label"].nunique() == 2:
        pos = cols[1][len("proba_"):]
        out["roc_auc"] = round(float(roc_auc_score(df["label"].astype(str) == pos, df[cols[1]])), 4)
    return out


def cold_start_prior(labels: np.ndarray, classes: list) -> dict[str, float]:
    """The class shares of the first budget's texts (a random sample: the only labels drawn at random in the
    suggested arm), add-one smoothed so that a class the sample missed keeps a share."""
    counts = np.array([(labels == c).sum() for c in classes], dtype=np.float64) + 1
    return {str(c): round(float(v), 4) for c, v in zip(classes, counts / counts.sum())}


def summarize(per_seed: dict[int, dict], budgets: list[int]) -> dict:
    arms = {arm: np.array([per_seed[s][arm]["accuracy"] for s in per_seed]) for arm in ("random", "suggested")}
    diff = arms["suggested"] - arms["random"]  # paired by seed
    margin = diff.mean(0)
    return {"budgets": budgets,
            "margin_se": (diff.std(0, ddof=1) / np.sqrt(len(diff))).round(4).tolist() if len(diff) > 1 else None,
            **{f"{arm}_mean": a.mean(0).round(4).tolist() for arm, a in arms.items()},
            **{f"{arm}_std": a.std(0).round(4).tolist() for arm, a in arms.items()},
            "margin": margin.round(4).tolist(), "min_margin": float(margin.min().round(4)),
            "suggested_ge_random_at_every_budget": bool((margin >= 0).all()),
            "seeds_where_suggested_wins": [int((arms["suggested"][:, k] >= arms["random"][:, k]).sum())
                                           for k in range(len(budgets))]}


def summarize_finetune(ft: dict[str, dict[str, dict]]) -> dict:
    """Mean test accuracy of each arm's fine-tunes and the margin paired by seed (± its standard error)."""
    seeds = sorted(set(ft["random"]) & set(ft["suggested"]), key=int)
    if not seeds:  # one arm fine-tuned (--finetune-arms): nothing to pair yet
        return {"n_seeds": 0}
    acc = {arm: np.array([ft[arm][s]["accuracy"] for s in seeds]) for arm in ("random", "suggested")}
    diff = acc["suggested"] - acc["random"]  # paired by seed, as `summarize` derives the refit margin
    out = {"mean": {arm: float(a.mean()) for arm, a in acc.items()}, "margin": round(float(diff.mean()), 4),
           "margin_se": _se(diff), "seeds_where_suggested_wins": int((diff >= 0).sum()), "n_seeds": len(seeds)}
    if all("roc_auc" in ft[arm][s] for arm in acc for s in seeds):  # the same, threshold-free
        auc = {arm: np.array([ft[arm][s]["roc_auc"] for s in seeds]) for arm in acc}
        d = auc["suggested"] - auc["random"]
        out["roc_auc"] = {"mean": {arm: round(float(a.mean()), 4) for arm, a in auc.items()},
                          "margin": round(float(d.mean()), 4), "margin_se": _se(d)}
    return out


def _se(diff: np.ndarray) -> float | None:
    """Standard error of a mean of paired differences (None for one pair)."""
    return round(float(diff.std(ddof=1) / np.sqrt(len(diff))), 4) if len(diff) > 1 else None


def plot(results: dict, path: Path) -> None:
    from ulmfit_lab.plots import _plt

    plt = _plt()
    fig, axes = plt.subplots(1, len(results), figsize=(5.5 * len(results), 4), squeeze=False)
    for ax, (name, r) in zip(axes[0], results.items()):
        s = r["summary"]
        b = np.array(s["budgets"])
        for arm, color in (("random", "tab:grey"), ("suggested", "tab:blue")):
            m, sd = np.array(s[f"{arm}_mean"]), np.array(s[f"{arm}_std"])
            ax.plot(b, m, marker="o", color=color, label=f"{arm} (frozen encoder + logistic head)")
            ax.fill_between(b, m - sd, m + sd, color=color, alpha=0.15)
        plain, prior = r.get("finetune") or {}, r.get("finetune_class_prior") or {}
        fts = [plain.get("random") or prior.get("random"), plain.get("suggested"), prior.get("suggested")]
        for runs, x, color, what in zip(fts, (0.94, 1.06, 1.12), ("tab:grey", "tab:blue", "tab:green"),
                                        ("random", "suggested", "suggested, classifier.class_prior")):
            if runs:
                accs = [v["accuracy"] for v in runs.values()]
                ax.errorbar([b[-1] * x], [np.mean(accs)], yerr=[np.std(accs)], marker="*", ms=12, color=color,
                            ls="none", label=f"{what}: full ULMFiT fine-tune at {b[-1]}")
        ax.set_xscale("log")
        ax.minorticks_off()  # only the budgets as ticks
        ax.set_xticks(b, [str(x) for x in b])
        ax.set_xlabel("labelled texts")
        ax.set_ylabel("test accuracy")
        scored = r.get("scored_on", "test")
        ax.set_title(f"{name}: pool {r['pool']}, {scored} {r['n_test']}, {len(r['per_seed'])} seeds")
        ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    from ulmfit_lab.insight.html import atomic_png

    with atomic_png(path) as tmp:
        fig.savefig(tmp, dpi=100)
    plt.close(fig)


def main() -> None:
    show_progress()  # the library's [ulmfit-lab] progress lines, as the command line prints them
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("config", help="the ULMFiT recipe (its pretrained LM gives the features; --finetune trains it)")
    ap.add_argument("overrides", nargs="*", help="dotted config overrides")
    ap.add_argument("--shared", default=str(ROOT.parent / "shared" / "data"), help="the shared data folder")
    ap.add_argument("--datasets", default="cr,imdb", help="comma-separated: cr, imdb")
    ap.add_argument("--budgets", default="50,100,200,400", help="labelled texts at each step")
    ap.add_argument("--seeds", default="0,1,2,3,4,5,6,7,8,9", help="seeds of the cheap-refit simulation")
    ap.add_argument("--finetune-seeds", default="0,1,2", help="seeds (of --seeds) whose last budget is fine-tuned")
    ap.add_argument("--pool", type=int, default=5000, help="pool texts per dataset (at most)")
    ap.add_argument("--n-test", type=int, default=2000, help="test texts per dataset (at most; CR: a third)")
    ap.add_argument("--layers", choices=("all", "top"), default="all", help="LM features: mean of every layer "
                    "(the library's default) or [last, max, mean] of the top layer")
    ap.add_argument("--dev", action="store_true", help="score on a dev split (texts outside the pool and the "
                    "test set), for choices; never choose on the test set")
    ap.add_argument("--cold-start", choices=("random", "centre", "cluster"), default="random",
                    help="the suggested arm's first budget: random (what `suggest` does with nothing labelled: "
                    "the random arm's draw), or k-means centres / one random text per cluster, for comparison")
    ap.add_argument("--finetune", action="store_true", help="train the full classifier on each arm's last budget")
    ap.add_argument("--min-steps", type=int, default=200, help="fine-tuning: at least this many optimizer steps "
                    "(smaller batches, more epochs for a small N; 0: the config's as is)")
    ap.add_argument("--finetune-arms", default="random,suggested", choices=("random,suggested", "random", "suggested"),
                    help="the arms to fine-tune (one alone: to add to the other's runs of an earlier result file)")
    ap.add_argument("--class-prior", choices=("none", "cold-start"), default="none",
                    help="fine-tuning the suggested arm: `cold-start` trains it for the class shares of its first "
                    "(random) budget (`classifier.class_prior`): selected texts are nearer balance than the data")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "active_learning"))
    ap.add_argument("--run-root", default="runs/active_learning", help="where the fine-tuning runs go")
    args = ap.parse_args()
    if args.class_prior == "cold-start" and args.cold_start != "random":
        raise SystemExit("--class-prior cold-start: the prior comes from the suggested arm's first texts as a random "
                         f"sample; with --cold-start {args.cold_start} they are not one. Use --cold-start random")
    budgets = sorted(int(x) for x in args.budgets.split(","))
    seeds = [int(x) for x in args.seeds.split(",")]
    cfg = load_config(args.config, args.overrides)
    if cfg.lm_pretrain.source != "pretrained" or not cfg.lm_pretrain.weights:
        raise SystemExit("the features come from the pretrained LM: set lm_pretrain.source=pretrained "
                         "lm_pretrain.weights=NAME_OR_FOLDER")
    from ulmfit_lab.models.hub import resolve_lm

    cache = Path(cfg.run.cache_dir) if cfg.run.cache_dir else default_cache_dir()
    lm = resolve_lm(cfg.lm_pretrain.weights, cache, cfg.lm_pretrain.sha256)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    json_path = out / "active_learning.json"
    results = json.loads(json_path.read_text()).get("results", {}) if json_path.is_file() else {}
    for name in args.datasets.split(","):
        t0 = time.time()
        pool, test = load_dataset(name, Path(args.shared), args.pool, args.n_test, cache, dev=args.dev)
        if budgets[-1] > len(pool):
            raise SystemExit(f"{name}: budget {budgets[-1]} exceeds the pool of {len(pool)} texts")
        print(f"[active] {name}: pool {len(pool)}, test {len(test)}; encoding with {lm}", flush=True)
        feats = lm_features(lm, pool[TEXT].tolist(), max_len=cfg.classifier.max_len, layers=args.layers)
        test_x = lm_features(lm, test[TEXT].tolist(), max_len=cfg.classifier.max_len, layers=args.layers)
        t_feat = time.time() - t0
        y, test_y = pool[LABEL].astype(str).to_numpy(), test[LABEL].astype(str).to_numpy()
        per_seed = {}
        for seed in seeds:
            per_seed[seed] = simulate(feats, y, test_x, test_y, budgets, seed, args.cold_start)
            print(f"[active] {name} seed {seed}: random {per_seed[seed]['random']['accuracy']}, suggested "
                  f"{per_seed[seed]['suggested']['accuracy']}", flush=True)
        t_sim = time.time() - t0 - t_feat
        r = {"pool": len(pool), "n_test": len(test), "scored_on": "dev" if args.dev else "test",
             "classes": sorted(set(y.tolist())),
             "test_majority": float(pd.Series(test_y).value_counts(normalize=True).iloc[0]),
             "feature_dim": int(feats.shape[1]), "tokens": token_stats(lm, pool[TEXT].tolist(), cfg.classifier.max_len),
             "per_seed": {str(s): {a: {"accuracy": v[a]["accuracy"]}
                                                                      for a in v} for s, v in per_seed.items()},
             "summary": summarize(per_seed, budgets), "seconds": {"features": round(t_feat, 1),
                                                                  "simulation": round(t_sim, 1)}}
        if args.finetune:
            ft: dict[str, dict] = {"random": {}, "suggested": {}}
            for seed in [s for s in (int(x) for x in args.finetune_seeds.split(",")) if s in per_seed]:
                for arm in args.finetune_arms.split(","):
                    prior = None
                    if arm == "suggested" and args.class_prior == "cold-start":
                        prior = cold_start_prior(y[per_seed[seed]["random"]["picked"][:budgets[0]]], r["classes"])
                    c = cfg if prior is None else cfg.replace(f"classifier.class_prior={json.dumps(prior)}")
                    tag = f"{arm}_prior" if prior is not None else arm
                    ft[arm][str(seed)] = finetune(c, pool, test, per_seed[seed][arm]["picked"],
                                                  Path(args.run_root) / name / f"{tag}_seed{seed}", seed,
                                                  args.min_steps)
                    ft[arm][str(seed)]["class_prior"] = prior
                    print(f"[active] {name} seed {seed} {arm}: full fine-tune test accuracy "
                          f"{ft[arm][str(seed)]['accuracy']:.4f}", flush=True)
            # the suggested arm trained for its cold start's class shares is another result than the plain one
            r["finetune" if args.class_prior == "none" else "finetune_class_prior"] = {**ft, **summarize_finetune(ft)}
        r["command"] = " ".join(sys.argv)
        results[name] = r
        write_json(json_path, {
            "what": "simulated labelling: suggested (uncertainty + diversity) vs random texts, accuracy per budget",
            "method": {"refit": f"StandardScaler + LogisticRegression(C={C}) on frozen LM features", "lm": str(lm),
                       "features": ("mean of every layer (embedding and each LSTM)" if args.layers == "all" else
                                    "[last, max, mean] pooling of the LM's top LSTM layer")
                                   + f" over the last {cfg.classifier.max_len} tokens",
                       "select": f"first budget: {args.cold_start} (random: the random arm's draw); then margin "
                                 "uncertainty, top 10n, uncertainty-weighted k-means, nearest to centre",
                       "seeds": seeds, "cold_start": args.cold_start,
                       "scored_on": "dev split (outside pool and test)" if args.dev else "test",
                       "finetune": "the config's classifier on the last budget's texts" if args.finetune else None,
                       "class_prior": args.class_prior if args.finetune else None},
            "command": " ".join(sys.argv), "machine": machine(), "results": results})
        plot(results, out / "active_learning.png")
    print(json.dumps({k: v["summary"] for k, v in results.items()}, indent=1))


if __name__ == "__main__":
    main()
