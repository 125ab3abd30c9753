"""How similar is each dataset to a pretrained LM's corpus? Its perplexity on each (over its own held-out
perplexity) and the share of tokens outside its vocab: the figures behind the thresholds in
ulmfit_lab/lab/advise.py.

Usage: python benchmarks/lab_calibration.py configs/lab_cr.yaml --data runs/lab_data \
           --wiki ../shared/data/wikitext-2/wiki.valid.tokens --out benchmarks/results/lab_cr/advise_calibration.csv
(The config's LM is pretrained first if its run has not done it yet.)
"""

from __future__ import annotations

import argparse
from pathlib import Path

import pandas as pd

from ulmfit_lab import load_config, run_pipeline
from ulmfit_lab.data.sources import read_corpus
from ulmfit_lab.lab.advise import MAX_SIMILAR_OOV, MAX_SIMILAR_PPL_RATIO, load_lm, own_perplexity, similarity
from ulmfit_lab.lab.common import markdown_table
from ulmfit_lab.logs import show_progress
from ulmfit_lab.stages.common import default_cache_dir
from ulmfit_lab.text.vocab import tokenize

SETS = ["cr", "uci", "mpqa", "tweets", "agnews", "trec"]


def main() -> None:
    show_progress()  # the library's [ulmfit-lab] progress lines, as the command line prints them
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("config")
    ap.add_argument("overrides", nargs="*")
    ap.add_argument("--data", default="runs/lab_data", help="folder of CSVs from benchmarks/lab_data.py")
    ap.add_argument("--wiki", default="../shared/data/wikitext-2/wiki.valid.tokens", help="the LM corpus' own domain")
    ap.add_argument("--max-tokens", type=int, default=100_000)
    ap.add_argument("--out", default="benchmarks/results/lab_cr/advise_calibration.csv")
    args = ap.parse_args()
    cfg = load_config(args.config, args.overrides)
    lm = run_pipeline(cfg, until="lm").lm
    model, vocab = load_lm(lm, cfg)
    own = own_perplexity(lm)
    cache = Path(cfg.run.cache_dir) if cfg.run.cache_dir else default_cache_dir()
    texts = {"wikitext-2 valid": read_corpus([args.wiki], cfg.data, cache)[args.wiki]}
    texts.update({name: pd.read_csv(Path(args.data) / f"{name}.csv")["text"].astype(str).tolist() for name in SETS})
    rows = []
    for name, docs in texts.items():
        toks = tokenize(docs, cfg.data.lang, cache, desc=f"Tokenizing {name}")["tokens"]
        sim = similarity(model, vocab, toks, cfg, max_tokens=args.max_tokens)
        ratio = sim["perplexity"] / own
        rows.append({"dataset": name, "docs": len(docs), "tokens_measured": sim["tokens"],
                     "perplexity": round(sim["perplexity"], 1), "perplexity_ratio": round(ratio, 2),
                     "oov_token_rate": round(sim["oov_token_rate"], 4),
                     "similar": ratio <= MAX_SIMILAR_PPL_RATIO and sim["oov_token_rate"] <= MAX_SIMILAR_OOV})
        print(rows[-1], flush=True)
    df = pd.DataFrame(rows)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    df.to_csv(out, index=False)
    out.with_suffix(".md").write_text(
        f"# Similarity to the pretrained LM's corpus\n\nLM: {lm.weights} (own held-out perplexity {own:.1f}). "
        f"Similar: perplexity ratio <= {MAX_SIMILAR_PPL_RATIO} and token OOV <= {MAX_SIMILAR_OOV:.0%}.\n\n"
        + markdown_table(df, "{:.4g}"))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
