"""Crash-safe writes: a file or a folder is either the old version or the new, complete one.

Everything that writes artefacts (index, model, export) goes through here:

* :func:`atomic_path` yields a temporary path beside the final one; when the block ends
  without an exception the file is fsynced and ``os.replace``d onto the final path (an
  atomic rename on POSIX and Windows), otherwise it is deleted;
* :func:`atomic_write_bytes` / :func:`atomic_write_text` wrap that for the common case;
* :func:`atomic_directory` does the same for a whole folder (see its docstring for the
  short window in which the folder is missing, and :func:`recover_directory`, which
  readers call to repair it).

One writer per destination at a time; readers may run concurrently. Only the standard
library is imported.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path


@contextlib.contextmanager
def atomic_path(final_path: str | os.PathLike) -> Iterator[Path]:
    """Yields a temporary file path that replaces ``final_path`` if the block succeeds.

    The temporary file is created (empty) in the same folder, so the final rename never
    crosses file systems. Its name keeps the final name's extensions
    (``model.weights.h5`` -> ``.model.tmp-xxxx.weights.h5``), so writers that check or
    append an extension (``np.save``, Keras) write exactly where they are told.

    Args:
        final_path: where the file should end up; its folder must exist.

    Yields:
        The temporary path to write to.

    Example:
        >>> with atomic_path(folder / "codes.npy") as tmp:  # doctest: +SKIP
        ...     np.save(tmp, codes)
    """
    final = Path(final_path)
    base, dot, ext = final.name.partition(".")
    if not base:  # a dot-file such as ".env": keep the whole name as the base
        base, dot, ext = final.name, "", ""
    fd, tmp_name = tempfile.mkstemp(prefix=f".{base}.tmp-", suffix=dot + ext, dir=final.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        _fsync_file(tmp)
        os.replace(tmp, final)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_dir(final.parent)


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Writes ``data`` to ``path`` atomically (old content or new, never a mix)."""
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        f.write(data)


def atomic_write_text(path: str | os.PathLike, text: str, encoding: str = "utf-8") -> None:
    """Writes ``text`` to ``path`` atomically (old content or new, never a mix)."""
    atomic_write_bytes(path, text.encode(encoding))


def backup_path(final_dir: str | os.PathLike) -> Path:
    """The sibling that holds the previous version of ``final_dir`` during a swap."""
    final = Path(final_dir)
    return final.with_name(f".{final.name}.backup")


@contextlib.contextmanager
def atomic_directory(final_dir: str | os.PathLike) -> Iterator[Path]:
    """Yields an empty temporary folder that replaces ``final_dir`` if the block succeeds.

    The folder is written as a sibling ``.<name>.tmp-xxxx`` and every file in it is
    fsynced. The swap is then: rename ``final_dir`` to ``.<name>.backup``, rename the new
    folder to ``final_dir``, delete the backup. A folder cannot be atomically replaced by
    another, so between the two renames (two metadata operations, microseconds)
    ``final_dir`` does not exist. A crash there leaves the backup, which
    :func:`recover_directory` moves back: every reader calls it before reading, and this
    function calls it before writing. A crash after the second rename leaves a stale
    backup beside the new folder; the next write deletes it. A crash while the block runs
    leaves only a hidden ``.<name>.tmp-xxxx`` folder, never a half-written ``final_dir``.

    If the swap itself fails (an exception, not a crash), the old folder is put back.

    Args:
        final_dir: the folder to create or replace; its parent is created if missing.

    Yields:
        The temporary folder to write into.
    """
    final = Path(final_dir)
    if final.exists() and not final.is_dir():
        raise NotADirectoryError(f"{final} exists and is not a folder")
    final.parent.mkdir(parents=True, exist_ok=True)
    backup = backup_path(final)
    recover_directory(final)
    if backup.exists():  # stale: a crash after the new folder was already in place
        shutil.rmtree(backup)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.tmp-", dir=final.parent))
    try:
        yield tmp
        _fsync_tree(tmp)
        had_old = final.exists()
        if had_old:
            os.replace(final, backup)
        try:
            os.replace(tmp, final)
        except BaseException:
            if had_old:
                os.replace(backup, final)
            raise
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    _fsync_dir(final.parent)
    shutil.rmtree(backup, ignore_errors=True)


def recover_directory(final_dir: str | os.PathLike) -> Path:
    """Repairs a folder swap interrupted by a crash and returns the folder to read.

    If ``final_dir`` is missing but its backup exists (a crash between the two renames of
    :func:`atomic_directory`), the backup is renamed back to ``final_dir``. Where that
    rename is not allowed (a read-only medium), the backup's path is returned so the
    previous version can still be read. Anything else is left as it is.
    """
    final = Path(final_dir)
    backup = backup_path(final)
    if not final.exists() and backup.is_dir():
        try:
            os.replace(backup, final)
            _fsync_dir(final.parent)
        except OSError:
            return backup
    return final


def _fsync_file(path: Path) -> None:
    with open(path, "rb") as f:
        os.fsync(f.fileno())


def _fsync_tree(folder: Path) -> None:
    for root, _dirs, files in os.walk(folder):
        for name in files:
            _fsync_file(Path(root, name))
        _fsync_dir(Path(root))


def _fsync_dir(folder: Path) -> None:
    # Makes renames inside the folder durable; directories cannot be opened on Windows.
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
