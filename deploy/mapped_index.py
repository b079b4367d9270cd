"""Read-only search over index folders whose codes stay on disk (memory-mapped).

:class:`MappedIndex` opens an index folder (the format of :mod:`deploy.index_store`)
without reading its codes or its items: ``codes.npy`` and ``items_offsets.npy`` are
memory-mapped and ``items.jsonl`` is read one line per hit (:class:`deploy.items_file.
ItemsFile`), so opening a format-2 folder costs the same at any item count, and a search
reads the pages it scans through the OS page cache (resident memory is the codes
touched, shared between processes mapping the same file). A format-1 folder keeps its
ids and metadata in the sidecar, which is parsed whole: O(N), as before; the next save
writes format 2. ``ids`` and ``indexed_paths()`` read every item: O(N) in any format.
The files are opened through one descriptor of the folder, so they all come from the
folder the sidecar was read from even if a writer replaces it meanwhile. Search is always
the exact scan (:func:`deploy.sharded.sharded_topk`, threads over shards of the map); an
Annoy forest in the folder is not used. Hits equal :meth:`deploy.index.HammingIndex.
lookup` on the exact backend: same ids, distances, positions and tie order.

:class:`MultiIndex` searches several index folders (e.g. one per site) as if they were
one index holding their items in the order given: each folder's exact top-k, merged
exactly by (distance, global position) (:func:`deploy.sharded.merge_topk`), so the hits
and their tie order equal those of one index built from all of them.

What is not checked on opening: the sha256 of the codes and of the items files (that
would read every byte, what ``index verify`` is for), nor that ids are unique. The
headers, dtypes, shapes and file sizes are checked against the sidecar, and the offsets'
first and last value; a damaged code gives wrong distances, never a crash, and a damaged
offset or item line raises :class:`IndexFormatError` naming the file and the position
when that item is read. A codes file cut
short *after* it was opened would fault the process on access (SIGBUS): index writers
replace the folder as a whole (:mod:`deploy.atomic`), they never truncate a file in
place, so an open map keeps the old, complete file.

Only numpy, the standard library and the index modules are imported here.

(Over 300 lines: the two read-only index classes and the opening they share, with the
checks each open makes; split, each part would reach into the other's internals.)
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

import numpy as np

from deploy import atomic, codes, index_store
from deploy.index import HammingIndex, Hit
from deploy.index_store import CODES_FILE, CONFIG_KEYS, IndexFormatError, IndexMismatchError
from deploy.items_file import ItemsFile, map_npy
from deploy.sharded import merge_topk, sharded_topk

# Folders up to this size are hashed on every open (sha256 runs at about 1 GB/s here).
VERIFY_MAX_BYTES = 64 << 20


def _check_hashes(path: Path, meta: dict[str, Any], packed: np.ndarray, items) -> None:
    """The sha256 checks of :meth:`MappedIndex.open` (``verify``), on the open files."""
    try:
        if hashlib.sha256(np.ascontiguousarray(packed).data).hexdigest() != meta["codes_sha256"]:
            raise IndexFormatError(
                f"codes file {path / CODES_FILE} is corrupted: its sha256 differs from the "
                "sidecar's"
            )
        if isinstance(items, ItemsFile):
            items.check_hashes(meta)
    except BaseException:
        if isinstance(items, ItemsFile):
            items.close()
        raise


def map_codes(
    path: str | os.PathLike, count: int, n_bytes: int, dir_fd: int | None = None
) -> np.ndarray:
    """The packed uint8 (count, n_bytes) codes of a ``codes.npy``, memory-mapped read-only
    (``dir_fd``: an open descriptor of its folder to open it through).

    Raises:
        IndexFormatError: the file is missing, not a C-order uint8 .npy of that shape,
            or shorter than its header says (naming the file).
    """
    path = Path(path)
    if count == 0:
        return np.empty((0, n_bytes), np.uint8)
    try:
        f = os.fdopen(os.open(path.name if dir_fd is not None else path, os.O_RDONLY,
                              dir_fd=dir_fd), "rb")  # fmt: skip
    except OSError as err:
        raise IndexFormatError(
            f"codes file {path} is missing, truncated or corrupted: {err}"
        ) from None
    with f:
        packed = map_npy(f, path, "codes")
    if (
        packed.dtype != np.uint8
        or packed.shape != (count, n_bytes)
        or not packed.flags.c_contiguous
    ):
        raise IndexFormatError(
            f"codes file {path} holds {packed.dtype} {packed.shape}, expected C-order uint8 "
            f"({count}, {n_bytes}) from the sidecar"
        )
    return packed


class SidecarItems:
    """A format-1 folder's items: the ids and metadata lists of its parsed sidecar, with
    :class:`deploy.items_file.ItemsFile`'s reading methods."""

    def __init__(self, meta: dict[str, Any]):
        self._ids, self._metadata = meta["ids"], meta["metadata"]

    def __len__(self) -> int:
        return len(self._ids)

    def item(self, position: int) -> tuple[str | int, dict[str, Any]]:
        return self._ids[position], dict(self._metadata[position])

    def __iter__(self):
        return ((i, dict(m)) for i, m in zip(self._ids, self._metadata, strict=True))


def words_view(packed: np.ndarray) -> np.ndarray:
    """uint64 scan words over packed codes: a view (no copy, the map stays a map) when a
    code is a whole number of words, else :func:`deploy.codes.packed_to_words`'s padded
    copy (32-bit codes)."""
    if packed.shape[1] % 8 == 0 and len(packed):
        return packed.view(np.uint64)  # .npy data starts 64-byte aligned
    return codes.packed_to_words(packed)


class _Lookups:
    """``lookup`` / ``batch_lookup`` (hits with ids and metadata) over a class's
    ``search(queries, k)`` (positions, distances) and ``item(position)``."""

    def batch_lookup(self, queries, k: int) -> list[list[Hit]]:
        """The k nearest items to each query code, as :class:`deploy.index.Hit`."""
        positions, distances = self.search(queries, k)
        return _hits(positions, distances, self.item)

    def lookup(self, query, k: int) -> list[Hit]:
        """The k nearest items to one code (bits or packed)."""
        if np.ndim(query) != 1:
            raise ValueError(f"lookup takes one code (1-D), got shape {np.shape(query)}")
        return self.batch_lookup(np.asarray(query)[None], k)[0]


class MappedIndex(_Lookups):
    """An index folder opened for exact search with its codes memory-mapped.

    Use :meth:`open`. Attributes: ``path`` (the folder read), ``bits``, ``fingerprint``,
    ``format_version``, ``n_annoy`` (items of an Annoy forest in the folder, unused here).
    """

    def __init__(
        self,
        path: Path,
        meta: dict[str, Any],
        packed: np.ndarray,
        threads: int | None,
        items: ItemsFile | SidecarItems,
    ):
        self.path = path
        self.bits = meta["bits"]
        self.fingerprint = meta["fingerprint"]
        self.format_version = meta["format_version"]
        self.n_annoy = meta["n_annoy"]  # items in a forest this class does not use
        self.threads = threads
        self._items = items
        self._packed = packed
        self._words = words_view(packed)

    @classmethod
    def open(
        cls,
        folder: str | os.PathLike,
        expected_fingerprint: str | None = None,
        expected_bits: int | None = None,
        threads: int | None = None,
        verify: bool | None = None,
    ) -> MappedIndex:
        """Opens ``folder`` (checked sidecar, mapped codes); ``threads``: scan threads
        (None: every usable CPU).

        ``verify``: also compare the sha256 of the codes and items files with the
        sidecar's, which reads them whole. None (the default) verifies a folder whose
        files total at most :data:`VERIFY_MAX_BYTES` (a few tens of milliseconds), so an
        index of ordinary size is checked on every open as ``HammingIndex.load`` checks
        it, and a large one opens in O(1) and is checked by ``index verify``.

        Raises:
            FileNotFoundError, IndexFormatError, IndexMismatchError: as
                :meth:`deploy.index.HammingIndex.load`.
        """
        path = atomic.recover_directory(folder)
        try:
            dir_fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
        except (FileNotFoundError, NotADirectoryError):
            raise FileNotFoundError(
                f"no index at {path}: {index_store.SIDECAR_FILE} is missing"
            ) from None
        except OSError as err:
            raise IndexFormatError(f"index folder {path} cannot be opened: {err}") from None
        try:
            path, meta = index_store.read_sidecar(path, dir_fd)
            index_store.check_expected(path, meta, expected_fingerprint, expected_bits)
            # A config no index accepts is damage, though this class does not use it.
            HammingIndex.from_sidecar_config(path, {k: meta[k] for k in CONFIG_KEYS})
            packed = map_codes(path / CODES_FILE, meta["count"], meta["bits"] // 8, dir_fd)
            if meta["format_version"] == 1:
                items = SidecarItems(meta)
            else:
                items = ItemsFile(path, meta, dir_fd)
            size = packed.nbytes + meta.get("items_bytes", 0) + meta.get("offsets_bytes", 0)
            if verify or (verify is None and size <= VERIFY_MAX_BYTES):
                _check_hashes(path, meta, packed, items)
        finally:
            os.close(dir_fd)
        return cls(path, meta, packed, threads, items)

    def __len__(self) -> int:
        return len(self._items)

    @property
    def ids(self) -> list[str | int]:
        """The item ids in insertion order (a new list). Reads every item: O(N)."""
        return [i for i, _ in self._items]

    def item(self, position: int) -> tuple[str | int, dict[str, Any]]:
        """(id, metadata copy) of the item at ``position``: one line read and parsed.

        Raises:
            IndexFormatError: its offsets or its line are damaged (naming the file and
                the position).
        """
        return self._items.item(position)

    def entries(self):
        """(id, metadata) of every item in position order, as an iterator: O(N), read
        sequentially (what an export of every item uses)."""
        return iter(self._items)

    def indexed_paths(self) -> list[tuple[str | int, str]]:
        """(id, path) of every item whose metadata names its file (``"path"``). Reads
        every item: O(N)."""
        return [
            (i, m["path"]) for i, m in self._items if isinstance(m.get("path"), str) and m["path"]
        ]

    def packed_codes(self, positions) -> np.ndarray:
        """Packed uint8 codes of the items at ``positions`` (a copy, read from the map)."""
        positions = np.asarray(positions, np.int64).reshape(-1)
        if positions.size and (positions.min() < 0 or positions.max() >= len(self)):
            raise IndexError(f"positions must be in [0, {len(self)}), got {positions.tolist()}")
        return np.array(self._packed[positions])

    def search(self, queries, k: int) -> tuple[np.ndarray, np.ndarray]:
        """(positions int64, distances int32) of the exact k nearest, (N, min(k, len))."""
        _check_k(k)
        if len(self) == 0:
            raise ValueError(f"lookup on an empty index ({self.path}): add codes first")
        q_words = codes.packed_to_words(query_packed(queries, self.bits))
        return sharded_topk(q_words, self._words, int(k), threads=self.threads)


class MultiIndex(_Lookups):
    """Several index folders searched as one: positions run through the folders in the
    order given (the first folder's items, then the second's, ...).

    Use :meth:`open`. Attributes: ``parts`` (the :class:`MappedIndex` of each folder),
    ``bits``.
    """

    def __init__(self, parts: list[MappedIndex]):
        if not parts:
            raise ValueError("MultiIndex needs at least one index")
        first = parts[0]
        for part in parts[1:]:
            if part.bits != first.bits or part.fingerprint != first.fingerprint:
                raise IndexMismatchError(
                    f"index at {part.path} holds {part.bits}-bit codes of encoder "
                    f"{part.fingerprint!r}, but {first.path} holds {first.bits}-bit codes of "
                    f"{first.fingerprint!r}: only codes of one encoder can be searched together",
                    part.fingerprint,
                    part.bits,
                )
        self.parts = parts
        self.bits = first.bits
        self._offsets = np.cumsum([0] + [len(p) for p in parts])

    @classmethod
    def open(
        cls,
        folders: list[str | os.PathLike],
        expected_fingerprint: str | None = None,
        expected_bits: int | None = None,
        threads: int | None = None,
    ) -> MultiIndex:
        """Opens every folder with :meth:`MappedIndex.open` (same checks and errors)."""
        real = [os.path.realpath(f) for f in folders]
        if len(set(real)) != len(real):
            raise ValueError(
                f"an index folder is given twice ({', '.join(map(str, folders))}): its items "
                "would all be found twice"
            )
        return cls(
            [MappedIndex.open(f, expected_fingerprint, expected_bits, threads) for f in folders]
        )

    def __len__(self) -> int:
        return int(self._offsets[-1])

    def locate(self, position: int) -> tuple[int, int]:
        """(part number, position inside that part) of a global position."""
        if not 0 <= position < len(self):
            raise IndexError(f"position must be in [0, {len(self)}), got {position}")
        part = int(np.searchsorted(self._offsets, position, side="right")) - 1
        return part, position - int(self._offsets[part])

    def item(self, position: int) -> tuple[str | int, dict[str, Any]]:
        part, local = self.locate(position)
        return self.parts[part].item(local)

    def indexed_paths(self) -> list[tuple[str | int, str]]:
        return [pair for part in self.parts for pair in part.indexed_paths()]

    def packed_codes(self, positions) -> np.ndarray:
        located = [self.locate(int(p)) for p in np.asarray(positions).reshape(-1)]
        if not located:
            return np.empty((0, self.bits // 8), np.uint8)
        return np.concatenate([self.parts[p].packed_codes([local]) for p, local in located])

    def search(self, queries, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Exact merged top-k over every part: (global positions, distances)."""
        _check_k(k)
        results = []
        for part, offset in zip(self.parts, self._offsets[:-1].tolist(), strict=True):
            if len(part):
                positions, distances = part.search(queries, k)
                results.append((positions + offset, distances))
        if not results:
            raise ValueError("lookup on empty indexes: add codes first")
        return merge_topk(results, int(k))


def query_packed(queries, bits: int) -> np.ndarray:
    """Queries (N, bits) of 0/1 or (N, bits / 8) packed uint8 -> packed uint8."""
    arr = np.asarray(queries)
    if arr.ndim == 2 and arr.shape[1] == bits:
        return codes.pack_bits(arr)
    if arr.ndim == 2 and arr.shape[1] == bits // 8 and arr.dtype == np.uint8:
        return arr
    raise ValueError(
        f"queries must be (N, {bits}) bits or (N, {bits // 8}) packed uint8, "
        f"got {arr.dtype} {arr.shape}"
    )


def _check_k(k) -> None:
    if isinstance(k, bool) or not isinstance(k, int | np.integer) or k < 1:
        raise ValueError(f"k must be an integer >= 1, got {k!r}")


def _hits(positions: np.ndarray, distances: np.ndarray, item) -> list[list[Hit]]:
    rows = []
    for row_p, row_d in zip(positions.tolist(), distances.tolist(), strict=True):
        hits = []
        for rank, (p, d) in enumerate(zip(row_p, row_d, strict=True)):
            id_, meta = item(p)
            hits.append(Hit(rank + 1, id_, d, p, meta))
        rows.append(hits)
    return rows
