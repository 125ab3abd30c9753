"""File I/O shared by every writer: atomic files and folders, checksums, archive extraction, disk errors.

Whatever ulmfit_lab writes goes to a temporary name beside its target and is renamed into place only when
complete, so a crash, a kill or a full disk never leaves a half-written file or folder where a reader looks:
`atomic_path` for one file, `atomic_folder` for a folder (a model, a tokenized corpus, an extracted
archive). A write refused by the disk is a `StorageError` that names the file the user knows.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import re
import shutil
import socket
import tarfile
import tempfile
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

# what a full disk, a quota, a file size limit or a read-only/unwritable folder raise
_DISK_ERRNOS = {errno.ENOSPC, errno.EFBIG, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM, errno.EIO,
                errno.ENOTDIR}
# torch.save and safetensors report a failed write as RuntimeError / SafetensorError, not OSError
_WRITE_FAILED = re.compile(r"os error (28|27|122|30|13)|No space left|File too large|Disk quota|Read-only file"
                           r"|file write failed|inline_container\.cc.*unexpected pos")

EXTRACTED = ".extracted"  # written last into an extracted archive's folder: its presence means "complete"


class StorageError(OSError):
    """A file in the run directory or the cache could not be written (disk full, quota, size limit,
    read-only or not a folder). Files written before are left as they were."""


def is_storage_failure(e: BaseException) -> bool:
    """Whether `e` means "the disk refused the write" rather than a bug."""
    if isinstance(e, StorageError):
        return True
    if isinstance(e, OSError):
        return e.errno in _DISK_ERRNOS
    is_writer = isinstance(e, RuntimeError) or type(e).__name__ == "SafetensorError"
    return is_writer and bool(_WRITE_FAILED.search(str(e)))


def _why(path: Path | str, e: BaseException) -> str:
    if isinstance(e, OSError) and e.strerror:
        return e.strerror
    # torch.save and safetensors do not pass the errno on: look at the disk and the limits instead
    try:
        if shutil.disk_usage(Path(path).parent).free < 1 << 20:
            return "no space left on the device"
    except OSError:
        pass
    import resource

    soft = resource.getrlimit(resource.RLIMIT_FSIZE)[0]
    if soft != resource.RLIM_INFINITY:
        return f"file size limit reached (ulimit -f: {soft} bytes)"
    return f"the write failed ({str(e).splitlines()[0][:160]})"


def storage_error(path: Path | str, e: BaseException) -> StorageError:
    """A StorageError that names the file, says why, and what to do."""
    why = _why(path, e)
    return StorageError(
        f"cannot write {path}: {why}. Free disk space (or fix the folder's permissions, or point run.dir / "
        "run.cache_dir elsewhere) and rerun the same command: finished stages are kept and an interrupted "
        "one resumes from its last checkpoint"
    )


@contextmanager
def storage_errors(where: Path | str) -> Iterator[None]:
    """Turn a disk-full/unwritable failure raised inside the block into a StorageError naming the file."""
    try:
        yield
    except StorageError:
        raise
    except Exception as e:
        if not is_storage_failure(e):
            raise
        raise storage_error(getattr(e, "filename", None) or where, e) from e


# ---------------------------------------------------------------- files


@contextmanager
def atomic_path(path: str | Path, suffix: str = ".tmp") -> Iterator[Path]:
    """Yield a temporary path beside `path`; rename it over `path` only if the block succeeds.

    Args:
        path: the file to write.
        suffix: the temporary name's suffix (`.png` for writers that pick the format by suffix).
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix, dir=path.parent)
    except OSError as e:
        raise storage_error(path, e) from e
    os.close(fd)
    try:
        try:
            yield Path(tmp)
            os.replace(tmp, path)
        except Exception as e:  # the old `path`, if any, is untouched: only the temporary file was written
            if is_storage_failure(e):
                raise storage_error(path, e) from e
            raise
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def write_json(path: str | Path, obj: Any) -> None:
    """`obj` as indented JSON, written atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, default=str), encoding="utf-8")


def write_text(path: str | Path, text: str) -> None:
    """`text` as UTF-8, written atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def sha256_file(path: str | Path) -> str:
    """The SHA-256 of a file's bytes, as hex, read in blocks (a model may be gigabytes)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


# ---------------------------------------------------------------- folders


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True


def _stale(folder: Path, pattern: str) -> list[Path]:
    """Paths `folder/pattern` ending in `-PID` of a process that is gone."""
    out = []
    for p in Path(folder).glob(pattern):
        pid = p.name.rsplit("-", 1)[-1]
        if pid.isdigit() and not _alive(int(pid)):
            out.append(p)
    return out


def remove_stale_tmp(folder: str | Path, name: str) -> None:
    """Remove `folder/name.tmp-PID` left by a process that is gone (killed while writing)."""
    for old in _stale(Path(folder), f"{name}.tmp-*"):
        shutil.rmtree(old, ignore_errors=True)


@contextmanager
def atomic_folder(dest: str | Path, replace: bool = True) -> Iterator[Path]:
    """Yield a new, empty folder beside `dest` to fill; when the block succeeds it takes `dest`'s place whole.

    Readers see the old folder whole or the new one whole: the old one stays in place while the new one is
    written, is moved aside only for the instant between two renames (and put back if the second fails),
    and is deleted last. If the block raises, only the temporary folder is removed. A disk-full or
    unwritable folder is a `StorageError` naming `dest`.

    Args:
        dest: the folder to write. An existing file there is a `FileExistsError` (never replaced by a folder).
        replace: replace an existing `dest`. False for caches that any process may fill: an existing
            `dest` (another process finished the same content first) is kept, and the new folder dropped.
    """
    dest = Path(dest)
    if dest.exists() and not dest.is_dir():
        raise FileExistsError(f"{dest} is a file, not a folder; choose another path, or delete the file")
    tmp = dest.with_name(f".{dest.name}.tmp-{os.getpid()}")
    old = dest.with_name(f".{dest.name}.old-{os.getpid()}")
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
        remove_stale_tmp(dest.parent, f".{dest.name}")
        for prev in _stale(dest.parent, f".{dest.name}.old-*"):  # a writer killed between its two renames
            if dest.exists():
                shutil.rmtree(prev, ignore_errors=True)
            else:
                os.rename(prev, dest)  # that was the last complete folder: put it back
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
    except OSError as e:
        raise storage_error(dest, e) from e
    try:
        yield tmp
        _swap_in(tmp, dest, old, replace)
    except Exception as e:
        if is_storage_failure(e):  # name the folder the user knows, not our temporary one
            raise storage_error(dest, e.__cause__ if isinstance(e, StorageError) and e.__cause__ else e) from e
        raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _swap_in(tmp: Path, dest: Path, old: Path, replace: bool) -> None:
    if dest.exists():
        if not replace:
            return  # another process got there first: keep theirs (it may be in use)
        os.rename(dest, old)
    try:
        os.rename(tmp, dest)
    except OSError:
        if old.exists() and not dest.exists():  # the swap failed half-way: put the old folder back
            os.rename(old, dest)
        elif not replace and dest.is_dir():  # another process got there in the meantime
            return
        raise
    shutil.rmtree(old, ignore_errors=True)


# what `extract_archive` unpacks (tarfile reads the compression from the file itself)
ARCHIVE_SUFFIXES = (".tar", ".tar.gz", ".tgz", ".tar.xz", ".tar.bz2", ".zip")


def is_archive(path: str | Path) -> bool:
    """A file whose name ends with one of `ARCHIVE_SUFFIXES`, in any case: what `extract_archive` unpacks."""
    path = Path(path)
    return path.name.lower().endswith(ARCHIVE_SUFFIXES) and path.is_file()


def extract_archive(archive: str | Path, dest: str | Path) -> Path:
    """Unpack a .tar (also .gz/.tgz/.xz/.bz2) or .zip archive into the folder `dest`, once.

    `dest` appears whole, with `.extracted` in it, or not at all: a killed or concurrent run never reads a
    half-extracted tree, and a second call (or a second process) reuses the first one's. Members that
    would land outside `dest` (absolute paths, `..`, links out of it) are refused or rewritten, as the
    `tarfile` "data" filter and `zipfile` do.

    Returns:
        `dest`.
    """
    archive, dest = Path(archive), Path(dest)
    if (dest / EXTRACTED).exists():
        return dest
    # a `dest` without the marker is a tree left by an older, non-atomic extraction: replaced
    with atomic_folder(dest, replace=dest.exists()) as tmp:
        if archive.name.lower().endswith(".zip"):
            with zipfile.ZipFile(archive) as z:
                z.extractall(tmp)
        else:
            with tarfile.open(archive) as t:
                t.extractall(tmp, filter="data")
        (tmp / EXTRACTED).touch()
    return dest


class DownloadError(OSError):
    """A download through fastai's `untar_data` failed; its message is the one-line reason."""


def fastai_untar(url: str, c_key: str = "data", timeout_s: float = 30.0) -> Path:
    """`untar_data(url, c_key=c_key)` (fastai's download, checks and cache) with a socket timeout.

    Raises:
        DownloadError: any failure (urllib, socket, archive), its reason on one line: the caller says what to do.
    """
    from fastai.data.external import untar_data

    previous = socket.getdefaulttimeout()
    socket.setdefaulttimeout(timeout_s)  # a network that drops packets fails in seconds, not hangs
    try:
        return Path(untar_data(url, c_key=c_key))
    except Exception as e:  # urllib, socket and archive errors alike: the user's next step is the same
        raise DownloadError(" ".join(str(e).split())[:160] or type(e).__name__) from None
    finally:
        socket.setdefaulttimeout(previous)
