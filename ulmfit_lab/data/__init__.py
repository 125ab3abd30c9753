"""Labelled data and corpora: where texts come from (files, folders, archives, HF datasets) and how they split.

`tables` is the one reader of CSV/TSV/JSON/Parquet/txt files for training and prediction alike; `sources`
standardizes, deduplicates and splits them into train/valid/test; `demo` fetches IMDb for `make demo`.
"""

from .sources import DataWarning, LabelledData, load_data, read_corpus, read_source
from .tables import DataError, iter_table, read_table

__all__ = ["DataError", "DataWarning", "LabelledData", "iter_table", "load_data", "read_corpus", "read_source",
           "read_table"]
