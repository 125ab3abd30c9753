"""The one table reader, used by every command that reads a table (training, `report`, `predict`,
`interpret`, `suggest`), and the streaming writer of `predict`.

Formats: CSV/TSV (also .gz/.bz2/.xz/.zst), JSONL, JSON, parquet, and .txt with one text per line. The same
rules hold for every command, so a file gives training the rows it gives prediction:

- Only an empty CSV/TSV cell, a JSON null or a parquet null is missing. "NA", "null", "None" and "nan"
  are text like any other: a review that reads "NA" is a review, and an id "NA" is written back as "NA".
  One exception, in CSV/TSV: in the label column of labelled data (`label_column=`, given by training,
  `report` and `interpret`) pandas' missing-value words still mean "no label", so such a row is reported
  as a missing label rather than read as a class "NA".
- The text column of a CSV/TSV is read as strings: a text "007" stays "007".
- A .txt file holds one text per line: a line ends at "\\n" (and "\\r\\n"); any other character (a lone
  "\\r", a form feed, U+2028) is part of the text. A UTF-8 BOM at the start is dropped, as in a CSV.
- Files are UTF-8. A missing, empty or binary file, a byte that is not UTF-8 (with its line), a file that
  cannot be parsed and a missing column are each a one-line `DataError` that says what to do.

`iter_table` reads in chunks of rows, so `predict` streams a file larger than memory; `read_table` reads
the same rows at once. `TableWriter` writes to a temporary name beside the target, renamed at the end.
"""

from __future__ import annotations

import bz2
import gzip
import io
import lzma
import sys
import zlib
from collections.abc import Iterator
from contextlib import AbstractContextManager
from pathlib import Path
from typing import IO, Any

import numpy as np
import pandas as pd

from ..fileio import atomic_path

TEXT = "text"
_SEP = {".csv": ",", ".tsv": "\t"}
_KINDS = (".csv", ".tsv", ".jsonl", ".json", ".parquet", ".txt")
_COMPRESSED = (".gz", ".bz2", ".xz", ".zst")
_ALIASES = {".tab": ".tsv", ".ndjson": ".jsonl", ".pq": ".parquet"}
# pandas' default missing-value words: in a CSV/TSV they mean "no label" in a label column (and only there)
_NA_WORDS = ["", "#N/A", "#N/A N/A", "#NA", "-1.#IND", "-1.#QNAN", "-NaN", "-nan", "1.#IND", "1.#QNAN", "<NA>",
             "N/A", "NA", "NULL", "NaN", "None", "n/a", "nan", "null"]
_HEAD = 8192  # bytes looked at to tell an empty or binary file
_EXPECTED = {".csv": "a UTF-8 CSV table", ".tsv": "a UTF-8 TSV table", ".jsonl": "UTF-8 JSON lines, one object "
             "per row", ".json": "a UTF-8 JSON table", ".txt": "UTF-8 text, one text per line",
             ".parquet": "a parquet table"}


class DataError(ValueError):
    """Input data is missing or malformed; the message says what was expected, found, and what to do."""


def table_kind(path: str | Path) -> str | None:
    """The format of a table file by its suffixes (`.csv`, `.tsv`, `.jsonl`, `.json`, `.parquet`, `.txt`;
    a compressed `.csv.gz` is `.csv`), or None for a suffix this reader does not know."""
    suffixes = [s.lower() for s in Path(path).suffixes]
    ext = suffixes[-1] if suffixes else ""
    if ext in _COMPRESSED and len(suffixes) > 1:
        ext = suffixes[-2]
    ext = _ALIASES.get(ext, ext)
    return ext if ext in _KINDS else None


# ---------------------------------------------------------------- reading


def read_table(path: str | Path, header: bool = True, text_column: str | None = None,
               label_column: str | list[str] | None = None) -> pd.DataFrame:
    """Read a whole table (see the module docstring for the formats and rules).

    Args:
        path: the file.
        header: False for a CSV/TSV without a header line (columns 0, 1, ...; every cell read as text).
        text_column: the column of texts, read as strings from a CSV/TSV.
        label_column: the column of labels (or several: multi-task), where a CSV/TSV cell "NA", "null",
            "None", ... is missing.

    Returns:
        The rows in file order, with a fresh index.

    Raises:
        DataError: the file is missing, empty, binary, not UTF-8, not parseable, or of an unknown type.
    """
    frames = list(_frames(Path(path), None, header, text_column, label_column))  # one frame: no chunks asked
    return pd.concat(frames, ignore_index=True) if len(frames) != 1 else frames[0].reset_index(drop=True)


def iter_table(path: str | Path, text_column: str = TEXT, chunk_rows: int = 8192) -> Iterator[pd.DataFrame]:
    """DataFrames of at most `chunk_rows` rows, read as `read_table` does; each has `text_column` holding strings.

    Raises:
        DataError: as `read_table`; also when `text_column` is missing or a row has no text (empty or not
            a string).
    """
    path = Path(path)
    start = 0
    for df in _frames(path, chunk_rows, True, text_column, None):
        require_columns(df, [text_column], str(path), "Use --text-column NAME")
        bad = np.flatnonzero(~df[text_column].map(lambda t: isinstance(t, str)).to_numpy(dtype=bool))
        if len(bad):
            raise DataError(f"{path}: {len(bad)} row(s) of column {text_column!r} hold no text (empty or not a "
                            f"string; first rows: {(bad[:5] + start).tolist()}, counted from 0 after the header); "
                            "fill or drop them")
        start += len(df)
        yield df.reset_index(drop=True)


def require_columns(df: pd.DataFrame, columns: list[str], where: str, hint: str) -> None:
    """Raise a DataError naming the missing columns and the ones found, then `hint` (which option to set)."""
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise DataError(f"{where}: column(s) {missing} not found; columns found: {list(df.columns)}. {hint}")


def count_rows(path: str | Path) -> int | None:
    """Rows in a file when that is cheap to know (parquet metadata, lines of .txt/.jsonl), else None."""
    path = Path(path)
    kind = table_kind(path)
    if not path.is_file() or path.suffix.lower() in _COMPRESSED:
        return None
    if kind == ".parquet":
        import pyarrow.parquet as pq

        try:
            return pq.ParquetFile(path).metadata.num_rows
        except Exception:  # not a parquet file after all: reading it says so
            return None
    if kind in (".txt", ".jsonl"):
        with open(path, "rb") as f:
            n, last = 0, b"\n"
            for block in iter(lambda: f.read(1 << 22), b""):
                n += block.count(b"\n")
                last = block[-1:]
            return n + (last != b"\n")
    return None


def read_text_file(path: str | Path) -> str:
    """A whole UTF-8 text file (one document); a bad byte is a DataError naming the file and line."""
    data = Path(path).read_bytes()
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise _not_utf8(path, data[: e.start].count(b"\n") + 1, e.start, data[e.start]) from None


def _frames(path: Path, chunk_rows: int | None, header: bool, text_column: str | None,
            label_column: str | list[str] | None) -> Iterator[pd.DataFrame]:
    """The file as DataFrames of at most `chunk_rows` rows (None: one), every reading error a DataError."""
    if not path.is_file():
        raise DataError(f"file not found: {path}; check the path" if not path.exists()
                        else f"{path} is a folder; expected a table file (.csv, .tsv, .jsonl, .json, .parquet, .txt)")
    kind = table_kind(path)
    if kind is None:
        raise DataError(f"{path}: unknown file type {''.join(path.suffixes) or '(none)'}; expected .csv, .tsv, "
                        ".jsonl, .json, .parquet or .txt (also compressed: .gz, .bz2, .xz, .zst)")
    _check_start(path, kind)
    try:
        if kind in _SEP:
            yield from _csv(path, kind, chunk_rows, header, text_column, label_column)
        elif kind == ".jsonl":
            opts = {"lines": True, "dtype": False, "convert_dates": False, "encoding": "utf-8"}
            if chunk_rows is None:
                yield pd.read_json(path, **opts)
            else:
                with pd.read_json(path, chunksize=chunk_rows, **opts) as reader:
                    yield from reader
        elif kind == ".json":
            yield pd.read_json(path, dtype=False, convert_dates=False, encoding="utf-8")
        elif kind == ".parquet":
            import pyarrow.parquet as pq

            if chunk_rows is None:
                yield pq.read_table(path).to_pandas()
            else:
                yield from (b.to_pandas() for b in pq.ParquetFile(path).iter_batches(batch_size=chunk_rows))
        else:
            yield from _text_lines(path, chunk_rows)
    except DataError:
        raise
    except UnicodeDecodeError:
        raise _utf8_error(path) from None
    except pd.errors.EmptyDataError:
        raise _empty(path, kind) from None
    except (pd.errors.ParserError, ValueError, OSError, EOFError, lzma.LZMAError, zlib.error) as e:
        # a malformed CSV/JSON, a corrupt parquet or compressed file; other OSErrors (permissions) pass on
        if isinstance(e, OSError) and not (type(e).__module__.startswith("pyarrow") or isinstance(e, gzip.BadGzipFile)):
            raise
        first = str(e).strip().splitlines()[0][:300] if str(e).strip() else type(e).__name__
        raise DataError(f"{path}: cannot be read as {kind[1:]} ({first}); check that the file is a valid "
                        f"{kind[1:]} table (quote texts that contain the separator)") from None


def _csv(path: Path, kind: str, chunk_rows: int | None, header: bool, text_column: str | None,
         label_column: str | list[str] | None) -> Iterator[pd.DataFrame]:
    sep = _SEP[kind]
    opts: dict[str, Any] = {"sep": sep, "encoding": "utf-8", "header": 0 if header else None,
                            "keep_default_na": False, "na_values": [""]}
    if not header:
        opts["dtype"] = object  # a headerless table is a corpus: every cell a text
    elif text_column is not None:
        opts["dtype"] = {text_column: object}
    if header and label_column is not None:
        columns = pd.read_csv(path, sep=sep, encoding="utf-8", nrows=0).columns
        labels = {label_column} if isinstance(label_column, str) else set(label_column)
        if labels & set(columns):  # per column: the NA words in the labels only
            opts["na_values"] = {c: _NA_WORDS if c in labels else [""] for c in columns}
    if chunk_rows is None:
        yield pd.read_csv(path, **opts)
    else:
        with pd.read_csv(path, chunksize=chunk_rows, **opts) as reader:
            yield from reader


def _text_lines(path: Path, chunk_rows: int | None) -> Iterator[pd.DataFrame]:
    """One text per line; lines split at b"\\n" only (as `count_rows` counts them), decoded one by one."""
    rows: list[str] = []
    offset = 0
    with _open_binary(path) as f:
        for number, raw in enumerate(f, 1):
            line = raw[:-1] if raw.endswith(b"\n") else raw
            if line.endswith(b"\r"):
                line = line[:-1]
            try:
                text = line.decode("utf-8")
            except UnicodeDecodeError as e:
                raise _not_utf8(path, number, offset + e.start, line[e.start]) from None
            rows.append(text[1:] if number == 1 and text.startswith("\ufeff") else text)  # a BOM, as read_csv
            offset += len(raw)
            if chunk_rows is not None and len(rows) == chunk_rows:
                yield pd.DataFrame({TEXT: rows})
                rows = []
    if rows or chunk_rows is None:
        yield pd.DataFrame({TEXT: rows})


def _open_binary(path: Path) -> IO[bytes]:
    """The file's bytes, decompressed by its last suffix."""
    ext = path.suffix.lower()
    if ext == ".zst":
        try:
            import zstandard
        except ImportError:
            raise DataError(f"{path}: reading .zst needs the zstandard package (pip install zstandard); or "
                            "decompress the file first") from None
        return zstandard.open(path, "rb")
    opener = {".gz": gzip.open, ".bz2": bz2.open, ".xz": lzma.open}.get(ext, open)
    return opener(path, "rb")


def _check_start(path: Path, kind: str) -> None:
    """An empty or binary file is named as such (not as a parser's error about line 1)."""
    if path.stat().st_size == 0:
        raise _empty(path, kind)
    if kind == ".parquet":
        return
    try:
        with _open_binary(path) as f:
            head = f.read(_HEAD)
    except (OSError, EOFError, lzma.LZMAError) as e:
        raise DataError(f"{path}: cannot be read ({e}); check that the file is complete and not corrupt") from None
    if not head or (kind != ".txt" and not head.strip()):
        raise _empty(path, kind)
    if head.startswith((b"\xff\xfe", b"\xfe\xff")):
        raise DataError(f"{path}: the file is UTF-16 text; expected UTF-8. Re-encode it (e.g. `iconv -f utf-16 "
                        "-t utf-8`)")
    controls = sum(head.count(bytes([b])) for b in (*range(0, 8), 11, *range(14, 27), *range(28, 32), 127))
    if b"\x00" in head or (controls >= 8 and controls > len(head) // 20):  # text has next to none
        raise DataError(f"{path}: looks like a binary file, not text ({controls} control bytes in its first "
                        f"{len(head)}); expected {_EXPECTED[kind]}. Check the path (is it the file you meant?)")


def _empty(path: Path, kind: str) -> DataError:
    what = {".txt": "no lines", ".parquet": "no bytes"}.get(kind, "no header, no rows")
    return DataError(f"{path}: the file is empty ({what}); expected {_EXPECTED[kind]}"
                     + (" with a header line and one row per text" if kind in _SEP else ""))


def _not_utf8(path: str | Path, line: int, offset: int, byte: int) -> DataError:
    return DataError(f"{path}, line {line}: not valid UTF-8 (byte {byte:#04x} at offset {offset}); re-encode the "
                     "file as UTF-8 (e.g. `iconv -f latin1 -t utf-8`)")


def _utf8_error(path: Path) -> DataError:
    """The first byte that is not UTF-8, with its line (a parser's own error says neither)."""
    offset = 0
    with _open_binary(path) as f:
        for number, raw in enumerate(f, 1):
            try:
                raw.decode("utf-8")
            except UnicodeDecodeError as e:
                return _not_utf8(path, number, offset + e.start, raw[e.start])
            offset += len(raw)
    return DataError(f"{path}: not valid UTF-8; re-encode the file as UTF-8 (e.g. `iconv -f latin1 -t utf-8`)")


# ---------------------------------------------------------------- writing


class TableWriter:
    """Append DataFrames to a CSV/TSV/JSONL/parquet file (by suffix), or CSV on stdout when `path` is None.

    The file is written under a temporary name and renamed over `path` when the block ends without error:
    an interrupted run leaves no half file.
    """

    def __init__(self, path: str | Path | None):
        self.path = Path(path) if path is not None else None
        self.kind = table_kind(self.path) if self.path is not None else ".csv"
        if self.kind not in (*_SEP, ".jsonl", ".parquet"):
            raise DataError(f"--output {path}: unknown file type {self.kind or ''.join(self.path.suffixes) or '(none)'}"
                            "; use .csv, .tsv, .jsonl or .parquet")
        self._atomic: AbstractContextManager[Path] | None = None
        self._tmp: Path | None = None
        self._fh: io.TextIOBase | None = None
        self._pq = None
        self._first = True

    def __enter__(self) -> TableWriter:
        if self.path is None:
            self._fh = sys.stdout
        else:
            self._atomic = atomic_path(self.path)
            self._tmp = self._atomic.__enter__()
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

    def __exit__(self, exc_type, exc, tb) -> bool:
        try:
            self._close(ok=exc_type is None)
        except BaseException as e:  # a failed flush: the temporary file goes, `path` stays as it was
            if self._atomic is None or not self._atomic.__exit__(type(e), e, e.__traceback__):
                raise
            return False
        return bool(self._atomic.__exit__(exc_type, exc, tb)) if self._atomic is not None else False

    def _close(self, ok: bool) -> None:
        if self.kind == ".parquet" and self._pq is None and ok and self._tmp is not None:
            import pyarrow as pa
            import pyarrow.parquet as pq

            pq.write_table(pa.table({}), self._tmp)  # an empty input still gives a readable file
        if self._pq is not None:
            self._pq.close()
        if self._fh is not None and self._fh is not sys.stdout:
            self._fh.close()
