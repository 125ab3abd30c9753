"""A data report before training: what in the labelled data will hurt (or fake) the result, and what to do.

Checks: class balance; exact and near duplicates; the same text with conflicting labels; leakage between
train/valid/test (and of valid/test texts into the unlabelled LM fine-tuning texts), exact and near; token
lengths against `classifier.max_len`; the OOV rate against the pretrained LM's vocab; likely mislabelled rows
(cleanlab's `find_label_issues` on cross-validated TF-IDF + logistic regression probabilities); empty-looking
and non-English texts. Writes report.html (one page, plots inline), report.json and report_rows.csv (every
flagged row with its split, row number, issue and text).

"Exact" compares texts after lower-casing, removing HTML tags and collapsing whitespace; "near" means a Jaccard
similarity of word bigrams >= `NEAR_JACCARD`, found with MinHash + LSH (linear in the data, so IMDb's 100k
texts take seconds) and then checked exactly. Row numbers count from 0 within each split as loaded (after the
config's sampling and carving of valid/test), so the CSV carries the text too.
"""

from __future__ import annotations

import json
import re
import warnings
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ..config import Config, load_config
from ..data.sources import LABEL, TEXT, DataError, DataWarning, LabelledData, load_data
from ..fileio import write_json, write_text
from . import html as H

# --- thresholds, and why ---------------------------------------------------------------------------------
# near duplicates: word-bigram Jaccard >= 0.5. One word replaced and one inserted in a 16-word sentence leave 12
# of 19 bigrams shared (0.63); two different reviews share a few stock bigrams ("of the"), 0.02-0.05.
NEAR_JACCARD = 0.5
# 32 bands of 3 hashes: a pair at Jaccard 0.5 becomes a candidate with p = 0.986 (0.9996 at 0.6), one at 0.02
# with p = 0.0003, which keeps the exact checks of candidates to about a million for 100k long reviews
MINHASH_PERM, MINHASH_BANDS = 96, 32
MAX_BUCKET = 200  # an LSH bucket larger than this (boilerplate) is checked as a chain, not all pairs
IMBALANCE = 0.2  # smallest / largest class below this: accuracy misleads, the small class is under-learned
MIN_PER_CLASS = 20  # fewer validation rows per class than this: validation accuracy moves in big steps
CUT_WARN = 0.05  # more than 5% of texts longer than classifier.max_len: their beginnings are never pooled
OOV_WARN = 0.10  # more than 10% of running tokens unknown to the LM (xxunk): its pretraining helps less
LABEL_ISSUE_WARN = 0.02  # more than 2% likely mislabelled rows is more than the usual annotation noise
MAX_LABEL_ROWS = 20_000  # cross-validated TF-IDF fits on at most this many rows (a random sample): minutes, not hours
MIN_WORDS_LANG = 5  # texts with fewer words are too short to guess their language from stop words
PLACEHOLDERS = {"n/a", "na", "none", "null", "nan", "empty", "test", "tbd", "todo", "[deleted]", "[removed]",
                "no comment", "no text", "-", "--", "?", "."}

_TAG = re.compile(r"<[^>]{0,200}>")
_WS = re.compile(r"\s+")
_WORD = re.compile(r"[^\W_]+(?:'[^\W_]+)?")


@dataclass(frozen=True)
class Finding:
    """One check's outcome. `severity`: warning (act on it), info (worth knowing) or ok."""

    check: str
    severity: str
    count: int
    message: str
    action: str = ""


@dataclass
class DataReport:
    """Everything the report measured. `rows`: one line per flagged row (split, row, issue, label, text, ...);
    `details`: the groups and pairs behind each finding, by check, as (split, row) references."""

    summary: dict[str, Any]
    findings: list[Finding]
    rows: pd.DataFrame
    details: dict[str, Any]
    files: dict[str, str] = field(default_factory=dict)

    def finding(self, check: str) -> Finding:
        return next(f for f in self.findings if f.check == check)

    @property
    def warnings(self) -> list[Finding]:
        return [f for f in self.findings if f.severity == "warning"]


# ---------------------------------------------------------------- inputs


def resolve_source(source: str | Path | Config, overrides: Sequence[str] = ()) -> Config:
    """A config from a YAML file, or the default config reading `source` as `data.path` (a table, a class-per-
    folder tree or an archive); dotted overrides apply in both cases."""
    if isinstance(source, Config):
        return source.replace(*overrides)
    path = Path(source)
    if path.suffix.lower() in (".yaml", ".yml"):
        return load_config(path, overrides)
    if not path.exists():
        raise DataError(f"{path}: not found; expected a YAML config (configs/*.yaml) or labelled data (a CSV/TSV/"
                        "JSONL/parquet table, a folder with one sub-folder per class, or an archive of one)")
    base = Config()  # the section is set as a value (a path needs no YAML quoting); overrides apply after it
    return base.replace(*overrides, data={**base.to_dict()["data"], "path": str(path)})


def normalize(text: str) -> str:
    """The key for "exact" duplicates: lower case, HTML tags removed, whitespace collapsed."""
    return _WS.sub(" ", _TAG.sub(" ", text)).strip().lower()


def _splits(data: LabelledData) -> dict[str, pd.DataFrame]:
    out = {"train": data.train, "valid": data.valid}
    if data.test is not None:
        out["test"] = data.test
    if data.unlabelled:
        out["unlabelled"] = pd.DataFrame({TEXT: data.unlabelled, LABEL: None})
    return out


# ---------------------------------------------------------------- near duplicates: MinHash + LSH


def _shingles(words: list[str]) -> list[str]:
    return [f"{a} {b}" for a, b in zip(words, words[1:])] if len(words) > 1 else list(words)


def near_duplicate_pairs(texts: Sequence[str], threshold: float = NEAR_JACCARD, seed: int = 0
                         ) -> list[tuple[int, int, float]]:
    """Pairs (i, j, jaccard) of texts whose word-bigram sets have Jaccard similarity >= `threshold`.

    Candidates come from MinHash signatures (`MINHASH_PERM` hashes) in `MINHASH_BANDS` LSH bands; each
    candidate's Jaccard is then computed exactly, so every pair returned is a true one (recall is
    probabilistic: 0.986 at Jaccard 0.5, higher above).
    """
    vocab: dict[str, int] = {}
    sets: list[np.ndarray] = []
    for t in texts:
        sh = _shingles(_WORD.findall(normalize(t)))
        sets.append(np.unique(np.fromiter((vocab.setdefault(s, len(vocab)) for s in sh), dtype=np.int64,
                                          count=len(sh))))
    nonempty = np.array([i for i, s in enumerate(sets) if len(s)], dtype=np.int64)
    if len(nonempty) < 2:
        return []
    flat = np.concatenate([sets[i] for i in nonempty])
    starts = np.concatenate([[0], np.cumsum([len(sets[i]) for i in nonempty])[:-1]])
    prime = np.int64((1 << 31) - 1)  # a*x + b stays below 2**62: no overflow in int64
    rng = np.random.default_rng(seed)
    a = rng.integers(1, prime, MINHASH_PERM, dtype=np.int64)
    b = rng.integers(0, prime, MINHASH_PERM, dtype=np.int64)
    x = flat % prime
    sig = np.empty((len(nonempty), MINHASH_PERM), dtype=np.int64)
    for k in range(MINHASH_PERM):
        sig[:, k] = np.minimum.reduceat((a[k] * x + b[k]) % prime, starts)
    rows = MINHASH_PERM // MINHASH_BANDS
    candidates: set[tuple[int, int]] = set()
    for band in range(MINHASH_BANDS):
        _, inverse = np.unique(sig[:, band * rows:(band + 1) * rows], axis=0, return_inverse=True)
        order = np.argsort(inverse.ravel(), kind="stable")
        bounds = np.flatnonzero(np.diff(inverse.ravel()[order])) + 1
        for bucket in np.split(order, bounds):
            if len(bucket) < 2:
                continue
            members = nonempty[bucket]
            if len(members) > MAX_BUCKET:
                candidates.update(zip(members[:-1].tolist(), members[1:].tolist()))
            else:
                ml = members.tolist()
                candidates.update((ml[i], ml[j]) for i in range(len(ml)) for j in range(i + 1, len(ml)))
    out = []
    for i, j in sorted(candidates):
        inter = len(np.intersect1d(sets[i], sets[j], assume_unique=True))
        jac = inter / (len(sets[i]) + len(sets[j]) - inter)
        if jac >= threshold:
            out.append((i, j, round(float(jac), 4)))
    return out


# ---------------------------------------------------------------- label issues


def label_issue_scores(texts: Sequence[str], labels: Sequence, seed: int = 0, folds: int = 5
                       ) -> tuple[np.ndarray, np.ndarray, list]:
    """Cross-validated TF-IDF + logistic-regression probabilities and cleanlab's label issues.

    Returns:
        (indices of likely mislabelled rows, most likely first; the out-of-fold probabilities; the classes in
        column order).
    """
    from cleanlab.filter import find_label_issues
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold, cross_val_predict
    from sklearn.pipeline import make_pipeline
    from threadpoolctl import threadpool_limits

    classes = sorted(set(labels), key=lambda c: (str(type(c)), c))
    y = np.array([classes.index(v) for v in labels])
    k = int(min(folds, np.bincount(y).min()))
    if k < 2 or len(classes) < 2:
        return np.array([], dtype=np.int64), np.zeros((len(y), len(classes))), classes
    clf = make_pipeline(TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True, min_df=1),
                        LogisticRegression(C=4.0, max_iter=2000))
    with threadpool_limits(limits=1, user_api="blas"):  # small matrices: spinning BLAS threads only slow them
        proba = cross_val_predict(clf, list(texts), y, cv=StratifiedKFold(k, shuffle=True, random_state=seed),
                                  method="predict_proba")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # cleanlab warns about tiny classes; the counts say so in the report
        idx = find_label_issues(y, proba, return_indices_ranked_by="self_confidence")
    return np.asarray(idx, dtype=np.int64), proba, classes


# ---------------------------------------------------------------- language and empty texts


def _stop_words() -> dict[str, frozenset[str]]:
    """spaCy's stop-word lists, read from their `stop_words.py` files alone: importing `spacy.lang.fr.stop_words`
    would run `spacy.lang.fr` first, whose tokenizer exceptions compile for ~9 s on a laptop CPU."""
    import importlib
    import importlib.util

    spacy = importlib.util.find_spec("spacy")  # finds the package without importing it
    if spacy is None or not spacy.submodule_search_locations:
        return {}
    out = {}
    for lang in ("en", "de", "fr", "es", "it", "nl", "pt"):
        path = Path(spacy.submodule_search_locations[0]) / "lang" / lang / "stop_words.py"
        try:
            spec = importlib.util.spec_from_file_location(f"_ulmfit_lab_stop_words_{lang}", path)
            module = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(module)  # a plain module: `STOP_WORDS = set(...)`, no imports
            out[lang] = frozenset(module.STOP_WORDS)
        except (OSError, AttributeError, ImportError, SyntaxError):  # a spaCy whose file is no longer plain
            try:
                out[lang] = frozenset(importlib.import_module(f"spacy.lang.{lang}.stop_words").STOP_WORDS)
            except (ImportError, AttributeError):
                continue
    return out


def guess_language(text: str, stop_words: dict[str, frozenset[str]], expected: str = "en") -> tuple[str | None, float]:
    """The language whose stop words make up the largest share of the text's words, and that share; None for
    texts of fewer than `MIN_WORDS_LANG` words, "non-latin" for texts mostly in another script.

    Another language counts only its stop words that are not also `expected`'s, of two letters or more, and
    needs at least two different ones: English sentences such as "battery : a big big plus ." hold one French
    stop word ("plus") and no other (measured on CR: without this rule 2 of 3,775 sentences were flagged).
    """
    letters = [c for c in text if c.isalpha()]
    if letters and sum(not ("a" <= c.lower() <= "z" or "\u00c0" <= c <= "\u024f") for c in letters) > len(letters) / 2:
        return "non-latin", 1.0
    words = _WORD.findall(text.lower())
    if len(words) < MIN_WORDS_LANG:
        return None, 0.0
    own = stop_words.get(expected, frozenset())
    shares = {}
    for lang, sw in stop_words.items():
        if lang == expected:
            shares[lang] = sum(w in sw for w in words) / len(words)
            continue
        hits = [w for w in words if w in sw and w not in own and len(w) > 1]
        shares[lang] = len(hits) / len(words) if len(set(hits)) >= 2 else 0.0
    best = max(shares, key=shares.get)
    return best, shares[best]


def looks_empty(text: str) -> bool:
    """No letter or digit once HTML tags are removed, or a placeholder such as "N/A" or "[deleted]"."""
    norm = normalize(text)
    return not any(c.isalnum() for c in norm) or norm in PLACEHOLDERS


# ---------------------------------------------------------------- the report


def data_report(source: str | Path | Config, overrides: Sequence[str] = (), out_dir: str | Path | None = None,
                lm: str | None = None, max_label_rows: int = MAX_LABEL_ROWS, plots: bool = True) -> DataReport:
    """Check labelled data before training and write report.html, report.json and report_rows.csv.

    Args:
        source: a YAML config (its `data` section says what to read, `classifier.max_len` and
            `lm_pretrain.weights` are checked against), or the data itself (anything `data.path` accepts).
        overrides: dotted config overrides, e.g. `data.test=test.csv` or `classifier.max_len=400`.
        out_dir: where the files go (default `run.dir/report`).
        lm: a pretrained LM (shipped name or LM folder) for the OOV check; default the config's
            `lm_pretrain.weights` when `lm_pretrain.source` is `pretrained`.
        max_label_rows: the label-issue check fits on at most this many labelled rows (a random sample).
        plots: write the PNG plots (and embed them in the page).

    Returns:
        A `DataReport`; `findings` lists each check with what to do about it.
    """
    cfg = resolve_source(source, overrides)
    from ..stages.common import default_cache_dir

    cache = Path(cfg.run.cache_dir) if cfg.run.cache_dir else default_cache_dir()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DataWarning)  # the report counts conflicting labels itself
        data = load_data(cfg.data, cache)
    splits = _splits(data)
    labelled = [s for s in splits if s != "unlabelled"]
    out = Path(out_dir) if out_dir else Path(cfg.run.dir) / "report"
    # the checks, in the order of the page: each adds its finding, its flagged rows and its details
    checks = _Checks(splits)
    balance = _check_balance(checks, data, labelled)
    groups = _check_exact(checks)
    _check_near(checks, groups, cfg.data.seed)
    lengths, oov = _lengths_and_oov(cfg, splits, labelled, cache, lm, checks.findings, checks.details)
    _check_label_issues(checks, max_label_rows, cfg.data.seed)
    _check_empty_and_language(checks, cfg.data.lang)

    rows = pd.DataFrame(checks.flagged, columns=["split", "row", "issue", "label", "group", "score", "detail", "text"])
    summary = {"source": str(source) if not isinstance(source, Config) else cfg.data.path, **data.summary(),
               "classes": [str(c) for c in data.classes], "balance": balance, "max_len": cfg.classifier.max_len,
               "lengths": lengths, "oov": oov, "n_warnings": sum(f.severity == "warning" for f in checks.findings)}
    report = DataReport(summary, checks.findings, rows, checks.details)
    report.files = _write(report, out, plots, splits, cfg)
    return report


class _Checks:
    """What every check reads (each text once, with the split and row it came from) and what they add up:
    findings, flagged rows and details, in the order the checks run."""

    def __init__(self, splits: dict[str, pd.DataFrame]):
        self.splits = splits
        self.refs = [(s, i) for s, df in splits.items() for i in range(len(df))]
        self.texts = [splits[s][TEXT].iloc[i] for s, i in self.refs]
        self.labels = [splits[s][LABEL].iloc[i] for s, i in self.refs]
        self.findings: list[Finding] = []
        self.flagged: list[dict] = []
        self.details: dict[str, Any] = {}

    def flag(self, split: str, row: int, issue: str, detail: str = "", group: int | None = None,
             score: float | None = None) -> None:
        df = self.splits[split]
        self.flagged.append({"split": split, "row": int(row), "issue": issue, "label": df[LABEL].iloc[row],
                             "group": group, "score": score, "detail": detail, "text": df[TEXT].iloc[row]})

    def ref(self, m: int) -> list:
        return [self.refs[m][0], self.refs[m][1]]


def _check_balance(c: _Checks, data: LabelledData, labelled: list[str]) -> dict[str, dict[str, int]]:
    """The class counts of each labelled split; a warning for a small class in train or in valid."""
    balance = {s: {str(k): int(v) for k, v in c.splits[s][LABEL].value_counts().sort_index().items()}
               for s in labelled}
    tr = data.train[LABEL].value_counts()
    ratio = float(tr.min() / tr.max())
    small_valid = {k: v for k, v in balance["valid"].items() if v < MIN_PER_CLASS}
    msg = (f"train: {', '.join(f'{k} {v}' for k, v in balance['train'].items())}; smallest/largest class "
           f"{ratio:.2f}")
    if ratio < IMBALANCE:
        c.findings.append(Finding("class_balance", "warning", int(tr.min()), msg + f" (< {IMBALANCE})",
                                  "judge by macro-F1 rather than accuracy, label more of the small class(es) "
                                  f"({', '.join(map(str, tr[tr < IMBALANCE * tr.max()].index))}), or oversample "
                                  "them"))
    elif small_valid:
        c.findings.append(Finding("class_balance", "warning", len(small_valid), msg + f"; valid has fewer than "
                                  f"{MIN_PER_CLASS} rows of {sorted(small_valid)}",
                                  "raise data.valid_pct or give a larger data.valid: validation accuracy moves in "
                                  "steps of several points with so few rows"))
    else:
        c.findings.append(Finding("class_balance", "ok", 0, msg))
    return balance


def _exact_groups(c: _Checks) -> tuple[dict[str, list[int]], list[list[int]], list[list[int]], list[list[int]]]:
    """Texts grouped by their normalized form, and of those groups: copies within a split with the same label,
    the same text with different labels, and texts in valid/test and another split."""
    groups: dict[str, list[int]] = defaultdict(list)
    for k, key in enumerate(normalize(t) for t in c.texts):
        if key:
            groups[key].append(k)
    dup_groups, conflict_groups, leak_groups = [], [], []
    for members in groups.values():
        if len(members) < 2:
            continue
        lab_members = [m for m in members if c.refs[m][0] != "unlabelled"]
        by_split: dict[str, list[int]] = defaultdict(list)
        for m in members:
            by_split[c.refs[m][0]].append(m)
        for s, ms in by_split.items():
            if s == "unlabelled" or len(ms) < 2:
                continue
            by_label: dict[Any, list[int]] = defaultdict(list)
            for m in ms:
                by_label[c.labels[m]].append(m)
            for same in by_label.values():
                if len(same) > 1:
                    dup_groups.append(same)
        if len({c.labels[m] for m in lab_members}) > 1:
            conflict_groups.append(lab_members)
        if len(by_split) > 1 and any(s in by_split for s in ("valid", "test")):
            leak_groups.append(members)
    return groups, dup_groups, conflict_groups, leak_groups


def _check_exact(c: _Checks) -> dict[str, list[int]]:
    """Exact duplicates, conflicting labels and exact leakage; returns the groups of equal normalized texts."""
    groups, dup_groups, conflict_groups, leak_groups = _exact_groups(c)
    refs, labels = c.refs, c.labels
    for g, members in enumerate(dup_groups):
        for m in members[1:]:
            c.flag(*refs[m], "exact_duplicate", f"same text as {refs[members[0]][0]} row {refs[members[0]][1]}", g)
    n_dup_rows = sum(len(m) - 1 for m in dup_groups)
    c.findings.append(Finding(
        "exact_duplicates", "warning" if dup_groups else "ok", n_dup_rows,
        f"{n_dup_rows} row(s) repeat another row of the same split and label ({len(dup_groups)} group(s))",
        "drop the copies (keep one per group): they weigh those texts more in training and in the metrics"
        if dup_groups else ""))
    for g, members in enumerate(conflict_groups):
        labs = sorted({str(labels[m]) for m in members})
        for m in members:
            c.flag(*refs[m], "conflicting_labels", f"the same text is labelled {labs}", g)
    c.findings.append(Finding(
        "conflicting_labels", "warning" if conflict_groups else "ok", len(conflict_groups),
        f"{len(conflict_groups)} text(s) occur with different labels "
        f"({sum(len(m) for m in conflict_groups)} rows)",
        "decide each text's label (or drop it); many such texts usually mean a wrong label column or a bad merge"
        if conflict_groups else ""))
    leak_rows = 0
    for g, members in enumerate(leak_groups):
        split_set = {refs[m][0] for m in members}
        for m in members:
            if refs[m][0] != "train":  # the valid/test (or unlabelled) copy is the one to remove
                c.flag(*refs[m], "exact_leakage", f"also in {sorted(split_set - {refs[m][0]})}", g)
                leak_rows += refs[m][0] in ("valid", "test")
    c.findings.append(Finding(
        "exact_leakage", "warning" if leak_groups else "ok", leak_rows,
        f"{leak_rows} valid/test row(s) have the same text as a row of another split ({len(leak_groups)} text(s))",
        "remove them from valid/test (or from train): a model scores them by memory, so the metrics overstate "
        "accuracy on new text; valid/test texts among the unlabelled ones leak into LM fine-tuning"
        if leak_groups else ""))
    c.details.update({
        "exact_duplicate_groups": [[c.ref(m) for m in g] for g in dup_groups],
        "conflicting_label_groups": [[c.ref(m) for m in g] for g in conflict_groups],
        "exact_leakage_groups": [[c.ref(m) for m in g] for g in leak_groups],
    })
    return groups


def _check_near(c: _Checks, groups: dict[str, list[int]], seed: int) -> None:
    """Near duplicates within a split and near leakage across splits (MinHash + LSH, then exact Jaccard)."""
    refs, labels = c.refs, c.labels
    uniq = list(groups)  # one representative per normalized text; exact copies are counted above
    rep_rows = [groups[k] for k in uniq]
    near = near_duplicate_pairs(uniq, seed=seed)
    near_dup, near_leak = [], []
    for i, j, jac in near:
        for a in rep_rows[i]:
            for b in rep_rows[j]:
                sa, sb = refs[a][0], refs[b][0]
                if sa == sb and sa != "unlabelled":
                    near_dup.append((a, b, jac))
                elif sa != sb and ({sa, sb} & {"valid", "test"}):
                    near_leak.append((a, b, jac))
    for g, (a, b, jac) in enumerate(near_dup):
        c.flag(*refs[b], "near_duplicate", f"Jaccard {jac:.2f} with {refs[a][0]} row {refs[a][1]}"
               + ("" if labels[a] == labels[b] else f" (labelled {labels[a]!r} there)"), g, jac)
    c.findings.append(Finding(
        "near_duplicates", "warning" if near_dup else "ok", len(near_dup),
        f"{len(near_dup)} pair(s) of rows in the same split are near-duplicates (word-bigram Jaccard >= "
        f"{NEAR_JACCARD}, not identical)",
        "look at the pairs in report_rows.csv; drop one of each if they are the same text edited" if near_dup else ""))
    for g, (a, b, jac) in enumerate(near_leak):
        ra, rb = (a, b) if refs[b][0] in ("valid", "test") and refs[a][0] != "test" else (b, a)
        c.flag(*refs[rb], "near_leakage", f"Jaccard {jac:.2f} with {refs[ra][0]} row {refs[ra][1]}", g, jac)
    c.findings.append(Finding(
        "near_leakage", "warning" if near_leak else "ok", len(near_leak),
        f"{len(near_leak)} pair(s) of near-duplicate texts across splits involve valid/test",
        "remove the valid/test side of each pair (or split by source, e.g. by product or author, so that "
        "versions of one text stay in one split)" if near_leak else ""))
    c.details.update({
        "near_duplicate_pairs": [[c.ref(a), c.ref(b), jac] for a, b, jac in near_dup],
        "near_leakage_pairs": [[c.ref(a), c.ref(b), jac] for a, b, jac in near_leak],
    })


def _check_label_issues(c: _Checks, max_label_rows: int, seed: int) -> None:
    """Likely mislabelled rows: cleanlab on cross-validated TF-IDF probabilities, on a sample if there are many."""
    refs, labels = c.refs, c.labels
    lab_idx = [k for k, (s, _) in enumerate(refs) if s != "unlabelled"]
    rng = np.random.default_rng(seed)
    if len(lab_idx) > max_label_rows:
        lab_idx = sorted(rng.choice(lab_idx, max_label_rows, replace=False).tolist())
    issues, proba, classes = label_issue_scores([c.texts[k] for k in lab_idx], [labels[k] for k in lab_idx],
                                                seed=seed)
    for rank, i in enumerate(issues):
        k = lab_idx[i]
        c.flag(*refs[k], "label_issue", f"given {labels[k]!r}, the cross-validated model says "
               f"{classes[int(proba[i].argmax())]!r} (p={proba[i].max():.2f})", rank,
               float(proba[i][classes.index(labels[k])]))
    share = len(issues) / max(len(lab_idx), 1)
    c.findings.append(Finding(
        "label_issues", "warning" if share > LABEL_ISSUE_WARN else ("info" if len(issues) else "ok"), len(issues),
        f"{len(issues)} of {len(lab_idx)} labelled rows ({100 * share:.1f}%) look mislabelled (cleanlab "
        "find_label_issues on 5-fold TF-IDF + logistic regression probabilities)"
        + (f"; checked a random sample of {max_label_rows}" if len(lab_idx) == max_label_rows else ""),
        "review the listed rows, most likely first (score = the model's probability of the given label), and fix "
        "the wrong ones; TF-IDF misses sarcasm and negation, so not every listed row is wrong" if len(issues) else ""))
    c.details["label_issues"] = [c.ref(lab_idx[i]) for i in issues]


def _check_empty_and_language(c: _Checks, lang: str) -> None:
    """Texts with no letters or digits (or placeholders), and texts in another language than `data.lang`."""
    refs, texts = c.refs, c.texts
    empty = [k for k in range(len(refs)) if looks_empty(texts[k])]
    for k in empty:
        c.flag(*refs[k], "empty_looking", "no letters or digits, or a placeholder")
    c.findings.append(Finding(
        "empty_looking", "warning" if empty else "ok", len(empty),
        f"{len(empty)} text(s) have no letters or digits (once HTML tags are removed) or are placeholders such "
        "as 'N/A'", "drop them, or find out why the text is missing (a broken export?)" if empty else ""))
    stop = _stop_words()
    foreign = []
    if lang in stop:
        skip = set(empty)
        for k in range(len(refs)):
            if k in skip:
                continue
            guess, s = guess_language(texts[k], stop, lang)
            if guess is not None and guess != lang and (guess == "non-latin" or s >= 0.15):
                foreign.append(k)
                c.flag(*refs[k], "other_language", f"looks like {guess} (stop-word share {s:.2f})", score=s)
        c.findings.append(Finding(
            "other_language", "warning" if foreign else "ok", len(foreign),
            f"{len(foreign)} text(s) look like another language than data.lang={lang!r}",
            "drop or translate them: the LM and its vocab read them as unknown words" if foreign else ""))
    else:
        c.findings.append(Finding("other_language", "info", 0, f"data.lang={lang!r}: no stop-word list to check "
                                  "the language with; skipped"))
    c.details["empty_looking"] = [c.ref(k) for k in empty]
    c.details["other_language"] = [c.ref(k) for k in foreign]


def _lengths_and_oov(cfg: Config, splits: dict[str, pd.DataFrame], labelled: list[str], cache: Path,
                     lm: str | None, findings: list[Finding], details: dict) -> tuple[dict, dict | None]:
    from ..text.vocab import SPECIAL_TOKENS, tokenize

    max_len = cfg.classifier.max_len
    lengths: dict[str, dict] = {}
    itos_counts: dict[str, int] = defaultdict(int)
    for s in labelled:
        tok = tokenize(splits[s][TEXT].tolist(), cfg.data.lang, cache, cfg.run.num_workers, progress=False)
        lens = tok.docs().lengths
        q = np.percentile(lens, [50, 90, 95, 99])
        lengths[s] = {"p50": int(q[0]), "p90": int(q[1]), "p95": int(q[2]), "p99": int(q[3]),
                      "max": int(lens.max()), "cut_share": float((lens > max_len).mean()),
                      "hist": np.histogram(lens, bins=30)[0].tolist(),
                      "edges": np.histogram(lens, bins=30)[1].round(1).tolist()}
        for t, c in zip(tok.itos, tok.counts.tolist()):
            itos_counts[t] += c
    cut = lengths["train"]["cut_share"]
    p95 = lengths["train"]["p95"]
    findings.append(Finding(
        "length", "warning" if cut > CUT_WARN else "ok", int(round(cut * len(splits["train"]))),
        f"train tokens per text: median {lengths['train']['p50']}, 95th percentile {p95}, max "
        f"{lengths['train']['max']}; {100 * cut:.1f}% are longer than classifier.max_len={max_len}",
        f"the classifier pools over the last {max_len} tokens only: raise classifier.max_len to about {p95} "
        "(the 95th percentile; memory grows with it) if the start of a text matters" if cut > CUT_WARN else ""))

    spec = lm or (cfg.lm_pretrain.weights if cfg.lm_pretrain.source == "pretrained" else None)
    if spec is None:
        findings.append(Finding("oov", "info", 0, "no pretrained LM given: OOV rate not measured",
                                "pass --lm NAME_OR_FOLDER (or set lm_pretrain.source=pretrained "
                                "lm_pretrain.weights=...) to measure it"))
        return lengths, None
    lm_vocab = set(_lm_vocab(spec, cfg, cache))
    special = set(SPECIAL_TOKENS)
    words = {t: c for t, c in itos_counts.items() if t not in special}
    total = sum(words.values())
    unknown = {t: c for t, c in words.items() if t not in lm_vocab}
    rate = sum(unknown.values()) / max(total, 1)
    top = sorted(unknown.items(), key=lambda kv: -kv[1])[:20]
    oov = {"lm": spec, "token_rate": rate, "type_rate": len(unknown) / max(len(words), 1), "tokens": total,
           "top_unknown": [[t, c] for t, c in top]}
    findings.append(Finding(
        "oov", "warning" if rate > OOV_WARN else "ok", sum(unknown.values()),
        f"{100 * rate:.1f}% of the labelled texts' tokens ({100 * oov['type_rate']:.1f}% of distinct ones) are "
        f"not in the LM's vocab ({spec}); most frequent: {', '.join(t for t, _ in top[:8])}",
        "LM fine-tuning learns them only if they are frequent in the target text: add unlabelled in-domain text "
        "(data.unlabelled), or check the texts' encoding and preprocessing (e.g. HTML left in)"
        if rate > OOV_WARN else ""))
    return lengths, oov


def _lm_vocab(spec: str, cfg: Config, cache: Path) -> list[str]:
    from ..models.artifact import read_checkpoint_meta
    from ..models.checkpoint import read_vocab
    from ..models.hub import locate_lm

    lp = cfg.lm_pretrain
    info = locate_lm(spec, lp.vocab, cache, lp.sha256, cfg.model.backwards)  # the stage's resolution, names too
    if info["kind"] == "package":
        return read_checkpoint_meta(Path(info["weights"]))[1]
    return read_vocab(Path(info["vocab"]))


# ---------------------------------------------------------------- output


def _write(rep: DataReport, out: Path, plots: bool, splits: dict[str, pd.DataFrame], cfg: Config) -> dict[str, str]:
    out.mkdir(parents=True, exist_ok=True)
    files = {"json": str(out / "report.json"), "csv": str(out / "report_rows.csv"), "html": str(out / "report.html")}
    pngs = {}
    if plots:
        pngs = {"balance": _plot_balance(rep.summary["balance"], out / "report_balance.png"),
                "lengths": _plot_lengths(rep.summary["lengths"], rep.summary["max_len"], out / "report_lengths.png")}
        files.update({f"png_{k}": str(v) for k, v in pngs.items()})
    H.write_csv(rep.rows, out / "report_rows.csv")
    write_json(out / "report.json", {"summary": rep.summary, "findings": [asdict(f) for f in rep.findings],
                                     "details": rep.details, "files": files})
    write_text(out / "report.html", render_html(rep, pngs))
    return files


def _plot_balance(balance: dict[str, dict[str, int]], path: Path) -> Path:
    from ..plots import _plt

    plt = _plt()
    classes = sorted({c for b in balance.values() for c in b})
    fig, ax = plt.subplots(figsize=(max(5, 1.2 * len(classes) * len(balance) / 2 + 3), 3.5))
    w = 0.8 / len(balance)
    for k, (split, counts) in enumerate(balance.items()):
        ax.bar(np.arange(len(classes)) + (k - (len(balance) - 1) / 2) * w, [counts.get(c, 0) for c in classes], w,
               label=split)
    ax.set_xticks(range(len(classes)), classes, rotation=30 if len(classes) > 6 else 0)
    ax.set_ylabel("rows")
    ax.set_title("Class balance per split")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return H.save_figure(fig, path)


def _plot_lengths(lengths: dict[str, dict], max_len: int, path: Path) -> Path:
    from ..plots import _plt

    plt = _plt()
    fig, ax = plt.subplots(figsize=(7, 3.5))
    for split, st in lengths.items():
        edges = np.array(st["edges"])
        ax.stairs(st["hist"], edges, label=f"{split} (p95 {st['p95']})")
    ax.axvline(max_len, color="tab:red", ls="--", label=f"classifier.max_len {max_len}")
    ax.set_xlabel("tokens per text")
    ax.set_ylabel("texts")
    ax.set_title("Text lengths (fastai tokens)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return H.save_figure(fig, path)


_TITLES = {"class_balance": "Class balance", "exact_duplicates": "Exact duplicates",
           "conflicting_labels": "Same text, conflicting labels", "exact_leakage": "Leakage across splits (exact)",
           "near_duplicates": "Near duplicates", "near_leakage": "Leakage across splits (near-duplicate)",
           "length": "Lengths vs classifier.max_len", "oov": "Words the LM never saw (OOV)",
           "label_issues": "Likely mislabelled rows", "empty_looking": "Empty-looking texts",
           "other_language": "Texts in another language"}


def render_html(rep: DataReport, pngs: dict[str, Path]) -> str:
    s = rep.summary
    parts = [f"<p>{s['train']} train / {s['valid']} valid / {s['test']} test rows, {s['unlabelled']} unlabelled "
             f"texts; classes {H.esc(', '.join(s['classes']))}. <b>{s['n_warnings']} warning(s).</b></p>",
             "<h2>Summary</h2>"]
    for f in rep.findings:
        css = {"warning": "warn", "ok": "ok"}.get(f.severity, "info")
        todo = f'<br><span class="todo">What to do: {H.esc(f.action)}</span>' if f.action else ""
        parts.append(f'<div class="{css}"><b>{H.esc(_TITLES.get(f.check, f.check))}</b> ({f.severity}): '
                     f"{H.esc(f.message)}{todo}</div>")
    if "balance" in pngs:
        parts += ["<h2>Class balance</h2>", H.png_tag(pngs["balance"], "class balance")]
    if "lengths" in pngs:
        parts += ["<h2>Lengths</h2>", H.png_tag(pngs["lengths"], "text lengths")]
    lt = pd.DataFrame([{"split": k, **{q: v[q] for q in ("p50", "p90", "p95", "p99", "max")},
                        "cut_share": v["cut_share"]} for k, v in s["lengths"].items()])
    parts.append(H.table(lt))
    if s.get("oov"):
        parts += ["<h2>Most frequent words missing from the LM's vocab</h2>",
                  H.table(pd.DataFrame(s["oov"]["top_unknown"], columns=["token", "count"]))]
    for issue in ("conflicting_labels", "exact_leakage", "near_leakage", "exact_duplicate", "near_duplicate",
                  "label_issue", "empty_looking", "other_language"):
        sub = rep.rows[rep.rows["issue"] == issue]
        if len(sub):
            title = _TITLES.get(issue, _TITLES.get(issue + "s", issue))
            more = f" (first 50 of {len(sub)}; all in report_rows.csv)" if len(sub) > 50 else ""
            parts += [f"<h2>{H.esc(title)}{H.esc(more)}</h2>",
                      H.table(sub.head(50)[["split", "row", "label", "detail", "text"]])]
    return H.page("Data report", parts, subtitle=f"source: {s['source']}")


def read_report(out_dir: str | Path) -> dict[str, Any]:
    """report.json of a finished report, as a dict."""
    from ..lab.common import finished_result

    path = finished_result(out_dir, "report.json", "the result", "report", "the report")
    return json.loads(path.read_text(encoding="utf-8"))
