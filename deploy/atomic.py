"""Crash-safe writes: a file or a folder is either the old version or the new, complete one.

Everything that writes artefacts (index, model, export) goes through here:

* :func:`atomic_path` yields a temporary path beside the final one; when the block ends
  without an exception the file is fsynced and ``os.replace``d onto the final path (an
  atomic rename on POSIX and Windows), otherwise it is deleted;
* :func:`atomic_write_bytes` / :func:`atomic_write_text` wrap that for the common case;
* :func:`atomic_directory` does the same for a whole folder (see its docstring for the
  short window in which the folder is missing, and :func:`recover_directory`, which
  readers call to repair it).

Writers of one folder are serialised by :func:`writer_lock` (``atomic_directory`` takes
it; a read-modify-write such as ``index add`` takes it before reading, so no update is
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
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

try:
    # fcntl.flock rather than the filelock package: deploy/ runs on the device with the
    # standard library, numpy and the runtimes only, and flock is what filelock would use
    # on POSIX anyway. The kernel drops a flock when its holder dies, so a crashed writer
    # never leaves a stale lock behind.
    import fcntl
except ImportError:  # Windows: writers are serialised within one process only
    fcntl = None


class LockTimeout(TimeoutError):
    """Another process kept a folder's writer lock longer than the timeout allowed."""


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


def real_path(final_dir: str | os.PathLike) -> Path:
    """The folder a write to ``final_dir`` must replace: a symbolic link's target.

    Renaming a new folder onto a link would replace the link itself (``current ->
    index-v7`` would become a plain folder and ``index-v7`` would stay old), so writers
    and the crash repair work on the target; other paths are returned unchanged.
    """
    path = Path(final_dir)
    return Path(os.path.realpath(path)) if path.is_symlink() else path


def lock_path(final_dir: str | os.PathLike) -> Path:
    """The lock file of a folder: ``.<name>.lock`` beside its real (link-resolved) path.

    It lives beside the folder, not inside it: the folder is replaced by a rename, and a
    lock on a file inside the old folder would not stop a writer who opens the new one.
    Two names of one folder (a link and its target) share one lock file.
    """
    real = Path(os.path.realpath(final_dir))
    return real.with_name(f".{real.name}.lock")


class _Held:
    """This process's hold on one lock file: threads queue on ``rlock``; ``depth`` counts
    nested holds by the owning thread (flock is per open file, so the same process
    locking the file a second time would wait for itself)."""

    def __init__(self):
        self.rlock = threading.RLock()
        self.depth = 0
        self.fd: int | None = None


_held: dict[str, _Held] = {}
_held_guard = threading.Lock()


@contextlib.contextmanager
def writer_lock(
    final_dir: str | os.PathLike,
    timeout: float | None = None,
    on_wait: Callable[[str], None] | None = None,
) -> Iterator[Path]:
    """Holds the exclusive writer lock of a folder; yields the folder to write (link-resolved).

    Every writer of the folder takes it (:func:`atomic_directory` does), so writers run one
    after the other. A read-modify-write takes it BEFORE reading, so the second writer
    reads what the first one wrote. Nested holds in one thread are allowed. Readers do
    not take it. The lock file is created on demand and deleted by the last holder.

    Args:
        final_dir: the folder (it need not exist yet; its parent must).
        timeout: seconds to wait for another writer; None waits as long as it takes.
        on_wait: called once, with a description of the holder, if the lock is busy.

    Raises:
        LockTimeout: the lock was still held after ``timeout`` seconds.
        FileNotFoundError: the folder's parent does not exist.
    """
    lock_file = lock_path(final_dir)
    deadline = None if timeout is None else time.monotonic() + max(0.0, timeout)
    with _held_guard:
        held = _held.setdefault(str(lock_file), _Held())
    if not held.rlock.acquire(timeout=-1 if timeout is None else max(0.0, timeout)):
        raise _timeout(final_dir, lock_file, timeout)
    try:
        if held.depth == 0:
            if not lock_file.parent.is_dir():
                raise FileNotFoundError(f"{final_dir}: folder {lock_file.parent} does not exist")
            held.fd = _flock(lock_file, final_dir, deadline, timeout, on_wait)
        held.depth += 1
        try:
            yield real_path(final_dir)
        finally:
            held.depth -= 1
            if held.depth == 0:
                _unlock(lock_file, held.fd)
                held.fd = None
    finally:
        held.rlock.release()


def _flock(lock_file: Path, final_dir, deadline, timeout, on_wait) -> int | None:
    if fcntl is None:
        return None
    waited = False
    while True:
        fd = _open_lock_file(lock_file)
        try:
            if not _try_flock(fd):
                if on_wait is not None and not waited:
                    on_wait(_holder(lock_file))
                waited = True
                if deadline is None:
                    fcntl.flock(fd, fcntl.LOCK_EX)
                else:
                    while not _try_flock(fd):
                        if time.monotonic() >= deadline:
                            raise _timeout(final_dir, lock_file, timeout)
                        time.sleep(0.05)
            # The previous holder deletes the file before letting go: a lock won on a
            # deleted file guards nothing, so open the current one and lock again.
            if _is_current(fd, lock_file):
                with contextlib.suppress(OSError):  # read-only: another account's lock file
                    os.ftruncate(fd, 0)
                    os.write(fd, f"{os.getpid()}\n".encode())  # for the waiters' messages
                return fd
        except BaseException:
            os.close(fd)
            raise
        os.close(fd)


def _open_lock_file(lock_file: Path) -> int:
    flags = os.O_CREAT | getattr(os, "O_CLOEXEC", 0)
    try:
        return os.open(lock_file, os.O_RDWR | flags, 0o666)
    except PermissionError:
        # Left by another account (its mode follows that account's umask): flock works
        # on a read-only descriptor as well.
        return os.open(lock_file, os.O_RDONLY | flags, 0o666)


def _try_flock(fd: int) -> bool:
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


def _is_current(fd: int, lock_file: Path) -> bool:
    try:
        now = os.stat(lock_file)
    except FileNotFoundError:
        return False
    held = os.fstat(fd)
    return (held.st_dev, held.st_ino) == (now.st_dev, now.st_ino)


def _unlock(lock_file: Path, fd: int | None) -> None:
    if fd is None:
        return
    # Deleted while still held, so no one can lock the old file after we let go.
    with contextlib.suppress(OSError):
        os.unlink(lock_file)
    os.close(fd)


def _holder(lock_file: Path) -> str:
    try:
        pid = lock_file.read_text().strip()
    except OSError:
        pid = ""
    return f"process {pid}" if pid.isdigit() else "another process"


def _timeout(final_dir, lock_file: Path, timeout) -> LockTimeout:
    return LockTimeout(
        f"{final_dir} is being written by {_holder(lock_file)} (lock {lock_file}); gave up "
        f"waiting after {timeout:g} s: try again later or wait longer"
    )


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
