"""Predict a whole file: stream its rows through a classifier or an ensemble and write them back with the
predictions. It sits above `ensemble` (which sits above `predict`), so it can open either kind of model.
"""

from __future__ import annotations

import itertools
import sys
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
from tqdm.auto import tqdm

from ..data.tables import TableWriter, count_rows, iter_table
from ..device import Precision
from .ensemble import load_model
from .predict import CHUNK, add_prediction_columns


def predict_file(model: str | Path, input_path: str | Path, output: str | Path | None, text_column: str = "text",
                 batch_size: int | None = None, precision: Precision = "auto", chunk_rows: int = CHUNK,
                 progress: bool = True) -> int:
    """Predict every row of a CSV/TSV/JSONL/parquet/text file, streaming, and write the rows back with
    `prediction` and one `proba_<label>` column per class (the input's columns are kept); a multi-label
    model's `prediction` joins the labels with `|` (or its training `data.label_sep`), a multi-task model
    writes `prediction_<task>` per task and `proba_<task>:<class>`.

    The file is read by `tables.iter_table`, with the rules training's reader follows; its first chunk is
    read and checked before the model is loaded.

    Returns:
        The number of rows written.

    Raises:
        DataError: the input is missing, empty, binary, not UTF-8, unparseable, lacks `text_column`, or has a
            row without text.
    """
    chunks = iter_table(input_path, text_column, chunk_rows)
    first = next(chunks, None)  # a wrong, empty or unreadable file fails here, before the model is loaded
    predictor = load_model(model, precision=precision)  # a classifier, or an ensemble averaging its members
    frames: list[pd.DataFrame] = []

    def texts() -> Iterator[list[str]]:
        for df in itertools.chain([] if first is None else [first], chunks):
            frames.append(df)
            yield df[text_column].tolist()

    n = 0
    with TableWriter(output) as writer, tqdm(total=count_rows(input_path), desc="Predicting", unit="text",
                                             file=sys.stderr, disable=not progress) as bar:
        for proba in predictor.iter_chunks(texts(), batch_size):
            out = frames.pop(0).copy()
            add_prediction_columns(out, predictor, proba)  # `prediction` (one per task) and `proba_*`
            writer.write(out)
            n += len(out)
            bar.update(len(out))
    return n
