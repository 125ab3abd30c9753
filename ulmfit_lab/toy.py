"""Toy labelled reviews, two classes told apart by their sentiment words: for tests, demos and notebooks
that must run in seconds without real data."""

from __future__ import annotations

import random

import pandas as pd

POS = ["great", "wonderful", "superb", "brilliant", "lovely", "fantastic", "moving", "delightful"]
NEG = ["awful", "boring", "terrible", "dreadful", "dull", "horrible", "clumsy", "tedious"]
SUBJ = ["the film", "this movie", "the plot", "the acting", "the story", "the cast", "the ending", "the script"]
FILL = ["was", "felt", "seemed", "really was", "turned out", "is"]
TAIL = ["", "and I told my friends.", "from start to finish.", "overall.", "in my opinion.", "<br /><br />Honestly."]


def review(label: str, rng: random.Random, n_sent: int = 2) -> str:
    words = POS if label == "pos" else NEG
    sents = []
    for _ in range(n_sent):
        s = f"{rng.choice(SUBJ)} {rng.choice(FILL)} {rng.choice(words)} {rng.choice(TAIL)}".strip()
        sents.append(s[0].upper() + s[1:] + ("" if s.endswith(".") else "."))
    return " ".join(sents)


def make_reviews(n: int = 80, seed: int = 0, n_sent: int = 2) -> pd.DataFrame:
    rng = random.Random(seed)
    labels = ["pos", "neg"] * (n // 2)
    rng.shuffle(labels)
    return pd.DataFrame({"text": [review(lab, rng, n_sent) for lab in labels], "label": labels})
