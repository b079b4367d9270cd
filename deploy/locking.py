"""The writer lock of a folder: writers of one folder run one after the other.

:func:`writer_lock` is an exclusive ``flock`` on ``.<name>.lock`` beside the folder,
nestable within one thread and queued between the threads of one process. Every writer
of a folder takes it (:func:`deploy.atomic.atomic_directory` does); a read-modify-write
such as ``index add`` takes it before reading, so no update is lost. Readers take no
lock. Only the standard library is imported.
"""

from __future__ import annotations

import contextlib
import os
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
