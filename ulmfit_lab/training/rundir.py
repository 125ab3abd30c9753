"""The run directory: one sub-folder per stage, atomic artifacts, and a completion marker written last.

A stage folder holds `config.yaml` (the snapshot), `metrics.jsonl` (one line per epoch), its
artifacts and, last of all, `DONE.json` with the stage key. Only a marker whose key matches means
"done": a crash leaves no marker, and a changed config or upstream stage gives a different key.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

# the file helpers live in fileio; imported here too, where they were first defined
from ..fileio import (
    StorageError,
    write_json,
    write_text,
)

MARKER = "DONE.json"


def stage_key(name: str, version: int, *parts: Any) -> str:
    """Hash of what changes a stage's result: its name, code version, config and upstream keys."""
    blob = json.dumps([name, version, *parts], sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


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
