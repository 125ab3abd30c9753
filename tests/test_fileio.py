"""The one I/O module: atomic files and folders, checksums, archive extraction."""

import errno
import hashlib
import os
import tarfile
import zipfile

import pytest

from ulmfit_lab import fileio
from ulmfit_lab.fileio import StorageError, atomic_folder, atomic_path, extract_archive, is_archive, sha256_file


def _tree(folder):
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _old_model(tmp_path):
    dest = tmp_path / "model"
    dest.mkdir()
    (dest / "weights.bin").write_bytes(b"old weights")
    (dest / "vocab.json").write_text('["old"]')
    return dest


def test_atomic_folder_replaces_an_existing_folder_whole(tmp_path):
    dest = _old_model(tmp_path)
    with atomic_folder(dest) as tmp:
        assert tmp != dest and tmp.parent == dest.parent and not any(tmp.iterdir())
        assert _tree(dest) == {"weights.bin": b"old weights", "vocab.json": b'["old"]'}  # old one in place meanwhile
        (tmp / "weights.bin").write_bytes(b"new weights")
    assert _tree(dest) == {"weights.bin": b"new weights"}  # no stale vocab.json beside the new weights
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]  # no temporary or old folder left


def test_atomic_folder_keeps_the_old_folder_when_writing_fails(tmp_path):
    dest = _old_model(tmp_path)
    before = _tree(dest)
    with pytest.raises(ValueError, match="serialisation failed"):
        with atomic_folder(dest) as tmp:
            (tmp / "weights.bin").write_bytes(b"half")
            raise ValueError("serialisation failed")
    assert _tree(dest) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]


def test_atomic_folder_puts_the_old_folder_back_if_the_swap_fails(tmp_path, monkeypatch):
    dest = _old_model(tmp_path)
    before = _tree(dest)
    real_rename = os.rename

    def rename(src, dst):
        if ".tmp-" in str(src):  # the second rename: new folder -> dest
            raise OSError(errno.EXDEV, "Invalid cross-device link")
        return real_rename(src, dst)

    monkeypatch.setattr(fileio.os, "rename", rename)
    with pytest.raises(OSError, match="cross-device"):
        with atomic_folder(dest) as tmp:
            (tmp / "weights.bin").write_bytes(b"new weights")
    assert _tree(dest) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]


def test_atomic_folder_full_disk_names_the_folder(tmp_path):
    dest = _old_model(tmp_path)
    with pytest.raises(StorageError, match=r"cannot write .*/model: No space left on device\. Free disk space"):
        with atomic_folder(dest):
            raise OSError(errno.ENOSPC, "No space left on device")
    assert _tree(dest) == {"weights.bin": b"old weights", "vocab.json": b'["old"]'}


def test_atomic_folder_without_replace_keeps_what_is_there(tmp_path):
    dest = _old_model(tmp_path)
    with atomic_folder(dest, replace=False) as tmp:  # e.g. a cache another process filled first
        (tmp / "weights.bin").write_bytes(b"same content, written twice")
    assert _tree(dest)["weights.bin"] == b"old weights"
    with atomic_folder(tmp_path / "new", replace=False) as tmp:
        (tmp / "a").write_text("a")
    assert _tree(tmp_path / "new") == {"a": b"a"}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model", "new"]


def test_atomic_folder_never_replaces_a_file(tmp_path):
    (tmp_path / "out").write_text("my notes")
    with pytest.raises(FileExistsError, match=r"out is a file, not a folder"):
        with atomic_folder(tmp_path / "out"):
            pass
    assert (tmp_path / "out").read_text() == "my notes"


def test_atomic_folder_cleans_up_after_a_killed_writer(tmp_path):
    dest = tmp_path / "model"
    dead = 2**22 + 12345  # above the default pid_max: no such process
    (tmp_path / f".model.tmp-{dead}").mkdir()  # killed while writing
    (tmp_path / f".model.old-{dead}").mkdir()  # killed between its two renames: the last complete folder
    (tmp_path / f".model.old-{dead}" / "weights.bin").write_bytes(b"last good")
    with atomic_folder(dest, replace=False):  # put back first, so it is kept
        pass
    assert _tree(dest) == {"weights.bin": b"last good"}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]


def test_atomic_path_replaces_only_on_success(tmp_path):
    path = tmp_path / "plot.png"
    path.write_bytes(b"old")
    with pytest.raises(RuntimeError):
        with atomic_path(path, suffix=".png") as tmp:
            assert tmp.suffix == ".png" and tmp.parent == tmp_path
            tmp.write_bytes(b"half")
            raise RuntimeError("plotting failed")
    assert path.read_bytes() == b"old"
    with atomic_path(path) as tmp:
        tmp.write_bytes(b"new")
    assert path.read_bytes() == b"new" and sorted(p.name for p in tmp_path.iterdir()) == ["plot.png"]


def test_sha256_file(tmp_path):
    data = os.urandom(3 << 20)  # several read blocks
    (tmp_path / "f").write_bytes(data)
    assert sha256_file(tmp_path / "f") == hashlib.sha256(data).hexdigest()


@pytest.mark.parametrize("kind", ["tar.gz", "zip"])
def test_extract_archive_once_and_whole(tmp_path, kind):
    src = tmp_path / "src" / "lm"
    src.mkdir(parents=True)
    (src / "model.json").write_text("{}")
    archive = tmp_path / f"lm.{kind}"
    if kind == "zip":
        with zipfile.ZipFile(archive, "w") as z:
            z.write(src / "model.json", "lm/model.json")
    else:
        with tarfile.open(archive, "w:gz") as t:
            t.add(src, arcname="lm")
    dest = tmp_path / "out"
    dest.mkdir()
    (dest / "half").write_text("left by an older, non-atomic extraction")
    assert extract_archive(archive, dest) == dest
    assert _tree(dest) == {".extracted": b"", "lm/model.json": b"{}"}
    (dest / "lm" / "model.json").write_text("edited")
    extract_archive(archive, dest)  # done already: not extracted again
    assert (dest / "lm" / "model.json").read_text() == "edited"
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([f"lm.{kind}", "out", "src"])


def test_is_archive_names_what_extract_archive_unpacks(tmp_path):
    # the union of what the data reader and the LM registry each accepted before they shared this test
    for name in ("a.tar", "b.tar.gz", "c.tgz", "d.tar.xz", "e.tar.bz2", "f.zip", "G.TAR.GZ", "h.Zip"):
        (tmp_path / name).write_bytes(b"")
        assert is_archive(tmp_path / name), name
    for name in ("a.csv", "b.gz", "c.tar.gz.txt", "d.xz"):
        (tmp_path / name).write_bytes(b"")
        assert not is_archive(tmp_path / name), name
    (tmp_path / "folder.tar").mkdir()
    assert not is_archive(tmp_path / "folder.tar") and not is_archive(tmp_path / "missing.zip")
