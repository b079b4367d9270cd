"""An index's items (each position's id and metadata) in two files beside its codes.

Format 2 of an index folder (:mod:`deploy.index_store`) keeps them out of the sidecar:

* ``items.jsonl``: one compact JSON object per item, in position order,
  ``{"id": ..., "meta": {...}}``, each line ending in ``\\n``. JSON's default escaping
  makes the file ASCII (so UTF-8), and any str a sidecar could hold survives, even a
  file name's lone surrogate;
* ``items_offsets.npy``: little-endian uint64, count + 1 byte offsets into
  ``items.jsonl``: item p is the line at bytes ``[offsets[p], offsets[p + 1])``; the
  first offset is 0, the last the file's size.

Why not the sidecar (format 1): reading one item from a JSON document means parsing all
of them, which at 100M items is minutes and many GB of Python objects. With the offsets
a reader gets item p with one ``pread`` and one small parse (:class:`ItemsFile`, what
:class:`deploy.mapped_index.MappedIndex` uses), so opening costs the same at any size.

:func:`write_items` writes both files and returns the sizes and sha256 the sidecar
records; :func:`read_items` reads every item with every check (sizes, hashes, offsets,
each line, id types, duplicate ids): the writer's path, ``HammingIndex.load`` and
``index verify``. :class:`ItemsFile` checks at opening only what costs O(1) (the sizes,
the offsets' dtype and shape, their first and last value) and each line it reads;
damage found later raises :class:`IndexFormatError` naming the file and the position,
never a crash and never another item's id.

Only numpy and the standard library are imported here.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from deploy.index_errors import IndexFormatError, short

ITEMS_FILE = "items.jsonl"
OFFSETS_FILE = "items_offsets.npy"
OFFSETS_DTYPE = np.dtype("<u8")
# What the sidecar records of the two files (format 2), and the type of each.
SIDECAR_FIELDS = {"items_bytes": int, "items_sha256": str, "offsets_bytes": int,
                  "offsets_sha256": str}  # fmt: skip
_CHUNK = 1 << 20  # bytes written or hashed at a time
_DECODER = json.JSONDecoder()
_NPY_HEADER_READERS = {
    (1, 0): np.lib.format.read_array_header_1_0,
    (2, 0): np.lib.format.read_array_header_2_0,
}


def item_line(id_: str | int, metadata: dict[str, Any]) -> bytes:
    """One item's line in ``items.jsonl`` (with its ``\\n``)."""
    return (json.dumps({"id": id_, "meta": metadata}, separators=(",", ":")) + "\n").encode()


def write_items(folder: Path, ids: Sequence, metadata: Sequence) -> dict[str, Any]:
    """Writes ``items.jsonl`` and ``items_offsets.npy`` into ``folder`` (the new folder of
    an atomic replacement); returns the sidecar's :data:`SIDECAR_FIELDS`."""
    if len(ids) != len(metadata):
        raise ValueError(f"{len(ids)} ids but {len(metadata)} metadata entries")
    lengths = np.empty(len(ids), np.int64)
    digest = hashlib.sha256()
    with open(folder / ITEMS_FILE, "wb") as f:
        block, size = [], 0
        for position, (id_, meta) in enumerate(zip(ids, metadata, strict=True)):
            line = item_line(id_, meta)
            lengths[position] = len(line)
            block.append(line)
            size += len(line)
            if size >= _CHUNK:
                data = b"".join(block)
                f.write(data)
                digest.update(data)
                block, size = [], 0
        data = b"".join(block)
        f.write(data)
        digest.update(data)
    offsets = np.zeros(len(ids) + 1, OFFSETS_DTYPE)
    np.cumsum(lengths, out=offsets[1:], dtype=OFFSETS_DTYPE)
    np.save(folder / OFFSETS_FILE, offsets)
    return {
        "items_bytes": int(offsets[-1]),
        "items_sha256": digest.hexdigest(),
        "offsets_bytes": (folder / OFFSETS_FILE).stat().st_size,
        "offsets_sha256": file_sha256(folder / OFFSETS_FILE),
    }


def read_items(folder: Path, meta: dict[str, Any]) -> tuple[list[str | int], list[dict]]:
    """Every item's id and metadata, after checking both files against the sidecar
    ``meta`` (sizes, sha256), the offsets against the line breaks, each line and the ids'
    uniqueness. O(N) time and memory: the writer's path, not search's."""
    items_path, offsets_path = folder / ITEMS_FILE, folder / OFFSETS_FILE
    n = meta["count"]
    raw = _read_checked(offsets_path, meta["offsets_bytes"], meta["offsets_sha256"])
    try:
        offsets = np.load(io.BytesIO(raw), allow_pickle=False)
    except (OSError, ValueError, EOFError) as err:
        raise IndexFormatError(f"offsets file {offsets_path} is corrupted: {err}") from None
    _check_offsets_header(offsets_path, offsets, n)
    data = _read_checked(items_path, meta["items_bytes"], meta["items_sha256"])
    _check_offsets_ends(offsets_path, int(offsets[0]), int(offsets[-1]), len(data))
    breaks = np.flatnonzero(np.frombuffer(data, np.uint8) == ord("\n")) + 1
    if len(breaks) != n or not np.array_equal(breaks, offsets[1:].astype(np.int64)):
        wrong = _first_difference(breaks, offsets[1:].astype(np.int64))
        raise IndexFormatError(
            f"offsets file {offsets_path} does not match the lines of {items_path} at item "
            f"{wrong}: {len(breaks)} lines for {n} items"
        )
    ids, metadata = [], []
    if data.isascii():  # what the writer writes: byte offsets are character offsets
        text = data.decode("ascii")
        del data, breaks
        starts, ends = offsets[:-1].tolist(), offsets[1:].tolist()
        raw = _DECODER.raw_decode
        for position in range(n):
            # _parse_at's checks, inlined (a call per item doubles the time at 1M items);
            # on any doubt _parse_at runs and raises its precise message.
            end = ends[position] - 1
            try:
                entry, stop = raw(text, starts[position])
            except (ValueError, RecursionError):
                entry, stop = None, -1
            id_ = entry.get("id") if type(entry) is dict else None
            meta = entry.get("meta") if type(entry) is dict else None
            if (
                stop != end
                or type(entry) is not dict
                or len(entry) != 2
                or type(meta) is not dict
                or (type(id_) is not str and type(id_) is not int)
                or ("path" in meta and type(meta["path"]) is not str)
            ):
                _parse_at(items_path, position, text, starts[position], end)
                raise IndexFormatError(f"{_where(items_path, position)}")  # not reached
            ids.append(id_)
            metadata.append(meta)
    else:
        for position, line in enumerate(data.split(b"\n")[:n]):
            id_, m = parse_line(items_path, position, line)
            ids.append(id_)
            metadata.append(m)
    check_unique(f"items file {items_path}", ids)
    return ids, metadata


class ItemsFile:
    """Lazy reader of a folder's items: opening checks only O(1) facts, :meth:`item`
    reads one line by its offsets (``os.pread``, so threads may share it).

    Args:
        folder: the index folder (for messages and, without ``dir_fd``, the files).
        meta: its checked sidecar (format 2).
        dir_fd: an open descriptor of the folder: the files are opened through it, so
            they come from the same folder as the sidecar even if a writer replaces the
            folder meanwhile.
    """

    def __init__(self, folder: Path, meta: dict[str, Any], dir_fd: int | None = None):
        self.path = folder / ITEMS_FILE
        self.offsets_path = folder / OFFSETS_FILE
        self.count = meta["count"]
        # Kept open (with the items file) so check_hashes reads the very files mapped.
        self._offsets_file = f = _open(self.offsets_path, OFFSETS_FILE, dir_fd, "offsets")
        try:
            size = os.fstat(f.fileno()).st_size
            if size != meta["offsets_bytes"]:
                raise IndexFormatError(
                    f"offsets file {self.offsets_path} has {size} bytes, the sidecar says "
                    f"{meta['offsets_bytes']}"
                )
            self._offsets = map_npy(f, self.offsets_path, "offsets")
        except BaseException:
            f.close()
            raise
        _check_offsets_header(self.offsets_path, self._offsets, self.count)
        self._file = _open(self.path, ITEMS_FILE, dir_fd, "items")
        try:
            self.size = os.fstat(self._file.fileno()).st_size
            if self.size != meta["items_bytes"]:
                raise IndexFormatError(
                    f"items file {self.path} has {self.size} bytes, the sidecar says "
                    f"{meta['items_bytes']}"
                )
            _check_offsets_ends(
                self.offsets_path, int(self._offsets[0]), int(self._offsets[-1]), self.size
            )
        except BaseException:
            self._file.close()
            self._offsets_file.close()
            raise

    def __len__(self) -> int:
        return self.count

    def close(self) -> None:
        self._file.close()
        self._offsets_file.close()

    def check_hashes(self, meta: dict[str, Any]) -> None:
        """Compares the sha256 of the open items and offsets files with the sidecar's
        (reads both whole: O(N)); raises IndexFormatError naming the file that differs."""
        if _fd_sha256(self._file) != meta["items_sha256"]:
            raise IndexFormatError(
                f"items file {self.path} is corrupted: its sha256 differs from the sidecar's"
            )
        if _fd_sha256(self._offsets_file) != meta["offsets_sha256"]:
            raise IndexFormatError(
                f"offsets file {self.offsets_path} is corrupted: its sha256 differs from the "
                "sidecar's"
            )

    def item(self, position: int) -> tuple[str | int, dict[str, Any]]:
        """(id, metadata) of the item at ``position`` (negative counts from the end)."""
        if not -self.count <= position < self.count:
            raise IndexError(f"position must be in [0, {self.count}), got {position}")
        position %= self.count
        start, end = int(self._offsets[position]), int(self._offsets[position + 1])
        if not 0 <= start < end <= self.size:
            raise IndexFormatError(
                f"offsets file {self.offsets_path} is corrupted at item {position}: line "
                f"[{start}, {end}) is not inside the {self.size} bytes of {self.path}"
            )
        # One byte before the line too: it must be a line break (or the file's start),
        # so an offset into the middle of a line is caught, not read as another item.
        before = 1 if start else 0
        data = os.pread(self._file.fileno(), end - start + before, start - before)
        line = data[before:]
        if len(data) != end - start + before or (before and data[0] != ord("\n")):
            raise IndexFormatError(
                f"items file {self.path} is corrupted at item {position}: line "
                f"[{start}, {end}) does not start at a line break"
            )
        if line.find(b"\n") != len(line) - 1:
            raise IndexFormatError(
                f"items file {self.path} is corrupted at item {position}: line "
                f"[{start}, {end}) is not one whole line"
            )
        return parse_line(self.path, position, line[:-1])

    def __iter__(self):
        """Every (id, metadata) in position order: O(N), read sequentially in blocks
        (one ``pread`` per block, not per item), each line checked as :meth:`item` does."""
        block = 4096
        for first in range(0, self.count, block):
            stop = min(self.count, first + block)
            bounds = np.asarray(self._offsets[first : stop + 1], np.int64)
            if bounds[0] < 0 or bounds[-1] > self.size or np.any(np.diff(bounds) <= 0):
                # Name the first bad item the way item() does.
                for position in range(first, stop):
                    self.item(position)
                raise IndexFormatError(f"offsets file {self.offsets_path} is corrupted")
            base = int(bounds[0])
            data = os.pread(self._file.fileno(), int(bounds[-1]) - base, base)
            if len(data) != int(bounds[-1]) - base:
                raise IndexFormatError(f"items file {self.path} is shorter than its offsets")
            for position, start, end in zip(
                range(first, stop),
                (bounds[:-1] - base).tolist(),
                (bounds[1:] - base).tolist(),
                strict=True,
            ):
                # A line's start follows a "\n": the line before it ended with one.
                line = data[start:end]
                if line.find(b"\n") != len(line) - 1:
                    raise IndexFormatError(
                        f"items file {self.path} is corrupted at item {position}: line "
                        f"[{start + base}, {end + base}) is not one whole line"
                    )
                yield parse_line(self.path, position, line[:-1])


def parse_line(path: Path, position: int, line: bytes) -> tuple[str | int, dict[str, Any]]:
    """(id, metadata) of one line (without its ``\\n``), checked as the sidecar's were:
    exactly one JSON object, no space around it (what :func:`item_line` writes)."""
    try:
        text = line.decode("utf-8")
    except UnicodeDecodeError as err:
        raise IndexFormatError(f"{_where(path, position)}: not UTF-8 ({err})") from None
    return _parse_at(path, position, text, 0, len(text))


def _parse_at(path: Path, position: int, text: str, start: int, end: int):
    """The item whose JSON is ``text[start:end]``, parsed in place (no slice copied)."""
    try:
        entry, stop = _DECODER.raw_decode(text, start)
    except (ValueError, RecursionError) as err:
        raise IndexFormatError(f"{_where(path, position)}: not JSON ({err})") from None
    if stop != end:
        raise IndexFormatError(f"{_where(path, position)}: not JSON (one object, then more)")
    if type(entry) is not dict or len(entry) != 2 or "id" not in entry or "meta" not in entry:
        raise IndexFormatError(f'{_where(path, position)}: not an object with "id" and "meta" only')
    id_, meta = entry["id"], entry["meta"]
    if isinstance(id_, bool) or not isinstance(id_, str | int):
        raise IndexFormatError(
            f"{_where(path, position)}: ids must be str or int, got {short(id_)}"
        )
    if type(meta) is not dict:
        raise IndexFormatError(f"{_where(path, position)}: metadata not a dict")
    # The command line opens ``path`` as a file: another type is damage, not a path.
    if "path" in meta and not isinstance(meta["path"], str):
        raise IndexFormatError(
            f"{_where(path, position)}: metadata 'path' of item {position} ({short(id_)}) is "
            f"{short(meta['path'])}, not text"
        )
    return id_, meta


def _where(path: Path, position: int) -> str:
    return f"items file {path} is corrupted at item {position} (line {position + 1})"


def check_unique(source: str, ids: list) -> None:
    """Raises IndexFormatError when ``ids`` (read from ``source``) repeat one."""
    if len(set(ids)) != len(ids):
        seen = set()
        duplicate = next(i for i in ids if i in seen or seen.add(i))
        raise IndexFormatError(f"{source} lists duplicate ids (first: {short(duplicate)})")


def map_npy(f: BinaryIO, path: Path, what: str) -> np.ndarray:
    """The array of an open ``.npy`` file, memory-mapped read-only after its header and
    the file's length are checked (only the header is read)."""
    broken = f"{what} file {path} is missing, truncated or corrupted"
    try:
        version = np.lib.format.read_magic(f)
        if version not in _NPY_HEADER_READERS:
            raise ValueError(f"unsupported .npy format version {version}")
        shape, fortran, dtype = _NPY_HEADER_READERS[version](f)
        if dtype.hasobject:
            raise ValueError(f"dtype {dtype} holds Python objects")
        start = f.tell()
        need = start + int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
        size = os.fstat(f.fileno()).st_size
        if size < need:
            raise ValueError(f"{size} bytes, its header needs {need}")
        if fortran and len(shape) > 1 and min(shape) > 1:
            raise ValueError("Fortran order")
        if need == start:  # mmap cannot map nothing
            return np.empty(shape, dtype)
        return np.memmap(f, dtype=dtype, mode="r", offset=start, shape=tuple(shape))
    except (OSError, ValueError, EOFError, SyntaxError) as err:
        raise IndexFormatError(f"{broken}: {err}") from None


def _fd_sha256(f: BinaryIO) -> str:
    """sha256 of an open file, read by position (its file offset is left alone)."""
    digest, size = hashlib.sha256(), os.fstat(f.fileno()).st_size
    for start in range(0, size, _CHUNK):
        digest.update(os.pread(f.fileno(), min(_CHUNK, size - start), start))
    return digest.hexdigest()


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _open(path: Path, name: str, dir_fd: int | None, what: str) -> BinaryIO:
    try:
        return os.fdopen(os.open(name if dir_fd is not None else path, os.O_RDONLY,
                                 dir_fd=dir_fd), "rb")  # fmt: skip
    except OSError as err:
        raise IndexFormatError(f"{what} file {path} is missing or unreadable: {err}") from None


def _read_checked(path: Path, size: int, sha256: str) -> bytes:
    """A file's bytes, checked against the size and sha256 the sidecar records."""
    try:
        data = path.read_bytes()
    except OSError as err:
        raise IndexFormatError(f"file {path} is missing or unreadable: {err}") from None
    if len(data) != size:
        raise IndexFormatError(f"file {path} has {len(data)} bytes, the sidecar says {size}")
    if hashlib.sha256(data).hexdigest() != sha256:
        raise IndexFormatError(f"file {path} is corrupted: its sha256 differs from the sidecar's")
    return data


def _check_offsets_header(path: Path, offsets: np.ndarray, count: int) -> None:
    if offsets.dtype != OFFSETS_DTYPE or offsets.shape != (count + 1,):
        raise IndexFormatError(
            f"offsets file {path} holds {offsets.dtype} {offsets.shape}, expected "
            f"little-endian uint64 ({count + 1},) from the sidecar"
        )


def _check_offsets_ends(path: Path, first: int, last: int, size: int) -> None:
    if first != 0 or last != size:
        raise IndexFormatError(
            f"offsets file {path} is corrupted: it runs from {first} to {last}, the items "
            f"file has {size} bytes (expected 0 to {size})"
        )


def _first_difference(a: np.ndarray, b: np.ndarray) -> int:
    n = min(len(a), len(b))
    differ = np.flatnonzero(a[:n] != b[:n])
    return int(differ[0]) if differ.size else n
