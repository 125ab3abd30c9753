"""The data report against problems planted into real data: recall and precision of each check.

CR product-review sentences (../shared/data/cr) are shuffled into train / valid / test (60/20/20), problems are
planted into copies (`ulmfit_lab.insight.planted.plant_problems`), and `data_report` runs on them with the
reviews LM for the OOV check. A flagged item that was not planted counts against precision even when it is a
real problem of CR itself, so precision is a lower bound.

Usage: python benchmarks/report_planted.py --shared ../shared/data --out benchmarks/results/report_planted.json \
           [--lm /work/shared/lm/reviews-fwd-pass1] [--seed 1]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd

from ulmfit_lab.fileio import write_json
from ulmfit_lab.insight import data_report
from ulmfit_lab.insight.planted import plant_problems, score_report

sys.path.insert(0, str(Path(__file__).resolve().parent))
from quickstart import ROOT, machine  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shared", default=str(ROOT.parent / "shared" / "data"))
    ap.add_argument("--lm", default=None, help="LM folder or shipped name for the OOV check")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "report_planted.json"))
    ap.add_argument("--report-dir", default=None, help="keep the report here (default: a temporary folder)")
    args = ap.parse_args()
    rows = [(t.strip(), lab) for lab in ("pos", "neg")
            for t in (Path(args.shared) / "cr" / f"custrev.{lab}").read_text(encoding="utf-8").splitlines()
            if t.strip()]
    df = pd.DataFrame(rows, columns=["text", "label"]).sample(frac=1.0, random_state=0).reset_index(drop=True)
    n = len(df)
    splits = {"train": df[:int(0.6 * n)], "valid": df[int(0.6 * n):int(0.8 * n)], "test": df[int(0.8 * n):]}
    planted = plant_problems(splits, seed=args.seed, n_exact=20, n_near=20, n_exact_leak=15, n_near_leak=15,
                             n_conflict=10, n_flip=40, n_empty=5, n_foreign=5)
    with tempfile.TemporaryDirectory() as tmp:
        files = []
        for k, v in planted.splits.items():
            v.to_csv(Path(tmp) / f"{k}.csv", index=False)
            files.append(f"data.{k}={Path(tmp) / f'{k}.csv'}")
        t0 = time.time()
        rep = data_report(ROOT / "configs" / "tiny.yaml", [*files, "data.min_freq=3", "classifier.max_len=400",
                                                           f"run.dir={tmp}/run"],
                          out_dir=args.report_dir or Path(tmp) / "report", lm=args.lm)
        seconds = time.time() - t0
    scores = score_report(rep.details, planted)
    write_json(Path(args.out), {
        "what": "data report vs problems planted into CR (recall, precision; precision counts real CR problems "
                "as false positives)", "data": f"CR {n} sentences, 60/20/20 train/valid/test + planted rows",
        "rows": {k: len(v) for k, v in planted.splits.items()}, "seconds": round(seconds, 1),
        "scores": scores, "findings": {f.check: {"severity": f.severity, "count": f.count, "message": f.message}
                                       for f in rep.findings},
        "command": " ".join(sys.argv), "machine": machine()})
    print(pd.DataFrame(scores).T.round(3).to_string())
    print(f"{seconds:.1f} s")


if __name__ == "__main__":
    main()
