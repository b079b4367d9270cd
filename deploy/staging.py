"""The staging area of an index build: a journal of what is encoded, kept across crashes.

A long build (``python -m deploy index build`` over an archive) appends each encoded
batch to ``.<name>.staging/`` beside the index folder, and publishes the index (one
atomic folder swap, :mod:`deploy.atomic`) only when every image is done. Rerunning the
same command after an interruption (Ctrl-C, a crash, a power cut) reads the journal and
encodes only what is missing; the result equals an uninterrupted build. A journal is
only appended to by a build holding the index folder's writer lock.

Files in the staging folder:

* ``settings.json``: what the codes are (``codes``: the encoder's codes identity,
  ``bits``) and where the images come from (``source``); a rerun with another encoder
  or source is refused, naming the folder;
* ``codes.bin``: the packed codes (``bits / 8`` bytes each), appended batch by batch;
* ``journal.jsonl``: one JSON line ``{"id", "metadata"}`` per encoded image, in the
  order encoded; row i of ``codes.bin`` belongs to line i. An id names a file and, for a
  cine loop encoded by frame, the frame (``ID#frame=K``), so a resume skips exactly the
  images (file and frame) already encoded.

Only successes are journalled. A file that could not be read is not done: every run
tries it again, so a file repaired (or removed from the source) after a failed build is
picked up by rerunning the same command, which encodes only the failed files and what
an interruption left. Re-reading a bad file costs a failed decode, not an encoding, so
nothing is gained by remembering failures across runs; each run lists its own. (A
journal written before this rule may hold ``{"id", "failed", "error"}`` lines: they are
ignored, so those files are retried too.)

A batch is committed by writing and fsyncing its codes first, then its journal lines.
On opening, a torn last line (no newline: the crash hit while writing it) is cut off,
and ``codes.bin`` is cut to the rows the journal accounts for; codes the journal does
not name are re-encoded. A ``codes.bin`` shorter than the journal, or a line that is not
JSON, is damage: an :class:`StagingError` names the file.

Only the standard library and numpy are imported here.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from deploy import atomic
from deploy.locking import real_path

SETTINGS_FILE = "settings.json"
CODES_FILE = "codes.bin"
JOURNAL_FILE = "journal.jsonl"


class StagingError(ValueError):
    """A staging folder is damaged or belongs to another build (the message names it)."""


def staging_path(index_folder: str | os.PathLike) -> Path:
    """``.<name>.staging`` beside the (link-resolved) index folder."""
    real = real_path(index_folder)
    return real.with_name(f".{real.name}.staging")


@dataclass
class Staged:
    """What a journal holds: codes in order, with their ids and metadata."""

    packed: np.ndarray
    ids: list[str | int]
    metadata: list[dict[str, Any]]


class Journal:
    """An open staging folder; append batches with :meth:`append`. Use :meth:`open`.

    Attributes:
        folder: the staging folder.
        done: ids already encoded (skip them); never a failed one (retry it).
        n_codes: codes committed so far.
    """

    def __init__(self, folder: Path, n_bytes: int):
        self.folder = folder
        self.n_bytes = n_bytes
        self.done: set[str | int] = set()
        self.n_codes = 0

    @classmethod
    def open(cls, index_folder: str | os.PathLike, settings: dict[str, Any]) -> Journal:
        """Creates the staging folder of ``index_folder``, or resumes the one there.

        ``settings`` must hold ``bits`` and describe the encoder and the source; a
        staging folder written with other settings is refused.
        """
        folder = staging_path(index_folder)
        journal = cls(folder, settings["bits"] // 8)
        settings_file = folder / SETTINGS_FILE
        if not settings_file.is_file():
            shutil.rmtree(folder, ignore_errors=True)  # a crash before settings: nothing kept
            folder.mkdir(parents=True)
            (folder / CODES_FILE).touch()
            (folder / JOURNAL_FILE).touch()
            atomic.atomic_write_text(settings_file, json.dumps(settings, indent=1))
            return journal
        try:
            stored = json.loads(settings_file.read_text(encoding="utf-8"))
        except (OSError, ValueError) as err:
            raise StagingError(f"staging settings {settings_file} are unreadable: {err}") from None
        if stored != settings:
            changed = sorted(k for k in {*stored, *settings} if stored.get(k) != settings.get(k))
            raise StagingError(
                f"{folder} holds an unfinished build with other {', '.join(changed)} "
                f"({', '.join(f'{k}: {stored.get(k)!r}' for k in changed)}): rerun that build "
                f"to finish it, or delete {folder} to start over"
            )
        journal._recover()
        return journal

    @staticmethod
    def discard(index_folder: str | os.PathLike) -> None:
        """Deletes the staging folder of ``index_folder``, if any (a fresh start)."""
        shutil.rmtree(staging_path(index_folder), ignore_errors=True)

    def _recover(self) -> None:
        journal_file, codes_file = self.folder / JOURNAL_FILE, self.folder / CODES_FILE
        data = _read_bytes(journal_file)
        complete = data[: data.rfind(b"\n") + 1]  # a torn last line is dropped
        for number, line in enumerate(complete.splitlines(), 1):
            entry = _parse(line, journal_file, number)
            if "failed" not in entry:  # an older journal's failure: retried
                self.done.add(entry["id"])
                self.n_codes += 1
        size = self.n_codes * self.n_bytes
        if _size(codes_file) < size:
            raise StagingError(
                f"staging codes {codes_file} hold {_size(codes_file)} bytes, the journal "
                f"{journal_file} names {self.n_codes} codes ({size} bytes): damaged; delete "
                f"{self.folder} to start over"
            )
        os.truncate(codes_file, size)  # codes written after the last committed line
        if len(complete) != len(data):
            os.truncate(journal_file, len(complete))

    def append(
        self, ids: list[str | int], metadata: list[dict[str, Any]], packed: np.ndarray
    ) -> None:
        """Commits one batch: its codes, then their ids and metadata."""
        packed = np.ascontiguousarray(packed, np.uint8)
        if packed.shape != (len(ids), self.n_bytes) or len(metadata) != len(ids):
            raise ValueError(
                f"a batch needs one {self.n_bytes}-byte code and metadata per id, got "
                f"{packed.shape} codes, {len(ids)} ids, {len(metadata)} metadata"
            )
        _append_synced(self.folder / CODES_FILE, packed.tobytes())
        lines = [{"id": i, "metadata": m} for i, m in zip(ids, metadata, strict=True)]
        text = "".join(json.dumps(line, ensure_ascii=False) + "\n" for line in lines)
        _append_synced(self.folder / JOURNAL_FILE, text.encode("utf-8"))
        self.done.update(ids)
        self.n_codes += len(ids)

    def read(self) -> Staged:
        """Everything committed, in the order encoded."""
        ids, metadata = [], []
        journal_file = self.folder / JOURNAL_FILE
        for number, line in enumerate(_read_bytes(journal_file).splitlines(), 1):
            entry = _parse(line, journal_file, number)
            if "failed" not in entry:
                ids.append(entry["id"])
                metadata.append(entry["metadata"])
        packed = np.fromfile(self.folder / CODES_FILE, np.uint8)
        return Staged(packed.reshape(-1, self.n_bytes)[: len(ids)], ids, metadata)

    def remove(self) -> None:
        """Deletes the staging folder (after the index is published, or when a failed
        build encoded nothing to keep)."""
        shutil.rmtree(self.folder, ignore_errors=True)


def _parse(line: bytes, path: Path, number: int) -> dict[str, Any]:
    try:
        entry = json.loads(line)
    except ValueError:
        entry = None
    if not isinstance(entry, dict) or "id" not in entry:
        raise StagingError(f"staging journal {path} line {number} is not a journal entry: damaged")
    return entry


def _read_bytes(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as err:
        raise StagingError(f"cannot read staging file {path}: {err.strerror}") from None


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


def _append_synced(path: Path, data: bytes) -> None:
    with open(path, "ab") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
