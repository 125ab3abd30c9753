"""Turn the shared real datasets the lab runs use into `text,label` CSVs (outside the repository).

Usage: python benchmarks/lab_data.py --data ../shared/data --out runs/lab_data

Writes cr.csv (CR product-review sentences, pos/neg), uci.csv (UCI Yelp + Amazon + IMDb sentences, 0/1),
tweets.csv (US airline tweets, negative/neutral/positive), agnews.csv (AG News test split, 4 topics),
trec.csv (TREC question types, 6 coarse classes) and mpqa.csv (MPQA opinion phrases, pos/neg).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import pandas as pd


def _lines(path: Path) -> list[str]:
    return [t.strip() for t in path.read_text(encoding="utf-8", errors="replace").splitlines() if t.strip()]


def build(data: Path) -> dict[str, pd.DataFrame]:
    out = {}
    out["cr"] = pd.DataFrame([(t, lab) for lab in ("pos", "neg") for t in _lines(data / "cr" / f"custrev.{lab}")],
                             columns=["text", "label"])
    out["mpqa"] = pd.DataFrame([(t, lab) for lab in ("pos", "neg") for t in _lines(data / "mpqa" / f"mpqa.{lab}")],
                               columns=["text", "label"])
    uci = data / "uci_sentiment_labelled_sentences"
    out["uci"] = pd.concat([pd.read_csv(uci / f"{name}_labelled.txt", sep="\t", header=None, names=["text", "label"],
                                        quoting=3) for name in ("yelp", "amazon_cells", "imdb")], ignore_index=True)
    tw = pd.read_csv(data / "twitter_us_airline" / "Tweets.csv")
    out["tweets"] = tw[["text", "airline_sentiment"]].rename(columns={"airline_sentiment": "label"})
    ag = pd.read_csv(data / "ag_news" / "test.csv", header=None, names=["label", "title", "description"])
    out["agnews"] = pd.DataFrame({"text": ag["title"] + ". " + ag["description"].str.replace("\\", " "),
                                  "label": ag["label"]})
    trec = [line.split(" ", 1) for line in _lines(data / "trec" / "train_5500.label")]
    out["trec"] = pd.DataFrame({"text": [q for _, q in trec], "label": [c.split(":")[0] for c, _ in trec]})
    return {k: v.dropna().reset_index(drop=True) for k, v in out.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--data", default="../shared/data", help="the shared data folder")
    ap.add_argument("--out", default="runs/lab_data", help="where the CSVs go (not the repository)")
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for name, df in build(Path(args.data)).items():
        df.to_csv(out / f"{name}.csv", index=False)
        print(f"{out / name}.csv: {len(df)} rows, labels {df['label'].value_counts().to_dict()}")


if __name__ == "__main__":
    main()
