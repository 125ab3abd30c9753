"""Gather `embedded_lm.py` results into the transfer curve: accuracy at 2,000 labels vs LM pretraining tokens.

Each `--point TOKENS=FILE` is one `embedded_lm.py` result with the `embedded` variant, from an LM that had seen
TOKENS pretraining tokens (several files at the same TOKENS are seeds: their mean is the point). `--scratch FILE`
(the `scratch` variant: no pretrained LM) is the point at 0 tokens. TF-IDF + logistic regression on the same
labels is drawn as a line (its figure does not depend on the LM: the mean over every file given). The bars of
issue 18 are drawn dotted. Writes OUT.json (every figure, per dataset and point) and OUT.png (one panel per
dataset).

Usage:
  python benchmarks/transfer_curve.py --point 17093063=benchmarks/results/embedded_lm/lm-17.1M-seed0.json \
      --point 34186126=benchmarks/results/embedded_lm/lm-34.2M-seed0.json \
      --scratch benchmarks/results/embedded_lm/scratch-seed0.json --out benchmarks/results/embedded_lm_cpu
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np

from ulmfit_lab.fileio import write_json

BARS = {"imdb": 0.87, "twitter": 0.78, "cr": 0.815}  # issue 18: forward LM alone, mean of two seeds


def gather(points: list[tuple[int, Path]], scratch: list[Path]) -> dict:
    """{dataset: {"tfidf": mean, "points": [{"tokens", "accuracy" (mean), "seeds": [...], "files"}]}}."""
    acc: dict = defaultdict(lambda: defaultdict(list))
    tfidf: dict = defaultdict(list)
    files: dict = defaultdict(lambda: defaultdict(list))
    for tokens, path, variant in [(t, p, "embedded") for t, p in points] + [(0, p, "scratch") for p in scratch]:
        res = json.loads(Path(path).read_text())["results"]
        for ds, cell in res.items():
            if variant not in cell:
                sys.exit(f"error: {path} has no {variant!r} result for {ds}: expected an embedded_lm.py result "
                         f"run with --variants {variant}")
            acc[ds][tokens].append(cell[variant]["accuracy"])
            files[ds][tokens].append(str(path))
            tfidf[ds].append(cell["tfidf"]["accuracy"])
    return {ds: {"tfidf": float(np.mean(tfidf[ds])), "bar": BARS.get(ds),
                 "points": [{"tokens": t, "accuracy": float(np.mean(a)), "seeds": a, "files": files[ds][t]}
                            for t, a in sorted(acc[ds].items())]}
            for ds in sorted(acc)}


def plot(curve: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(curve), figsize=(4.2 * len(curve), 3.8), squeeze=False)
    for ax, (ds, c) in zip(axes[0], curve.items()):
        xs = [p["tokens"] / 1e6 for p in c["points"]]
        ax.plot(xs, [100 * p["accuracy"] for p in c["points"]], marker="o", label="ULMFiT (embedded LM)")
        ax.axhline(100 * c["tfidf"], color="gray", ls="--", label="TF-IDF + LR")
        if c["bar"]:
            ax.axhline(100 * c["bar"], color="green", ls=":", label="bar (issue 18)")
        ax.set_title(f"{ds} (2,000 labels)")
        ax.set_xlabel("LM pretraining tokens (millions; 0 = scratch)")
        ax.set_ylabel("test accuracy (%)")
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--point", action="append", default=[], help="TOKENS=FILE (repeatable)")
    ap.add_argument("--scratch", action="append", default=[], help="an embedded_lm.py result of --variants scratch")
    ap.add_argument("--out", required=True, help="OUT.json and OUT.png are written")
    args = ap.parse_args()
    points = []
    for spec in args.point:
        tokens, sep, path = spec.partition("=")
        if not sep or not tokens.isdigit():
            sys.exit(f"error: --point is TOKENS=FILE with TOKENS an integer, found {spec!r}")
        points.append((int(tokens), Path(path)))
    curve = gather(points, [Path(p) for p in args.scratch])
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    write_json(out.with_suffix(".json"), {"benchmark": "transfer_curve", "curve": curve})
    plot(curve, out.with_suffix(".png"))
    for ds, c in curve.items():
        print(ds, f"tfidf {c['tfidf']:.4f}", [(p["tokens"], round(p["accuracy"], 4)) for p in c["points"]])


if __name__ == "__main__":
    main()
