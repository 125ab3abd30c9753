"""Data sources -> one labelled table per split plus unlabelled texts, checked before any training.

Sources: a pandas DataFrame, CSV/TSV/JSONL/parquet/txt files, a folder with one sub-folder per class,
an aclImdb-style tree (`train/`, `test/`, `unsup/`) or its tar archive, or `hf:NAME[:CONFIG]`. Files are
read by `tables.read_table`, the reader `predict` uses too, so both see the same rows.
"""

from __future__ import annotations

import hashlib
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from .. import fileio
from ..config import DataConfig, label_columns
from .labels import (
    MULTI_LABEL,
    MULTI_TASK,
    SINGLE,
    LabelSpec,
    check_spec,
    is_missing,
    labelled_rows,
    mode_of,
    parse_label_sets,
    spec_from_train,
    unseen_labels,
)
from .tables import TEXT, DataError, read_table, read_text_file, require_columns, table_kind

LABEL = "label"


class DataWarning(UserWarning):
    """Input data is usable but suspicious (e.g. the same text with different labels)."""


@dataclass
class LabelledData:
    """Splits as DataFrames with columns `text` and `label`, plus texts for LM fine-tuning only.

    Multi-label and multi-task rows hold a tuple in `label` (`labels.py`); `mode`, `tasks` and `label_sep`
    say which.
    """

    train: pd.DataFrame
    valid: pd.DataFrame
    test: pd.DataFrame | None = None
    unlabelled: list[str] = field(default_factory=list)
    mode: str = SINGLE
    tasks: list[str] = field(default_factory=list)
    label_sep: str | None = None

    @property
    def spec(self) -> LabelSpec:
        """The label mode and output columns, from the labels in train."""
        return spec_from_train(self.mode, self.train[LABEL], self.tasks, self.label_sep)

    @property
    def classes(self) -> list:
        """The label of each classifier output (multi-task: `task:class`)."""
        return self.spec.output_names

    def fingerprint(self) -> str:
        """A hash of every text and label, so a cached result is reused only for the same data."""
        h = hashlib.sha256()
        for name, df in (("train", self.train), ("valid", self.valid), ("test", self.test)):
            h.update(name.encode())
            if df is not None:
                h.update(pd.util.hash_pandas_object(df[[TEXT, LABEL]].astype(str), index=False).values)
        h.update(pd.util.hash_pandas_object(pd.Series(self.unlabelled, dtype=str), index=False).values)
        return h.hexdigest()[:16]

    def summary(self) -> dict:
        return {
            "train": len(self.train),
            "valid": len(self.valid),
            "test": 0 if self.test is None else len(self.test),
            "unlabelled": len(self.unlabelled),
            "classes": [_jsonable(c) for c in self.classes],
            **({} if self.mode == SINGLE else {"label_mode": self.mode}),
        }


def _jsonable(x):
    return x.item() if isinstance(x, np.generic) else x


# ---------------------------------------------------------------- reading files


def _read_class_folders(root: Path, skip: list[str]) -> pd.DataFrame:
    rows = []
    for sub in sorted(p for p in root.iterdir() if p.is_dir() and p.name not in skip):
        for f in sorted(sub.glob("*.txt")):
            rows.append((read_text_file(f), sub.name))
    df = pd.DataFrame(rows, columns=[TEXT, LABEL])
    df.attrs["standard"] = True
    return df


def _read_folder_texts(folder: Path) -> list[str]:
    return [read_text_file(f) for f in sorted(folder.glob("*.txt"))]


def extracted_folder(path: Path, cache_dir: Path) -> Path:
    """Unpack an archive (`fileio.is_archive`) once into the cache and return the folder it holds."""
    st = path.stat()
    tag = hashlib.sha256(f"{path.resolve()}|{st.st_size}|{st.st_mtime_ns}".encode()).hexdigest()[:12]
    dest = fileio.extract_archive(path, cache_dir / "archives" / f"{path.name.split('.')[0]}-{tag}")
    entries = [p for p in dest.iterdir() if not p.name.startswith(".")]
    return entries[0] if len(entries) == 1 and entries[0].is_dir() else dest


def read_source(spec: str, cfg: DataConfig, cache_dir: Path, text_column: str | None = None,
                ) -> dict[str, pd.DataFrame | list[str]]:
    """Read one data source into `{split: DataFrame}` (split 'all' when it has no split of its own).

    A table file is read by `tables.read_table` with `text_column` (default `cfg.text_column`) as strings
    and `cfg.label_column` as labels.
    """
    if spec.startswith("hf:"):
        return _read_hf(spec[3:])
    path = Path(spec).expanduser()
    if not path.exists():
        raise DataError(f"data not found: {path} (expected a file, a folder or an archive; check the path)")
    if fileio.is_archive(path):
        path = extracted_folder(path, cache_dir)
    if path.is_dir():
        if (path / "train").is_dir():
            out: dict[str, pd.DataFrame | list[str]] = {}
            for split in ("train", "valid", "test"):
                if (path / split).is_dir():
                    out[split] = _read_class_folders(path / split, cfg.unlabelled_folders)
            unsup = [t for name in cfg.unlabelled_folders if (path / "train" / name).is_dir()
                     for t in _read_folder_texts(path / "train" / name)]
            if unsup:
                out["unlabelled"] = unsup
            return out
        return {"all": _read_class_folders(path, cfg.unlabelled_folders)}
    if table_kind(path) is None:
        raise DataError(
            f"{path}: unknown file type {''.join(path.suffixes) or '(none)'}; expected .csv, .tsv, .jsonl, .json, "
            ".parquet, .txt, a folder with one sub-folder per class, or a .tar.gz/.tar.xz/.zip of one"
        )
    return {"all": read_table(path, text_column=text_column or cfg.text_column, label_column=cfg.label_column)}


def _read_hf(name: str) -> dict[str, pd.DataFrame | list[str]]:
    import datasets

    repo, _, conf = name.partition(":")
    try:
        dsd = datasets.load_dataset(repo, conf or None)
    except Exception as e:  # the hub raises many types; all mean "could not get it"
        raise DataError(
            f"could not load Hugging Face dataset {repo!r}: {e}. Without network, pass a local path "
            "instead (data.path=path/to/file_or_folder)"
        ) from None
    out: dict[str, pd.DataFrame | list[str]] = {}
    for split, ds in dsd.items():
        key = {"validation": "valid", "unsupervised": "unlabelled"}.get(split, split)
        out[key] = ds.to_pandas()
    if isinstance(out.get("unlabelled"), pd.DataFrame):
        df = out["unlabelled"]
        out["unlabelled"] = df[df.columns[0]].astype(str).tolist() if "text" not in df else df["text"].tolist()
    return out


# ---------------------------------------------------------------- checks and splits


def standardize(df: pd.DataFrame, cfg: DataConfig, where: str, labelled: bool = True, mode: str | None = None
                ) -> pd.DataFrame:
    """Rename the configured columns to text/label and check every cell; errors list what was found.

    `mode` (`labels.py`; default: from `cfg` and this table's label cells) is kept in `attrs["label_mode"]`;
    a multi-label or multi-task table comes back with a tuple per row in `label` (multi-task: None for a
    task the row has no label for; a row needs one in some task).
    """
    if not isinstance(df, pd.DataFrame):
        raise DataError(f"{where}: expected a table (DataFrame), found {type(df).__name__}")
    tasks = label_columns(cfg) if labelled and len(label_columns(cfg)) > 1 else []
    if df.attrs.get("standard") and not tasks:  # read from class folders: already text/label
        cols = {TEXT: TEXT, LABEL: LABEL} if labelled else {TEXT: TEXT}
    else:
        label_cols = {t: t for t in tasks} if tasks else {cfg.label_column: LABEL} if labelled else {}
        cols = {cfg.text_column: TEXT, **label_cols}
        require_columns(df, list(cols), where, "Set data.text_column=... and data.label_column=...")
    out = df[list(cols)].rename(columns=cols).reset_index(drop=True)
    if len(out) == 0:
        raise DataError(f"{where}: the dataset is empty (0 rows); point data.path at a file with rows")
    if labelled and mode is None:
        mode = mode_of(cfg, None if tasks else out[LABEL])
    bad = ~out[TEXT].map(is_text)
    if tasks:  # a missing cell: not labelled for that task (partial labels); no label at all is an error
        for col in tasks:
            out[col] = _task_cells(out[col])
        bad |= out[tasks].isna().all(axis=1)
    elif labelled and mode != MULTI_LABEL:  # (multi-label: a missing cell is an empty label list, below)
        bad |= out[LABEL].isna()
    if bad.any():
        rows = np.flatnonzero(bad.values)
        r = int(rows[0])
        label = (f", labels {_short(out.loc[r, tasks].to_dict(), 80)}" if tasks else
                 f", label {_short(out[LABEL].iloc[r])}" if labelled else "")
        missing = " or no label in any task" if tasks else " or a missing label" if labelled else ""
        msg = (f"{where}: {len(rows)} row(s) have a missing or non-string text (or invalid Unicode){missing} "
               f"(first rows: {rows[:5].tolist()}, counted from 0 after the header; row {r}: text "
               f"{_short(out[TEXT].iloc[r])}{label})")
        if not cfg.drop_invalid:
            raise DataError(msg + "; fix them, or set data.drop_invalid=true to drop them")
        out = out[~bad].reset_index(drop=True)
    blank = out[TEXT].str.strip() == ""
    if blank.any():
        rows = np.flatnonzero(blank.values)
        msg = f"{where}: {len(rows)} text(s) are empty or whitespace only (first rows: {rows[:5].tolist()})"
        if not cfg.drop_invalid:
            raise DataError(msg + "; remove them, or set data.drop_invalid=true to drop them")
        out = out[~blank].reset_index(drop=True)
    if labelled and mode == MULTI_LABEL:
        sets, empty = parse_label_sets(out[LABEL], cfg.label_sep, where, cfg.drop_invalid)
        out = out.assign(**{LABEL: sets})[~empty].reset_index(drop=True)
    if len(out) == 0:
        raise DataError(f"{where}: no usable rows left after dropping invalid ones")
    for col in tasks:
        _check_label_types(out, col, where, f" in column {col!r}")
    if tasks:  # one tuple per row, in task order
        out = out.assign(**{LABEL: list(zip(*(out[t] for t in tasks)))}).drop(columns=[t for t in tasks if t != LABEL])
    elif labelled and mode == SINGLE:
        _check_label_types(out, LABEL, where)
        out[LABEL] = out[LABEL].map(_jsonable)
    out.attrs["label_mode"] = mode if labelled else None
    return out


def _task_cells(values: pd.Series) -> pd.Series:
    """A task's column with None where the row has no label for it, and Python scalars elsewhere. Integer
    labels come back as integers: a missing cell made pandas read the column as floats (1.0, NaN)."""
    cells = [None if is_missing(v) else _jsonable(v) for v in values]
    known = [v for v in cells if v is not None]
    if len(known) < len(cells) and known and all(isinstance(v, float) and v.is_integer() for v in known):
        cells = [None if v is None else int(v) for v in cells]
    return pd.Series(cells, index=values.index, dtype=object)


def _check_label_types(out: pd.DataFrame, col: str, where: str, what: str = "") -> None:
    kinds = out[col].dropna().map(lambda v: type(_jsonable(v)).__name__)  # (multi-task: None, no label)
    if kinds.nunique() > 1:
        firsts = {k: int(kinds.index[np.flatnonzero((kinds == k).values)[0]]) for k in sorted(set(kinds))}
        examples = ", ".join(f"{k} (e.g. row {r}: {_short(out[col].iloc[r])})" for k, r in firsts.items())
        raise DataError(
            f"{where}: labels{what} mix types: {examples}; use one type (all strings or all integers), "
            "e.g. fix the odd rows or convert the column"
        )


def is_text(t) -> bool:
    """A string that is valid Unicode (no lone surrogates, which spaCy and Arrow both reject)."""
    if not isinstance(t, str):
        return False
    if t.isascii():
        return True
    try:
        t.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _short(v, n: int = 40) -> str:
    """A cell for an error message: its repr, cut short (a text may be megabytes long)."""
    r = repr(v)
    if len(r) <= n:
        return r
    return r[:n] + (f"... ({len(v)} chars)" if isinstance(v, str) else "...")


def warn_conflicting_labels(splits: dict[str, pd.DataFrame | None]) -> int:
    """Warn (DataWarning) when the same text carries different labels, within or across splits.

    Returns the number of such texts. Not an error: real data has some label noise, but a large count
    usually means a wrong label column or a broken merge.
    """
    frames = [df[[TEXT, LABEL]].assign(split=name) for name, df in splits.items() if df is not None]
    both = pd.concat(frames, ignore_index=True)
    n_labels = both.groupby(TEXT, sort=False)[LABEL].nunique()
    conflicting = n_labels[n_labels > 1]
    if conflicting.empty:
        return 0
    rows = both[both[TEXT].isin(conflicting.index)]
    per_split = rows.groupby("split", sort=False).size().to_dict()
    text = conflicting.index[0]
    labels = sorted(rows.loc[rows[TEXT] == text, LABEL].unique().tolist(), key=str)
    warnings.warn(
        f"{len(conflicting)} distinct text(s) occur with different labels ({len(rows)} rows: "
        f"{', '.join(f'{k} {v}' for k, v in per_split.items())}; e.g. {_short(text, 60)} is labelled "
        f"{labels}). Training goes on; deduplicate or fix the labels if this is more than label noise",
        DataWarning, stacklevel=3)
    return len(conflicting)


def _sample(df: pd.DataFrame, n: int | None, seed: int, stratify: bool = True) -> pd.DataFrame:
    if n is None or len(df) <= n:
        return df
    rng = np.random.default_rng(seed)
    if not stratify:
        return df.iloc[np.sort(rng.choice(len(df), n, replace=False))].reset_index(drop=True)
    # proportional per class, so a small sample keeps the class balance
    idx = []
    for _, g in df.groupby(LABEL, sort=True):
        k = max(1, round(n * len(g) / len(df)))
        idx.extend(rng.choice(g.index.values, min(k, len(g)), replace=False))
    idx = np.sort(np.array(idx[:n]) if len(idx) > n else np.array(idx))
    return df.loc[idx].reset_index(drop=True)


def _carve(df: pd.DataFrame, pct: float, seed: int, stratify: bool = True) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Split off a stratified (or, with `stratify=False`, a random) `pct` of rows, reproducibly."""
    rng = np.random.default_rng(seed)
    if not stratify:
        k = min(max(int(round(len(df) * pct)), 1), len(df) - 1) if len(df) > 1 else 0
        mask = df.index.isin(rng.choice(df.index.values, k, replace=False))
        return df[~mask].reset_index(drop=True), df[mask].reset_index(drop=True)
    take = []
    for _, g in df.groupby(LABEL, sort=True):
        k = int(round(len(g) * pct))
        if len(g) > 1:
            k = min(max(k, 1), len(g) - 1)
        take.extend(rng.choice(g.index.values, k, replace=False))
    mask = df.index.isin(take)
    return df[~mask].reset_index(drop=True), df[mask].reset_index(drop=True)


def load_data(
    cfg: DataConfig,
    cache_dir: Path,
    train: pd.DataFrame | None = None,
    valid: pd.DataFrame | None = None,
    test: pd.DataFrame | None = None,
    unlabelled: list[str] | None = None,
) -> LabelledData:
    """Read, check and split the labelled data described by `cfg` (or passed in as DataFrames)."""
    parts, origin = _gather(cfg, cache_dir, {"train": train, "valid": valid, "test": test})

    def where(split: str) -> str:
        return f"{split} ({origin[split]})" if split in origin else split

    if "train" not in parts:
        raise DataError(
            "no training data: set data.path (a file, a class-per-folder tree or an archive), "
            "data.train, or pass a DataFrame to fit()"
        )
    tr, va, te = _split(parts, cfg, where)
    mode = tr.attrs["label_mode"]  # the train split's mode holds for every split (list cells or not)
    _check_labels(tr, va, te, mode, cfg, where)
    warn_conflicting_labels({"train": tr, "valid": va, "test": te})  # here: its warning points at our caller
    texts = _unlabelled_texts(cfg, cache_dir, list(unlabelled or []), parts.get("unlabelled", []))
    tasks = label_columns(cfg) if mode == MULTI_TASK else []
    return LabelledData(tr, va, te, texts, mode, tasks, cfg.label_sep)


def _gather(cfg: DataConfig, cache_dir: Path, frames: dict[str, pd.DataFrame | None]
            ) -> tuple[dict[str, pd.DataFrame | list[str]], dict[str, str]]:
    """Every split as read (`data.path`, then `data.train/valid/test`, then DataFrames passed in, each
    overriding the one before), and the file each came from (named in error messages)."""
    parts: dict[str, pd.DataFrame | list[str]] = {}
    origin: dict[str, str] = {}  # split -> the file it came from, named in error messages
    if cfg.path:
        parts.update(read_source(cfg.path, cfg, cache_dir))
        origin.update({k: cfg.path for k in parts})
    for split, spec in (("train", cfg.train), ("valid", cfg.valid), ("test", cfg.test)):
        if spec:
            src = read_source(spec, cfg, cache_dir)
            parts[split] = src.get(split, src.get("all"))
            origin[split] = spec
    for split, df in frames.items():
        if df is not None:
            parts[split] = df
            origin.pop(split, None)
    if "train" not in parts and "all" in parts:
        parts["train"] = parts.pop("all")
        if "all" in origin:
            origin["train"] = origin.pop("all")
    return parts, origin


def _split(parts: dict, cfg: DataConfig, where: Callable[[str], str]
           ) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame | None]:
    """Standardized train/valid/test: test and valid carved from train where not given, train and test sampled."""
    tr = standardize(parts["train"], cfg, where("train"))
    mode = tr.attrs["label_mode"]  # the train split's mode holds for every split (list cells or not)
    va = standardize(parts["valid"], cfg, where("valid"), mode=mode) if "valid" in parts else None
    te = standardize(parts["test"], cfg, where("test"), mode=mode) if "test" in parts else None
    strat = mode == SINGLE  # a stratum per label set would leave most sets a row or two: a random split instead
    if te is None and cfg.test_pct > 0:
        tr, te = _carve(tr, cfg.test_pct, cfg.seed + 1, strat)
    tr = _sample(tr, cfg.max_train, cfg.seed, strat)
    if va is None:
        tr, va = _carve(tr, cfg.valid_pct, cfg.seed, strat)
    if te is not None:
        te = _sample(te, cfg.max_test, cfg.seed, strat)
    return tr, va, te


def _check_labels(tr: pd.DataFrame, va: pd.DataFrame, te: pd.DataFrame | None, mode: str, cfg: DataConfig,
                  where: Callable[[str], str]) -> None:
    """The label checks of the data's mode, then a non-empty valid."""
    if mode == SINGLE:
        _check_single(tr, va, te, where)
    else:
        _check_multi(tr, va, te, mode, cfg, where)
    if len(va) == 0:
        raise DataError("valid: empty; set data.valid_pct > 0 or give data.valid")


def _unlabelled_texts(cfg: DataConfig, cache_dir: Path, texts: list, from_source: list[str]) -> list[str]:
    """The texts passed in (checked), then the data source's own unlabelled texts, then `data.unlabelled`'s;
    at most `data.max_unlabelled` of them, a random sample."""
    bad = [i for i, t in enumerate(texts) if not is_text(t) or not t.strip()]
    if bad and not cfg.drop_invalid:
        raise DataError(f"unlabelled: {len(bad)} text(s) are missing, not strings, invalid Unicode or blank "
                        f"(first positions: {bad[:5]}; e.g. {_short(texts[bad[0]])}); fix them, or set "
                        "data.drop_invalid=true to drop them")
    if bad:
        dropped = set(bad)
        texts = [t for i, t in enumerate(texts) if i not in dropped]
    texts += [t for t in from_source if isinstance(t, str) and t.strip()]
    for spec in cfg.unlabelled:
        src = read_source(spec, cfg, cache_dir)
        for v in src.values():
            if isinstance(v, list):
                texts += v
            else:
                texts += standardize(v, cfg, f"unlabelled {spec}", labelled=False)[TEXT].tolist()
    if cfg.max_unlabelled is not None and len(texts) > cfg.max_unlabelled:
        rng = np.random.default_rng(cfg.seed)
        texts = [texts[i] for i in np.sort(rng.choice(len(texts), cfg.max_unlabelled, replace=False))]
    return texts


def _check_single(tr: pd.DataFrame, va: pd.DataFrame, te: pd.DataFrame | None, where) -> None:
    """Two classes in train; no class in valid or test that train lacks."""
    classes = set(tr[LABEL])
    if len(classes) < 2:
        raise DataError(
            f"{where('train')}: only one class ({next(iter(classes))!r}) in {len(tr)} rows; a classifier needs "
            "at least two. Check data.label_column and the data"
        )
    for name, df in (("valid", va), ("test", te)):
        if df is not None:
            unseen = sorted(set(df[LABEL]) - classes, key=str)
            if unseen:
                n_rows = int(df[LABEL].isin(unseen).sum())
                raise DataError(
                    f"{where(name)}: label(s) {unseen[:5]} do not occur in train ({n_rows} row(s); train "
                    f"classes: {sorted(classes, key=str)}); fix the labels or add examples of them to train"
                )


def _check_multi(tr: pd.DataFrame, va: pd.DataFrame, te: pd.DataFrame | None, mode: str, cfg: DataConfig,
                 where) -> None:
    """Multi-label and multi-task: two classes per task (labels, for multi-label) in train; no label in
    valid or test that train lacks."""
    spec = spec_from_train(mode, tr[LABEL], label_columns(cfg) if mode == MULTI_TASK else [], cfg.label_sep)
    check_spec(spec, where("train"), len(tr), labelled_rows(spec, tr[LABEL]) if mode == MULTI_TASK else None)
    for name, df in (("valid", va), ("test", te)):
        if df is not None:
            unseen, rows, task = unseen_labels(spec, df[LABEL])
            if unseen:
                raise DataError(f"{where(name)}: label(s) {unseen[:5]}{task} do not occur in train ({int(rows.sum())} "
                                "row(s)); fix the labels or add examples of them to train")


CORPUS_SPLITS = ("all", "train", "valid", "test", "unlabelled")


def read_corpus(specs: list[str], cfg: DataConfig, cache_dir: Path, text_column: str = "text",
                max_docs: int | None = None) -> dict[str, list[str]]:
    """Read a general-domain corpus as documents, one list per source spec.

    A spec is a path (text file, WikiText `.tokens`, table with a text column, folder, archive) or
    `hf:NAME`, optionally followed by `#split[+split]` to keep only some of its splits, e.g.
    `aclImdb.tar.xz#unlabelled`. Without a selector every split but `test` is read, so a labelled
    test set never leaks into LM pretraining.
    """
    out: dict[str, list[str]] = {}
    for spec in specs:
        path_spec, _, sel = spec.partition("#")
        wanted = set(sel.split("+")) if sel else None
        bad = sorted((wanted or set()) - set(CORPUS_SPLITS))
        if bad:
            raise DataError(f"corpus {spec}: unknown split(s) {bad}; expected some of {list(CORPUS_SPLITS)}, "
                            "e.g. aclImdb.tar.xz#unlabelled")
        path = Path(path_spec)
        docs: list[str] = []
        if path.is_file() and path.suffix.lower() in (".tokens", ".raw"):
            docs = [d for d in read_text_file(path).split("\n \n = ") if d.strip()]
            out[spec] = docs[:max_docs] if max_docs is not None else docs
            continue
        parts = read_source(path_spec, cfg, cache_dir, text_column)
        found = [k for k in parts if (k in wanted if wanted else k != "test")]
        if wanted and not found:
            raise DataError(f"corpus {spec}: no split {sorted(wanted)} in it; splits found: {sorted(parts)}")
        for split in found:
            v = parts[split]
            if isinstance(v, pd.DataFrame) and v.shape[1] == 1 and text_column not in v.columns and path.is_file():
                v = read_table(path, header=False).rename(columns={0: text_column})  # headerless (fastai's WikiText)
            if isinstance(v, list):
                docs += v
            elif text_column in v.columns:
                docs += [t for t in v[text_column].tolist() if isinstance(t, str) and t.strip()]
            elif TEXT in v.columns:
                docs += [t for t in v[TEXT].tolist() if isinstance(t, str) and t.strip()]
            else:
                raise DataError(
                    f"corpus {spec}: no text column {text_column!r}; columns found: {list(v.columns)}. "
                    "Set lm_pretrain.text_column=..."
                )
        if not docs:
            raise DataError(f"corpus {spec}: no documents found")
        out[spec] = docs[:max_docs] if max_docs is not None else docs
    return out
