"""`make demo` / `ulmfit-lab demo`: the quickstart end to end on IMDb.

Without `--data`, IMDb comes through fastai's own `untar_data(URLs.IMDB)`: fastai's download checks (size and
hash) and its cache (`~/.fastai/data/imdb`, or under `$FASTAI_HOME`), so a second demo downloads nothing.
"""

from __future__ import annotations

import os
from pathlib import Path

from ..fileio import DownloadError, fastai_untar
from .sources import DataError

# another address for fastai's imdb.tgz (a mirror; the tests' local server)
IMDB_URL_ENV = "ULMFIT_LAB_IMDB_URL"
LOCAL_COPY_HINT = ("point at a local copy: make demo DATA=path/to/aclImdb (a folder, or aclImdb_v1.tar.gz / "
                   ".tar.xz), or ulmfit-lab demo --data PATH")


def imdb_url() -> str:
    """fastai's IMDb archive (`URLs.IMDB`), unless `$ULMFIT_LAB_IMDB_URL` names another address."""
    from fastai.data.external import URLs

    return os.environ.get(IMDB_URL_ENV) or URLs.IMDB


def fetch_imdb(url: str | None = None, timeout_s: float = 30.0) -> Path:
    """Download and extract IMDb with fastai's `untar_data` (nothing to do when fastai has it already).

    Returns:
        The extracted folder (`train/`, `test/` with one folder per class, `unsup/`): a `data.path`.

    Raises:
        DataError: the download failed (no network, say), in one line that says how to use a local copy.
    """
    url = url or imdb_url()
    try:
        return fastai_untar(url, timeout_s=timeout_s)
    except DownloadError as e:
        raise DataError(f"could not download IMDb from {url} ({e}); {LOCAL_COPY_HINT}") from None
