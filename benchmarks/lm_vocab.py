"""Does `data.lm_vocab` (the pretrained LM's words appended to the texts' vocab) help the quickstart?

Both arms run `configs/quickstart.yaml` (the shipped LM) on the same 2,000 IMDb train reviews, up to the
classifier; each is scored on a DEV set: `--n-dev` IMDb *train* reviews outside the quickstart's train and
validation texts (never the test split: this chooses a default). Also reported: the share of dev tokens that
are `xxunk` in each arm's vocab, and each stage's training seconds (compare them only within one quiet run).
A finished run directory is reused (its stages are skipped when their keys match). The harness is
`quickstart_dev.py`'s, with these two arms.

Usage:
  python benchmarks/lm_vocab.py --data ../shared/data/imdb/aclImdb.tar.xz --run-dir runs/vab \
      --out benchmarks/results/lm_vocab_cpu.json [override ...]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ulmfit_lab.fileio import write_json
from ulmfit_lab.logs import show_progress

sys.path.insert(0, str(Path(__file__).resolve().parent))
from quickstart import ROOT, machine  # noqa: E402
from quickstart_dev import compare  # noqa: E402

ARMS = {"own": "data.lm_vocab=false", "union": "data.lm_vocab=true"}


def main() -> None:
    show_progress()
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", required=True, help="aclImdb folder or .tar.gz/.tar.xz")
    ap.add_argument("--run-dir", default="runs/bench_lm_vocab", help="one sub-folder per arm")
    ap.add_argument("--n-dev", type=int, default=2000)
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "lm_vocab_cpu.json"))
    ap.add_argument("overrides", nargs="*")
    args = ap.parse_args()
    arms = {arm: (Path(args.run_dir) / arm, [setting, *args.overrides]) for arm, setting in ARMS.items()}
    write_json(Path(args.out), {"benchmark": "lm_vocab", "machine": machine(), "config": "configs/quickstart.yaml",
                                "overrides": args.overrides, "data": args.data,
                                "arms": compare(args.data, arms, args.n_dev)})


if __name__ == "__main__":
    main()
