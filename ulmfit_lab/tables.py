"""Stream tables in and out in chunks of rows: CSV/TSV (also .gz/.xz/...), JSONL, parquet, one text per line.

Used by `ulmfit-lab predict`, so a file larger than memory is predicted chunk by chunk. Output is written
to a temporary name beside the target and renamed at the end: an interrupted run leaves no half file.
"""

from __future__ import annotations

import io
import os
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd

from .data import TEXT, DataError, read_table

_SEP = {".csv": ",", ".tsv": "\t", ".tab": "\t"}


def _kind(path: Path) -> str:
    suffixes = [s.lower() for s in path.suffixes]
    ext = suffixes[-1] if suffixes else ""
    if ext in (".xz", ".gz", ".bz2", ".zst") and len(suffixes) > 1:
        ext = suffixes[-2]
    return {".ndjson": ".jsonl", ".pq": ".parquet", ".tab": ".tsv"}.get(ext, ext)


def count_rows(path: str | Path) -> int | None:
    """Rows in a file when that is cheap to know (parquet metadata, lines of .txt/.jsonl), else None."""
    path = Path(path)
    kind = _kind(path)
    if not path.is_file() or path.suffix.lower() in (".xz", ".gz", ".bz2", ".zst"):
        return None
    if kind == ".parquet":
        import pyarrow.parquet as pq

        return pq.ParquetFile(path).metadata.num_rows
    if kind in (".txt", ".jsonl"):
        with open(path, "rb") as f:
            n, last = 0, b"\n"
            for block in iter(lambda: f.read(1 << 22), b""):
                n += block.count(b"\n")
                last = block[-1:]
            return n + (last != b"\n")
    return None


def iter_table(path: str | Path, text_column: str = TEXT, chunk_rows: int = 8192) -> Iterator[pd.DataFrame]:
    """DataFrames of at most `chunk_rows` rows; every one has `text_column` holding strings."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"input file not found: {path}")
    kind = _kind(path)
    if kind in _SEP:
        chunks = pd.read_csv(path, sep=_SEP[kind], encoding="utf-8", chunksize=chunk_rows, keep_default_na=False,
                             na_values=[""], dtype={text_column: object})
    elif kind == ".jsonl":
        chunks = pd.read_json(path, lines=True, chunksize=chunk_rows, dtype=False)
    elif kind == ".parquet":
        import pyarrow.parquet as pq

        chunks = (b.to_pandas() for b in pq.ParquetFile(path).iter_batches(batch_size=chunk_rows))
    elif kind == ".txt":
        chunks = _text_lines(path, chunk_rows)
    else:
        chunks = iter([read_table(path)])  # .json and anything read_table knows: read whole
    start = 0
    for df in chunks:
        if text_column not in df.columns:
            raise DataError(f"{path}: no column {text_column!r}; columns found: {list(df.columns)}. "
                            "Use --text-column NAME")
        bad = np.flatnonzero(~df[text_column].map(lambda t: isinstance(t, str)).values)
        if len(bad):
            raise DataError(f"{path}: {len(bad)} row(s) of column {text_column!r} hold no text (empty or not a "
                            f"string; first rows: {(bad[:5] + start).tolist()}, counted from 0 after the header); "
                            "fill or drop them")
        start += len(df)
        yield df.reset_index(drop=True)


def _text_lines(path: Path, chunk_rows: int) -> Iterator[pd.DataFrame]:
    with open(path, encoding="utf-8", newline="") as f:
        while True:
            lines = [line.rstrip("\r\n") for _, line in zip(range(chunk_rows), f)]
            if not lines:
                return
            yield pd.DataFrame({TEXT: lines})


class TableWriter:
    """Append DataFrames to a CSV/TSV/JSONL/parquet file (by suffix), or CSV on stdout when `path` is None."""

    def __init__(self, path: str | Path | None):
        self.path = Path(path) if path is not None else None
        self.kind = _kind(self.path) if self.path is not None else ".csv"
        if self.kind not in (*_SEP, ".jsonl", ".parquet"):
            raise DataError(f"--output {path}: unknown file type {self.kind or '(none)'}; use .csv, .tsv, "
                            ".jsonl or .parquet")
        self._tmp: str | None = None
        self._fh: io.TextIOBase | None = None
        self._pq = None
        self._first = True

    def __enter__(self) -> TableWriter:
        if self.path is None:
            self._fh = sys.stdout
        else:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd, self._tmp = tempfile.mkstemp(prefix=f".{self.path.name}.", suffix=".tmp", dir=self.path.parent)
            os.close(fd)
            if self.kind != ".parquet":
                self._fh = open(self._tmp, "w", encoding="utf-8", newline="")
        return self

    def write(self, df: pd.DataFrame) -> None:
        if self.kind == ".parquet":
            import pyarrow as pa
            import pyarrow.parquet as pq

            if self._pq is None:
                table = pa.Table.from_pandas(df, preserve_index=False)
                self._pq = pq.ParquetWriter(self._tmp, table.schema)
            else:
                table = pa.Table.from_pandas(df, schema=self._pq.schema, preserve_index=False)
            self._pq.write_table(table)
        elif self.kind == ".jsonl":
            text = df.to_json(orient="records", lines=True, force_ascii=False)
            self._fh.write(text if text.endswith("\n") or not text else text + "\n")
        else:
            df.to_csv(self._fh, index=False, header=self._first, sep=_SEP[self.kind])
        self._first = False

    def __exit__(self, exc_type, exc, tb) -> None:
        if self.kind == ".parquet" and self._pq is None and exc_type is None:
            import pyarrow as pa
            import pyarrow.parquet as pq

            pq.write_table(pa.table({}), self._tmp)  # an empty input still gives a readable file
        if self._pq is not None:
            self._pq.close()
        if self._fh is not None and self._fh is not sys.stdout:
            self._fh.close()
        if self._tmp is None:
            return
        if exc_type is None:
            os.replace(self._tmp, self.path)
        elif os.path.exists(self._tmp):
            os.unlink(self._tmp)
