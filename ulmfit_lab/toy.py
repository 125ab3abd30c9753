"""Toy labelled reviews, two classes told apart by their sentiment words, and toy multi-label and multi-task
texts whose labels are planted words: for tests, demos and notebooks that must run in seconds without real data."""

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


TAGS = {"sport": ["goal", "match", "team", "coach", "stadium"], "music": ["guitar", "song", "band", "concert", "drums"],
        "food": ["pizza", "bread", "soup", "cheese", "recipe"], "travel": ["train", "hotel", "beach", "airport", "map"]}
TOPICS = {"film": ["the film", "this movie", "the acting", "the cast"],
          "book": ["the novel", "this book", "the chapter", "the author"]}


def make_tagged(n: int = 200, seed: int = 0) -> pd.DataFrame:
    """Multi-label toy texts: one to three tags each, every tag planted as one of its own words (`TAGS`)."""
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        tags = sorted(rng.sample(sorted(TAGS), rng.choice([1, 1, 2, 3])))
        words = [rng.choice(TAGS[t]) for t in tags]
        rng.shuffle(words)
        text = " ".join(f"{rng.choice(['I liked the', 'There was a', 'We talked about the', 'Look at that'])} {w}."
                        for w in words)
        rows.append((text, tags))
    return pd.DataFrame({"text": [t for t, _ in rows], "tags": [g for _, g in rows]})


def make_multitask(n: int = 200, seed: int = 0) -> pd.DataFrame:
    """Two tasks per text: `sentiment` (pos/neg, by its sentiment words) and `topic` (film/book, by its subject)."""
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        sentiment, topic = rng.choice(["pos", "neg"]), rng.choice(sorted(TOPICS))
        words = POS if sentiment == "pos" else NEG
        sents = [f"{rng.choice(TOPICS[topic])} {rng.choice(FILL)} {rng.choice(words)}." for _ in range(2)]
        rows.append((" ".join(s[0].upper() + s[1:] for s in sents), sentiment, topic))
    return pd.DataFrame(rows, columns=["text", "sentiment", "topic"])
