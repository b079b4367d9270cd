"""An index folder on disk: written atomically, read back only after every check passes.

One folder per index (:class:`deploy.index.HammingIndex` saves and loads through here),
format 2 (``FORMAT_VERSION``):

* ``index.json``: the sidecar, the header only (its size does not grow with the items):
  ``format_version``, ``bits``, ``metric`` ("hamming"), the constructor config
  (``n_trees``, ``search_k``, ``backend``, ``annoy_min_items``), the encoder
  ``fingerprint``, ``count``, ``n_annoy`` / ``n_delta`` (items inside the Annoy forest /
  added after it was built), the sha256 of the codes, the size and sha256 of the Annoy
  file, of ``items.jsonl`` (``items_bytes``, ``items_sha256``) and of
  ``items_offsets.npy`` (``offsets_bytes``, ``offsets_sha256``), ``created`` (the first
  save) and ``modified`` (the last), UTC ISO 8601;
* ``codes.npy``: every item's packed code (uint8, ``codes.pack_bits`` layout), so exact
  search and the delta survive a reload;
* ``items.jsonl`` and ``items_offsets.npy``: each item's id and metadata, one JSON line
  per item found by its byte offsets (:mod:`deploy.items_file`), so a reader can open
  the folder and read only the items it needs (:class:`deploy.mapped_index.MappedIndex`);
* ``index.ann``: the Annoy forest, only when one was built.

Format 1 kept ``ids`` and per-item ``metadata`` inside the sidecar and had no items
files; it is still read everywhere (``READ_FORMATS``), and the next save of such a
folder writes format 2.

Longer than 300 lines on purpose: the writer and the reader of the format sit together
with every check the reader makes (each field, size and hash of the files), so the
format and its checks change in one place; the items files' own format and checks are
in :mod:`deploy.items_file`.

The folder is replaced as a whole (:func:`deploy.atomic.atomic_directory`): a crash
leaves the previous index, never a mix. Writers hold the folder's writer lock
(:func:`writer_lock`); one that reads the index to update it takes the lock before
reading, so concurrent updates are applied one after the other, none lost. Reading
(:func:`read_index`, the writer's path: O(N)) checks the sidecar's fields and types,
the codes' shape and sha256, the items files' sizes, sha256, offsets and every line,
the ids' types and uniqueness, and the forest's size and sha256 before anything is used
(Annoy maps the file as it is and can crash the process on a damaged one, so it never
sees an unverified file), and raises :class:`IndexFormatError` (a ``ValueError``)
naming the file for anything wrong with the files, ``FileNotFoundError`` when there is
no index, and :class:`IndexMismatchError` when the index was made by another encoder
or bit length. :func:`read_sidecar` reads the header only (O(1) for format 2).

Only numpy, annoy and the standard library are imported here.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import annoy
import numpy as np

from deploy import atomic, items_file, locking
from deploy.contract import VALID_BITS
from deploy.index_errors import IndexFormatError, IndexMismatchError, short
from deploy.items_file import ITEMS_FILE, OFFSETS_FILE  # noqa: F401  (the folder's names)

FORMAT_VERSION = 2  # what is written
READ_FORMATS = (1, 2)  # what is read: format 1 kept ids and metadata in the sidecar
SIDECAR_FILE = "index.json"
CODES_FILE = "codes.npy"
ANNOY_FILE = "index.ann"
ANNOY_SEED = 0  # Annoy's forest is reproducible with a fixed seed and one build thread
CONFIG_KEYS = ("bits", "fingerprint", "n_trees", "search_k", "backend", "annoy_min_items")
_SIDECAR_TYPES = {
    "format_version": int, "metric": str, "count": int, "n_annoy": int, "n_delta": int,
    "codes_sha256": str, "annoy_bytes": int,
    "bits": int, "fingerprint": str, "n_trees": int, "search_k": int, "backend": str,
}  # fmt: skip
_ITEM_TYPES = {1: {"ids": list, "metadata": list}, 2: items_file.SIDECAR_FIELDS}
_NPY_HEADER_READERS = {
    (1, 0): np.lib.format.read_array_header_1_0,
    (2, 0): np.lib.format.read_array_header_2_0,
}


@dataclass
class StoredIndex:
    """The checked contents of an index folder.

    Attributes:
        path: the folder actually read (the backup, when a crash left only that).
        config: the ``HammingIndex`` constructor arguments.
        ids: item ids (str or int, unique), in insertion order.
        metadata: one dict per item.
        packed: uint8 (count, bits / 8) codes.
        forest: the Annoy forest over the first ``n_annoy`` items, or None.
        n_annoy: items inside the forest.
        created: when the index was first saved (None for an index saved before that
            was recorded).
    """

    path: Path
    config: dict[str, Any]
    ids: list[str | int]
    metadata: list[dict[str, Any]]
    packed: np.ndarray
    forest: annoy.AnnoyIndex | None
    n_annoy: int
    created: str | None = None


def check_destination(folder: str | os.PathLike) -> None:
    """Refuses to replace a folder that is not an index: saving would delete its files.

    Raises:
        FileExistsError: ``folder`` is a file, or a non-empty folder without ``index.json``.
    """
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise FileExistsError(f"{folder} exists and is not a folder; an index is a folder")
    if folder.is_dir() and not (folder / SIDECAR_FILE).is_file() and any(folder.iterdir()):
        raise FileExistsError(
            f"{folder} is not empty and holds no {SIDECAR_FILE}: it is not an index folder, "
            "so it will not be replaced; choose another folder"
        )


def writer_lock(
    folder: str | os.PathLike,
    timeout: float | None = None,
    on_wait: Callable[[str], None] | None = None,
):
    """The index folder's exclusive writer lock (:func:`deploy.locking.writer_lock`).

    Hold it around a read-modify-write (load, add, save) so that no concurrent update
    is lost; saving inside it does not wait for itself.

    Example:
        >>> with writer_lock("idx"):  # doctest: +SKIP
        ...     index = HammingIndex.load("idx")
        ...     index.add(code, id="new")
        ...     index.save("idx")
    """
    return locking.writer_lock(folder, timeout, on_wait)


def write_index(
    folder: str | os.PathLike,
    config: dict[str, Any],
    packed: np.ndarray,
    ids: list[str | int],
    metadata: list[dict[str, Any]],
    forest: annoy.AnnoyIndex | None,
    n_annoy: int,
    lock_timeout: float | None = None,
    created: str | None = None,
) -> str:
    """Writes an index folder atomically: a crash leaves the previous one loadable.

    Holds the writer lock (waiting up to ``lock_timeout`` seconds, None: no limit). A
    ``folder`` that is a symbolic link is written through to its target. ``created`` is
    kept (an index's first save sets it); ``modified`` is now. Returns ``created``.
    """
    now = datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")
    created = created or now
    locking.real_path(folder).parent.mkdir(parents=True, exist_ok=True)
    with writer_lock(folder, lock_timeout) as real:
        atomic.repair_directory(real)  # a crashed write's backup is back before the check
        check_destination(real)
        with atomic.atomic_directory(real) as tmp:
            if forest is not None:
                forest.save(str(tmp / ANNOY_FILE))
            np.save(tmp / CODES_FILE, packed)
            annoy_bytes, annoy_sha256 = 0, ""
            if forest is not None:
                annoy_bytes = (tmp / ANNOY_FILE).stat().st_size
                annoy_sha256 = items_file.file_sha256(tmp / ANNOY_FILE)
            sidecar = _sidecar(config, packed, len(ids), n_annoy, annoy_bytes, annoy_sha256)
            sidecar.update(items_file.write_items(tmp, ids, metadata))
            sidecar.update(created=created, modified=now)
            (tmp / SIDECAR_FILE).write_text(json.dumps(sidecar, indent=1), encoding="utf-8")
    return created


def read_index(
    folder: str | os.PathLike,
    expected_fingerprint: str | None = None,
    expected_bits: int | None = None,
) -> StoredIndex:
    """Reads and checks an index folder (see the module docstring for the errors)."""
    folder = atomic.recover_directory(folder)
    path = folder / SIDECAR_FILE
    meta = _read_sidecar(path)
    check_expected(folder, meta, expected_fingerprint, expected_bits)
    packed = _read_codes(folder / CODES_FILE, meta)
    if meta["format_version"] == 1:
        ids, metadata = meta["ids"], meta["metadata"]
    else:
        ids, metadata = items_file.read_items(folder, meta)
    forest = _read_annoy(folder / ANNOY_FILE, meta) if meta["n_annoy"] else None
    return StoredIndex(
        path=folder,
        config={key: meta[key] for key in CONFIG_KEYS},
        ids=ids,
        metadata=metadata,
        packed=packed,
        forest=forest,
        n_annoy=meta["n_annoy"],
        created=meta.get("created") if isinstance(meta.get("created"), str) else None,
    )


def check_expected(
    folder: Path,
    meta: dict[str, Any],
    expected_fingerprint: str | None = None,
    expected_bits: int | None = None,
) -> None:
    """Raises :class:`IndexMismatchError` when a checked sidecar records another code
    length or encoder than expected (None: not checked)."""
    if expected_bits is not None and meta["bits"] != expected_bits:
        raise IndexMismatchError(
            f"index at {folder} holds {meta['bits']}-bit codes, expected {expected_bits}",
            meta["fingerprint"],
            meta["bits"],
        )
    if expected_fingerprint is not None and meta["fingerprint"] != expected_fingerprint:
        raise IndexMismatchError(
            f"index at {folder} was made by encoder {meta['fingerprint']!r}, expected "
            f"{expected_fingerprint!r}: re-index with the current encoder",
            meta["fingerprint"],
            meta["bits"],
        )


def read_sidecar(
    folder: str | os.PathLike, dir_fd: int | None = None
) -> tuple[Path, dict[str, Any]]:
    """The folder actually read and its checked sidecar, without reading the codes, the
    items or the forest (what ``index info`` shows; O(1) in the item count for format 2,
    format 1 holds every id and metadata in the sidecar). The files' hashes are not
    checked. ``dir_fd``: an open descriptor of the (recovered) folder to read through."""
    folder = atomic.recover_directory(folder) if dir_fd is None else Path(folder)
    return folder, _read_sidecar(folder / SIDECAR_FILE, dir_fd)


def _sidecar(config, packed, count, n_annoy, annoy_bytes, annoy_sha256):
    return {
        "format_version": FORMAT_VERSION,
        "metric": "hamming",
        **config,
        "annoy_seed": ANNOY_SEED,
        "count": count,
        "n_annoy": n_annoy,
        "n_delta": count - n_annoy,
        "codes_sha256": hashlib.sha256(packed.tobytes()).hexdigest(),
        "annoy_bytes": annoy_bytes,
        "annoy_sha256": annoy_sha256,
    }


def _read_sidecar(path: Path, dir_fd: int | None = None) -> dict[str, Any]:
    try:
        with open(path.name if dir_fd is not None else path, "rb",
                  opener=lambda name, flags: os.open(name, flags, dir_fd=dir_fd)) as f:  # fmt: skip
            text = f.read()
    except (FileNotFoundError, IsADirectoryError):
        raise FileNotFoundError(f"no index at {path.parent}: {path.name} is missing") from None
    except OSError as err:
        raise IndexFormatError(f"index sidecar {path} is unreadable: {err}") from None
    try:
        meta = json.loads(text.decode("utf-8"))
    except (ValueError, RecursionError) as err:  # UnicodeDecodeError is a ValueError
        raise IndexFormatError(f"index sidecar {path} is corrupted or truncated: {err}") from None
    corrupted = f"index sidecar {path} is corrupted"
    if not isinstance(meta, dict):
        raise IndexFormatError(f"{corrupted}: not a JSON object")
    version = meta.get("format_version")
    if version not in READ_FORMATS or isinstance(version, bool) or meta.get("metric") != "hamming":
        raise IndexFormatError(
            f"index sidecar {path} has format {short(version)} / metric "
            f"{short(meta.get('metric'))}; this code reads formats "
            f"{', '.join(map(str, READ_FORMATS))}, metric 'hamming'"
        )
    for key, kind in {**_SIDECAR_TYPES, **_ITEM_TYPES[version]}.items():
        if not isinstance(meta.get(key), kind) or isinstance(meta.get(key), bool):
            raise IndexFormatError(f"{corrupted}: {key!r} missing or not {kind.__name__}")
    if "annoy_min_items" not in meta:
        raise IndexFormatError(f"{corrupted}: 'annoy_min_items' missing")
    if meta["bits"] not in VALID_BITS:
        raise IndexFormatError(f"{corrupted}: bits must be one of {VALID_BITS}, got {meta['bits']}")
    n, n_annoy, n_delta = meta["count"], meta["n_annoy"], meta["n_delta"]
    if min(n, n_annoy, n_delta) < 0 or n != n_annoy + n_delta:
        raise IndexFormatError(
            f"{corrupted}: item counts disagree (count {n}, n_annoy {n_annoy}, n_delta {n_delta})"
        )
    if version == 1:
        _check_sidecar_items(path, meta)
    return meta


def _check_sidecar_items(path: Path, meta: dict[str, Any]) -> None:
    """Format 1's ids and metadata, inside the sidecar: the checks format 2's lines get
    from :func:`deploy.items_file.parse_line`."""
    corrupted = f"index sidecar {path} is corrupted"
    n = meta["count"]
    for key in ("ids", "metadata"):
        if len(meta[key]) != n:
            raise IndexFormatError(
                f"{corrupted}: item counts disagree ({len(meta[key])} {key} for count {n})"
            )
    ids = meta["ids"]
    bad = next((i for i in ids if isinstance(i, bool) or not isinstance(i, str | int)), None)
    if bad is not None:
        raise IndexFormatError(f"{corrupted}: ids must be str or int, got {short(bad)}")
    items_file.check_unique(f"index sidecar {path}", ids)
    if not all(isinstance(m, dict) for m in meta["metadata"]):
        raise IndexFormatError(f"{corrupted}: metadata not dicts")
    for position, m in enumerate(meta["metadata"]):
        # The command line opens ``path`` as a file: another type is damage, not a path.
        if "path" in m and not isinstance(m["path"], str):
            raise IndexFormatError(
                f"{corrupted}: metadata 'path' of item {position} ({short(ids[position])}) "
                f"is {short(m['path'])}, not text"
            )


def _read_codes(path: Path, meta: dict[str, Any]) -> np.ndarray:
    """The packed codes, checked against the sidecar's shape and sha256 before loading."""
    n, n_bytes = meta["count"], meta["bits"] // 8
    broken = f"codes file {path} is missing, truncated or corrupted"
    try:
        with open(path, "rb") as f:
            version = np.lib.format.read_magic(f)
            if version not in _NPY_HEADER_READERS:
                raise ValueError(f"unsupported .npy format version {version}")
            shape, fortran, dtype = _NPY_HEADER_READERS[version](f)
            # The header is checked before reading: a corrupted shape must not allocate.
            if dtype != np.uint8 or tuple(shape) != (n, n_bytes) or (fortran and n > 1):
                raise IndexFormatError(
                    f"codes file {path} holds {dtype} {tuple(shape)}, expected uint8 "
                    f"({n}, {n_bytes}) from the sidecar"
                )
            data = f.read(n * n_bytes + 1)
    except IndexFormatError:
        raise
    except (OSError, ValueError, EOFError, SyntaxError) as err:
        raise IndexFormatError(f"{broken}: {err}") from None
    if len(data) != n * n_bytes:
        raise IndexFormatError(f"{broken}: {len(data)} bytes of codes, expected {n * n_bytes}")
    if hashlib.sha256(data).hexdigest() != meta["codes_sha256"]:
        raise IndexFormatError(
            f"codes file {path} is corrupted: its sha256 differs from the sidecar's"
        )
    return np.frombuffer(data, np.uint8).reshape(n, n_bytes).copy()


def _read_annoy(path: Path, meta: dict[str, Any]) -> annoy.AnnoyIndex:
    """The forest, loaded only after its size and sha256 match the sidecar's."""
    expected = meta.get("annoy_sha256")
    if not isinstance(expected, str) or not expected:
        raise IndexFormatError(
            f"index sidecar {path.parent / SIDECAR_FILE} records no sha256 of {path.name}, "
            "so the Annoy file cannot be checked before use: rebuild the index"
        )
    forest = annoy.AnnoyIndex(meta["bits"], "hamming")
    try:
        size = path.stat().st_size
        if size != meta["annoy_bytes"]:
            raise OSError(f"{size} bytes, the sidecar says {meta['annoy_bytes']}")
        # A damaged forest of the right size makes Annoy abort or segfault (it follows
        # the file's offsets unchecked): verify every byte before Annoy maps it.
        if items_file.file_sha256(path) != expected:
            raise IndexFormatError(
                f"Annoy file {path} is corrupted: its sha256 differs from the sidecar's"
            )
        forest.load(str(path))
    except OSError as err:
        raise IndexFormatError(
            f"Annoy file {path} is missing, truncated or corrupted: {err}"
        ) from None
    if forest.get_n_items() != meta["n_annoy"] or forest.get_n_trees() != meta["n_trees"]:
        raise IndexFormatError(
            f"Annoy file {path} holds {forest.get_n_items()} items in {forest.get_n_trees()} "
            f"trees, the sidecar says {meta['n_annoy']} in {meta['n_trees']}"
        )
    return forest
