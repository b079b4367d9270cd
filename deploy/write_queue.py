"""Changes of one index folder from many threads, written together (group commit).

A change of an index is a read-modify-write under the folder's writer lock
(:func:`deploy.locking.writer_lock`): read the index, change it, save it. Done one by
one, each change pays a whole read and a whole save (at 100k items a few hundred ms),
so 8 clients adding at once wait for each other's saves. :class:`WriteQueue` instead
lets the changes that arrive while a save is running wait together; the next writer
takes all of them, applies them in arrival order to one freshly read index and saves
once. Each change still sees every change before it (in the batch or on disk), and is
refused on its own: a change that raises leaves the index as it was and the others go
on. If the read or the save fails, every change of the batch gets that error (none is
on disk). Standard library only.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from deploy.locking import writer_lock


@dataclass
class _Change:
    apply: Callable[[Any], dict]
    done: threading.Event = field(default_factory=threading.Event)
    result: dict | None = None
    error: BaseException | None = None


class WriteQueue:
    """Applies changes of one index folder in batches, one read and one save per batch.

    Args:
        folder: the index folder (its writer lock is held for each batch).
        load: reads the index (called under the lock).
        save: saves the changed index (called under the lock, once per batch with at
            least one change applied).
        lock_timeout: seconds to wait for another process's writer (None: no limit).
    """

    def __init__(self, folder, load: Callable[[], Any], save: Callable[[Any], None],
                 lock_timeout: float | None = None):  # fmt: skip
        self.folder, self.load, self.save, self.lock_timeout = folder, load, save, lock_timeout
        self._pending: list[_Change] = []
        self._pending_guard = threading.Lock()
        self._writing = threading.Lock()  # one batch at a time in this process

    def submit(self, apply: Callable[[Any], dict]) -> dict:
        """Runs ``apply(index)`` on the current index and saves; returns its result.

        ``apply`` must change the index completely or not at all (raise to refuse).

        Raises:
            whatever ``apply`` raised; or the lock's, the read's or the save's error.
        """
        change = _Change(apply)
        with self._pending_guard:
            self._pending.append(change)
        with self._writing:
            if not change.done.is_set():  # else the previous batch took it
                with self._pending_guard:
                    batch, self._pending = self._pending, []
                self._write(batch)
        if change.error is not None:
            raise change.error
        return change.result

    def _write(self, batch: list[_Change]) -> None:
        try:
            with writer_lock(self.folder, self.lock_timeout):
                index = self.load()
                for change in batch:
                    try:
                        change.result = change.apply(index)
                    except Exception as err:  # this change is refused; the others go on
                        change.error = err
                if any(change.error is None for change in batch):
                    self.save(index)
        except BaseException as err:  # nothing of the batch is on disk
            for change in batch:
                change.result, change.error = None, err
            if not isinstance(err, Exception):
                raise
        finally:
            for change in batch:
                change.done.set()
