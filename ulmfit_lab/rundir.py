"""The run directory: one sub-folder per stage, atomic artifacts, and a completion marker written last.

A stage folder holds `config.yaml` (the snapshot), `metrics.jsonl` (one line per epoch), its
artifacts and, last of all, `DONE.json` with the stage key. Only a marker whose key matches means
"done": a crash leaves no marker, and a changed config or upstream stage gives a different key.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

MARKER = "DONE.json"

# what a full disk, a quota, a file size limit or a read-only/unwritable folder raise
_DISK_ERRNOS = {errno.ENOSPC, errno.EFBIG, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM, errno.EIO,
                errno.ENOTDIR}
# torch.save and safetensors report a failed write as RuntimeError / SafetensorError, not OSError
_WRITE_FAILED = re.compile(r"os error (28|27|122|30|13)|No space left|File too large|Disk quota|Read-only file"
                           r"|file write failed|inline_container\.cc.*unexpected pos")


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


def remove_stale_tmp(folder: Path, name: str) -> None:
    """Remove `folder/name.tmp-PID` left by a process that is gone (killed while writing)."""
    for old in Path(folder).glob(f"{name}.tmp-*"):
        pid = old.name.rsplit("-", 1)[-1]
        if pid.isdigit() and not _alive(int(pid)):
            shutil.rmtree(old, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True


def stage_key(name: str, version: int, *parts: Any) -> str:
    """Hash of what changes a stage's result: its name, code version, config and upstream keys."""
    blob = json.dumps([name, version, *parts], sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


@contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """Yield a temporary path beside `path`; rename it over `path` only if the block succeeds."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
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


def write_json(path: Path, obj: Any) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, default=str), encoding="utf-8")


def write_text(path: Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


@dataclass(frozen=True)
class StageDir:
    """One stage's folder inside a run directory."""

    path: Path
    key: str

    def done(self) -> dict[str, Any] | None:
        """The marker's result if this stage finished with the same key, else None."""
        marker = self.path / MARKER
        if not marker.is_file():
            return None
        try:
            info = json.loads(marker.read_text(encoding="utf-8"))
        except (OSError, ValueError):  # unreadable or garbled (JSONDecodeError, UnicodeDecodeError): not done
            return None
        if not isinstance(info, dict):
            return None
        return info.get("result") if info.get("key") == self.key else None

    def start(self, config: dict[str, Any]) -> None:
        """Prepare the folder; an old marker goes first so a half-rerun is never taken as done."""
        self.path.mkdir(parents=True, exist_ok=True)
        (self.path / MARKER).unlink(missing_ok=True)
        write_text(self.path / "config.yaml", yaml.safe_dump(config, sort_keys=False))

    def finish(self, result: dict[str, Any]) -> None:
        write_json(self.path / MARKER, {"key": self.key, "result": result})

    def log_metrics(self, row: dict[str, Any]) -> None:
        with open(self.path / "metrics.jsonl", "a", encoding="utf-8") as f:
            f.write(json.dumps(row, default=float) + "\n")


class RunLockedError(RuntimeError):
    """Another process is using this run directory."""


@contextmanager
def run_lock(run_dir: Path) -> Iterator[None]:
    """An exclusive lock on a run directory, so two runs never write the same folder at once."""
    import fcntl

    run_dir = Path(run_dir)
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        f = open(run_dir / ".lock", "a+")  # not "w": that would wipe the holder's pid before we know we hold it
    except OSError as e:
        raise StorageError(f"run directory {run_dir} cannot be created or written ({e.strerror or e}); "
                           "point run.dir at a writable folder") from e
    try:
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        f.seek(0)
        holder = f.read().strip()
        f.close()
        raise RunLockedError(
            f"run directory {run_dir} is in use by another ulmfit-lab process"
            f"{f' (pid {holder})' if holder.isdigit() else ''}; wait for it to finish, or point this run "
            "elsewhere with run.dir=..."
        ) from None
    try:
        f.seek(0)
        f.truncate()
        f.write(str(os.getpid()))
        f.flush()
        yield
    finally:
        fcntl.flock(f, fcntl.LOCK_UN)
        f.close()
