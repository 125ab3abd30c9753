"""The pretraining campaign of the embedded LM: one pass of `configs/pretrain_reviews.yaml` after another.

Each pass is an ordinary `ulmfit-lab lm` run in DIR/passK (one STLR cycle over the corpus) that starts from
the previous pass's model (`lm_pretrain.init`); the first from `--init` (e.g. ../shared/lm/reviews-fwd-pass1).
Rerunning the same command goes on where it stopped: finished passes are skipped, an interrupted one resumes
from its last checkpoint (every `run.checkpoint_minutes`). After every pass DIR/curve.json and DIR/curve.png
get the held-out perplexity per source and on WikiText-2's validation split against the tokens seen.

Start it first whenever work begins, niced, in the background, e.g.:
  nohup nice -n 19 .venv/bin/python benchmarks/lm_campaign.py --dir runs/campaign --passes 6 \
      --init ../shared/lm/reviews-fwd-pass1 --init-tokens 17093063 lm_pretrain.softmax_samples=2048 \
      > runs/campaign/campaign.log 2>&1 &
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def pass_result(folder: Path) -> dict | None:
    """The finished `lm` stage of one pass (the result in its DONE.json), or None while it is not finished.

    (A finished pass counts as it is, whatever the overrides now: a campaign keeps one recipe.)
    """
    # the stage folder is `lm`, or `lm_bwd` for a backward campaign (`model.backwards=true`)
    done = next((d for d in (folder / "lm" / "DONE.json", folder / "lm_bwd" / "DONE.json") if d.is_file()), None)
    if done is None:
        return None
    try:
        return json.loads(done.read_text(encoding="utf-8")).get("result")
    except (ValueError, AttributeError):
        return None


def write_curve(out: Path, points: list[dict]) -> None:
    """curve.json and curve.png: perplexity per evaluation set against the tokens seen."""
    (out / "curve.json").write_text(json.dumps(points, indent=2))
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    names = sorted({k for p in points for k in p["perplexity"]})
    for name in names:
        xs = [p["tokens_seen"] / 1e6 for p in points if name in p["perplexity"]]
        ys = [p["perplexity"][name] for p in points if name in p["perplexity"]]
        ax.plot(xs, ys, marker="o", label=name.replace("../shared/data/", ""))
    ax.set_xlabel("pretraining tokens seen (millions)")
    ax.set_ylabel("perplexity")
    ax.set_yscale("log")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    ax.set_title("Embedded LM pretraining campaign")
    fig.tight_layout()
    fig.savefig(out / "curve.png", dpi=120)
    plt.close(fig)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dir", required=True, help="the campaign folder (one sub-folder per pass)")
    ap.add_argument("--passes", type=int, default=6, help="passes to run after --init")
    ap.add_argument("--config", default=str(ROOT / "configs" / "pretrain_reviews.yaml"))
    ap.add_argument("--init", help="the LM folder the first pass starts from (default: random weights)")
    ap.add_argument("--init-tokens", type=int, default=0, help="tokens --init was trained on (for the curve)")
    ap.add_argument("--init-perplexity", default=None,
                    help="JSON {set: perplexity} of --init, for the curve's first point (e.g. from its card)")
    ap.add_argument("overrides", nargs="*", help="config overrides for every pass")
    args = ap.parse_args()
    out = Path(args.dir)
    out.mkdir(parents=True, exist_ok=True)
    points = []
    if args.init and args.init_perplexity:
        points.append({"pass": 0, "dir": args.init, "tokens_seen": args.init_tokens,
                       "perplexity": json.loads(args.init_perplexity)})
    prev, seen = args.init, args.init_tokens
    for k in range(1, args.passes + 1):
        folder = out / f"pass{k}"
        if pass_result(folder) is None:
            cmd = [sys.executable, "-m", "ulmfit_lab.cli", "lm", args.config, f"run.dir={folder}",
                   "run.progress=false", *args.overrides]
            if prev:
                cmd.append(f"lm_pretrain.init={prev}")
            print("campaign:", " ".join(cmd), flush=True)
            rc = subprocess.call(cmd, cwd=ROOT)
            if rc != 0:
                raise SystemExit(f"campaign: pass {k} exited with {rc}; rerun the same command to resume it")
        res = pass_result(folder)
        m = res["metrics"]
        seen += int(m["train_tokens"])
        points.append({"pass": k, "dir": str(folder), "tokens_seen": seen, "perplexity": m["perplexity"],
                       "valid_perplexity": m.get("valid_perplexity")})
        write_curve(out, points)
        print(f"campaign: pass {k} done, {seen:,} tokens seen, perplexity {m['perplexity']}", flush=True)
        prev = str(Path(res["weights"]).resolve())


if __name__ == "__main__":
    main()
