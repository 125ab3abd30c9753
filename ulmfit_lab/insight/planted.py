"""Plant known problems into labelled splits, and score a data report against them: how the report's checks
are tested (tests/test_report.py on toy text) and measured on real data (benchmarks/report_planted.py).

Planted: exact duplicates (case and spacing changed), near duplicates (one word replaced, one added), exact and
near leakage from train into valid/test, texts copied with the other label (conflicting), flipped labels,
empty-looking texts and texts in other languages.
"""

from __future__ import annotations

import random
from collections.abc import Iterable
from dataclasses import dataclass, field

import pandas as pd

from ..data.sources import LABEL, TEXT

_POS = ["great", "wonderful", "superb", "brilliant", "lovely", "fantastic", "moving", "delightful", "excellent",
        "charming"]
_NEG = ["awful", "boring", "terrible", "dreadful", "dull", "horrible", "clumsy", "tedious", "poor", "annoying"]
_CONTENT = ("film movie plot acting story cast ending script director camera music scene scenes character characters "
            "dialogue sound picture battery screen price quality phone lens menu button zoom design feature "
            "features audience theatre night friend family weekend hour minutes book version sequel studio "
            "budget effects costume light colour voice actor actress hero villain city house road car dog "
            "summer winter morning evening review critic season episode series moment ending twist song dance "
            "kitchen service staff room window door garden river table chair paper letter picture").split()
_FUNC = ("the a an this that it was is were be been felt seemed really quite very so and but or of in on at to "
         "for with from about after before my our their his her we they i you as just also still even").split()
_FOREIGN = [
    "Der Film war wirklich sehr gut und die Schauspieler haben mir gut gefallen, aber das Ende war zu lang.",
    "Ce film est vraiment magnifique, les acteurs sont excellents et je le recommande à tous mes amis.",
    "La película es muy aburrida y los actores no son buenos, no la recomiendo para nada.",
    "Il film è davvero bellissimo e gli attori sono bravi, ma la storia è un po' lenta.",
    "Het boek is echt heel goed en de personages zijn mooi, maar het einde is een beetje saai.",
    "Этот фильм очень хороший, актёры играют прекрасно, рекомендую всем друзьям.",
]
# no "N/A" or "null": pandas reads those as missing values, which the data loader rejects before any report
_EMPTY = ["...", "<br /><br />", "[deleted]", "???", "-", "  ;;  "]


def random_reviews(n: int, seed: int = 0, classes: tuple[str, str] = ("pos", "neg")) -> pd.DataFrame:
    """`n` varied English-looking texts (14-24 words from a few hundred), each with two sentiment words
    giving its label: no two texts share more than chance, so every duplicate in them is a planted one."""
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        label = classes[i % 2]
        words = [rng.choice(_FUNC if rng.random() < 0.45 else _CONTENT) for _ in range(rng.randint(12, 22))]
        for w in rng.sample(_POS if label == classes[0] else _NEG, 2):
            words.insert(rng.randrange(len(words) + 1), w)
        rows.append((" ".join(words).capitalize() + ".", label))
    rng.shuffle(rows)
    return pd.DataFrame(rows, columns=[TEXT, LABEL])


@dataclass
class Planted:
    """The splits with problems planted, and where each one is: (split, row) references per kind."""

    splits: dict[str, pd.DataFrame]
    exact_duplicates: list[tuple[tuple[str, int], tuple[str, int]]] = field(default_factory=list)
    near_duplicates: list[tuple[tuple[str, int], tuple[str, int]]] = field(default_factory=list)
    exact_leakage: list[tuple[tuple[str, int], tuple[str, int]]] = field(default_factory=list)
    near_leakage: list[tuple[tuple[str, int], tuple[str, int]]] = field(default_factory=list)
    conflicting: list[tuple[tuple[str, int], tuple[str, int]]] = field(default_factory=list)
    flipped: list[tuple[str, int]] = field(default_factory=list)
    empty: list[tuple[str, int]] = field(default_factory=list)
    foreign: list[tuple[str, int]] = field(default_factory=list)


def _edit(text: str, rng: random.Random) -> str:
    """One word replaced and one word added: a near duplicate (word-bigram Jaccard ~0.75-0.85 at 20 words)."""
    words = text.split()
    i = rng.randrange(len(words))
    words[i] = rng.choice(_CONTENT)
    words.insert(rng.randrange(len(words) + 1), rng.choice(_FUNC))
    return " ".join(words)


def plant_problems(splits: dict[str, pd.DataFrame], seed: int = 0, n_exact: int = 10, n_near: int = 10,
                   n_exact_leak: int = 8, n_near_leak: int = 8, n_conflict: int = 6, n_flip: int = 15,
                   n_empty: int = 4, n_foreign: int = 4) -> Planted:
    """Copy `splits` (train, valid, test with text/label) and plant problems in them; rows are appended at the
    end of a split, and the originals they copy are distinct rows that are not flipped."""
    rng = random.Random(seed)
    out = {k: v[[TEXT, LABEL]].reset_index(drop=True).copy() for k, v in splits.items()}
    classes = sorted(set(out["train"][LABEL]), key=str)
    used: set[tuple[str, int]] = set()
    p = Planted(out)

    def pick(split: str) -> int:
        while True:
            i = rng.randrange(len(splits[split]))
            if (split, i) not in used:
                used.add((split, i))
                return i

    def append(split: str, text: str, label) -> tuple[str, int]:
        df = out[split]
        df.loc[len(df)] = [text, label]
        return split, len(df) - 1

    for _ in range(n_exact):
        i = pick("train")
        t, y = out["train"].loc[i, TEXT], out["train"].loc[i, LABEL]
        p.exact_duplicates.append((("train", i), append("train", "  " + t.upper().replace(" ", "  ") + " ", y)))
    for _ in range(n_near):
        i = pick("train")
        t, y = out["train"].loc[i, TEXT], out["train"].loc[i, LABEL]
        p.near_duplicates.append((("train", i), append("train", _edit(t, rng), y)))
    for k in range(n_exact_leak):
        i, dest = pick("train"), ("test", "valid")[k % 2]
        t, y = out["train"].loc[i, TEXT], out["train"].loc[i, LABEL]
        p.exact_leakage.append((("train", i), append(dest, t, y)))
    for k in range(n_near_leak):
        i, dest = pick("train"), ("valid", "test")[k % 2]
        t, y = out["train"].loc[i, TEXT], out["train"].loc[i, LABEL]
        p.near_leakage.append((("train", i), append(dest, _edit(t, rng), y)))
    for _ in range(n_conflict):
        i = pick("train")
        t, y = out["train"].loc[i, TEXT], out["train"].loc[i, LABEL]
        p.conflicting.append((("train", i), append("train", t, next(c for c in classes if c != y))))
    for _ in range(n_flip):
        i = pick("train")
        y = out["train"].loc[i, LABEL]
        out["train"].loc[i, LABEL] = next(c for c in classes if c != y)
        p.flipped.append(("train", i))
    for k in range(n_empty):
        p.empty.append(append("train", _EMPTY[k % len(_EMPTY)], classes[k % len(classes)]))
    for k in range(n_foreign):
        p.foreign.append(append("train", _FOREIGN[k % len(_FOREIGN)], classes[k % len(classes)]))
    return p


def _refs(items: Iterable) -> set[tuple[str, int]]:
    return {(s, int(r)) for s, r in items}


def score_report(details: dict, planted: Planted) -> dict[str, dict[str, float]]:
    """Recall and precision of each check of a report (`DataReport.details` or report.json's `details`) against
    the planted problems. A found item that was not planted counts against precision, also when it is a real
    problem of the base data (so on real data precision is a lower bound)."""
    def pairs_in_groups(groups: list) -> set[frozenset]:
        out = set()
        for g in groups:
            members = sorted(_refs(g))
            out.update(frozenset((a, b)) for i, a in enumerate(members) for b in members[i + 1:])
        return out

    def pr(found: set, truth: set, also_ok: set = frozenset()) -> dict[str, float]:
        hit = len(found & truth)
        return {"planted": len(truth), "found": len(found), "recall": hit / len(truth) if truth else 1.0,
                "precision": len(found & (truth | also_ok)) / len(found) if found else 1.0}

    def as_pairs(items) -> set[frozenset]:
        return {frozenset(_refs(pair)) for pair in items}

    near_found = {frozenset(_refs(x[:2])) for x in details["near_duplicate_pairs"]}
    near_leak_found = {frozenset(_refs(x[:2])) for x in details["near_leakage_pairs"]}
    flagged_labels = _refs(details["label_issues"])
    conflict_rows = {r for pair in planted.conflicting for r in pair}
    noisy = conflict_rows | _refs(planted.empty) | _refs(planted.foreign)  # rows whose label means nothing
    return {
        "exact_duplicates": pr(pairs_in_groups(details["exact_duplicate_groups"]), as_pairs(planted.exact_duplicates)),
        "near_duplicates": pr(near_found, as_pairs(planted.near_duplicates)),
        "exact_leakage": pr(pairs_in_groups(details["exact_leakage_groups"]), as_pairs(planted.exact_leakage)),
        "near_leakage": pr(near_leak_found, as_pairs(planted.near_leakage)),
        "conflicting_labels": pr(pairs_in_groups(details["conflicting_label_groups"]), as_pairs(planted.conflicting)),
        # a conflicting pair is found when either of its rows is flagged: one of the two labels is wrong
        "label_issues": pr(flagged_labels, _refs(planted.flipped), noisy),
        "empty_looking": pr(_refs(details["empty_looking"]), _refs(planted.empty)),
        "other_language": pr(_refs(details["other_language"]), _refs(planted.foreign)),
    }
