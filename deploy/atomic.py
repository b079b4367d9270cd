"""Crash-safe writes: a file or a folder is either the old version or the new, complete one.

Everything that writes artefacts (index, model, export) goes through here:

* :func:`atomic_path` yields a temporary path beside the final one; when the block ends
  without an exception the file is fsynced and ``os.replace``d onto the final path (an
  atomic rename on POSIX and Windows), otherwise it is deleted;
* :func:`atomic_write_bytes` / :func:`atomic_write_text` wrap that for the common case;
* :func:`atomic_directory` does the same for a whole folder (see its docstring for the
  short window in which the folder is missing, and :func:`recover_directory`, which
  readers call to repair it).

Writers of one folder are serialised by :func:`deploy.locking.writer_lock`
(``atomic_directory`` takes it; a read-modify-write such as ``index add`` takes it before reading, so no update is
lost). Readers take no lock and may run at any time. A destination that is a symbolic
link is written through: its target is replaced and the link stays a link. New files and
folders get the modes the umask gives (0644 / 0755 under umask 022), not the private
modes of ``mkstemp`` / ``mkdtemp``. Only the standard library is imported.
"""

from __future__ import annotations

import contextlib
import functools
import os
import re
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

from deploy.locking import LockTimeout, real_path, writer_lock  # noqa: F401  (re-exported)


@contextlib.contextmanager
def atomic_path(final_path: str | os.PathLike, overwrite: bool = True) -> Iterator[Path]:
    """Yields a temporary file path that replaces ``final_path`` if the block succeeds.

    The temporary file is created (empty) in the same folder, so the final rename never
    crosses file systems. Its name keeps the final name's extensions
    (``model.weights.h5`` -> ``.model.tmp-xxxx.weights.h5``), so writers that check or
    append an extension (``np.save``, Keras) write exactly where they are told.

    Args:
        final_path: where the file should end up; its folder must exist.
        overwrite: False refuses to replace an existing file, also one created by
            someone else while the block ran (``FileExistsError``, the temporary file
            is removed).

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
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes it 0600: others could not read it
        yield tmp
        _fsync_file(tmp)
        if overwrite:
            os.replace(tmp, final)
        else:
            _place_without_overwriting(tmp, final)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_dir(final.parent)


def _place_without_overwriting(tmp: Path, final: Path) -> None:
    # A hard link is created only if nothing is at ``final``: no window in which a file
    # that appeared after a check could be replaced. File systems without hard links
    # (FAT, some phone storage) fall back to a check just before the rename.
    try:
        os.link(tmp, final)
    except FileExistsError:
        raise FileExistsError(f"{final} exists; it was not replaced") from None
    except OSError:
        if os.path.lexists(final):
            raise FileExistsError(f"{final} exists; it was not replaced") from None
        os.replace(tmp, final)
        return
    tmp.unlink()


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
def atomic_directory(
    final_dir: str | os.PathLike, lock_timeout: float | None = None
) -> Iterator[Path]:
    """Yields an empty temporary folder that replaces ``final_dir`` if the block succeeds.

    The folder is written as a sibling ``.<name>.tmp-xxxx`` and every file in it is
    fsynced. The swap is then: rename ``final_dir`` to ``.<name>.backup``, rename the new
    folder to ``final_dir``, delete the backup. A folder cannot be atomically replaced by
    another, so between the two renames (two metadata operations, microseconds)
    ``final_dir`` does not exist. A crash there leaves the backup, which
    :func:`recover_directory` moves back: every reader calls it before reading, and this
    function calls it before writing. A crash after the second rename leaves a stale
    backup beside the new folder; the next write deletes it. A crash while the block runs
    leaves only a hidden ``.<name>.tmp-xxxx`` folder, never a half-written ``final_dir``;
    the next write deletes it too (:func:`repair_directory`).

    The whole write holds the folder's :func:`writer_lock`. A ``final_dir`` that is a
    symbolic link is written through: its target is replaced, the link is kept.

    If the swap itself fails (an exception, not a crash), the old folder is put back.

    Args:
        final_dir: the folder to create or replace; its parent is created if missing.
        lock_timeout: seconds to wait for another writer (None: no limit).

    Yields:
        The temporary folder to write into.
    """
    if Path(final_dir).exists() and not Path(final_dir).is_dir():
        raise NotADirectoryError(f"{final_dir} exists and is not a folder")
    real_path(final_dir).parent.mkdir(parents=True, exist_ok=True)
    with writer_lock(final_dir, lock_timeout) as final:
        repair_directory(final)
        backup = backup_path(final)
        tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.tmp-", dir=final.parent))
        try:
            os.chmod(tmp, 0o777 & ~_umask())  # mkdtemp makes it 0700: others could not read
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


def repair_directory(
    final_dir: str | os.PathLike,
    timeout: float | None = None,
    on_wait: Callable[[str], None] | None = None,
) -> Path:
    """Undoes what a crashed writer left, under the writer lock; returns the real folder.

    Moves a backup left between the two renames back into place, deletes a stale backup
    beside a complete folder and every ``.<name>.tmp-xxxx`` folder of a write that never
    finished (none can be in progress: this holds the lock every writer takes). Call it
    before deciding anything from the folder's state, e.g. whether an index exists.
    ``timeout`` and ``on_wait`` are :func:`writer_lock`'s.
    """
    if not real_path(final_dir).parent.is_dir():
        return real_path(final_dir)  # no folder, no crash leftovers
    with writer_lock(final_dir, timeout, on_wait) as final:
        recover_directory(final)
        backup = backup_path(final)
        if final.exists() and backup.is_dir() and not backup.is_symlink():
            shutil.rmtree(backup)
        leftover = re.compile(rf"\.{re.escape(final.name)}\.tmp-[a-z0-9_]{{8}}")
        if final.parent.is_dir():
            for entry in final.parent.iterdir():
                if leftover.fullmatch(entry.name) and entry.is_dir() and not entry.is_symlink():
                    shutil.rmtree(entry, ignore_errors=True)
        return final


def recover_directory(final_dir: str | os.PathLike) -> Path:
    """Repairs a folder swap interrupted by a crash and returns the folder to read.

    If ``final_dir`` (or, for a symbolic link, its target) is missing but its backup
    exists, the backup is renamed back. That happens under the writer lock: a missing
    folder may also be a writer's swap in progress, which must finish first. Where the
    rename is not allowed (a read-only medium), the backup's path is returned so the
    previous version can still be read. Anything else is left as it is.
    """
    final = real_path(final_dir)
    backup = backup_path(final)
    if not final.exists() and backup.is_dir():
        try:
            with writer_lock(final):
                if not final.exists() and backup.is_dir():
                    os.replace(backup, final)
                    _fsync_dir(final.parent)
        except OSError:
            if not final.exists():
                return backup
    return final


@functools.cache
def _umask() -> int:
    # The umask can only be read by setting it; read it once per process, so the short
    # window in which it is 0 (a file another thread creates then is world-writable)
    # opens once, not at every save.
    mask = os.umask(0)
    os.umask(mask)
    return mask


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
