"""A Hamming index of hash codes with ids and metadata, exact by default, Annoy on request.

On disk an index is one folder (``index.json`` sidecar, ``codes.npy``, ``index.ann``),
written atomically and checked on reading by :mod:`deploy.index_store`, whose names
(``SIDECAR_FILE``, ``IndexFormatError``, ...) are importable from here too.

Only numpy, annoy and the standard library are imported here.

Longer than 300 lines on purpose: it is one class, whose adding, searching (exact and
Annoy, merged with one tie rule), reading and saving all work on the same private
arrays (packed codes, scan words, ids, metadata); split up, those would become public.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from typing import Any

import annoy
import numpy as np

from deploy import codes, index_store
from deploy.contract import VALID_BITS
from deploy.exact import exact_topk
from deploy.index_store import (  # noqa: F401  (re-exported: the index's public names)
    ANNOY_FILE,
    ANNOY_SEED,
    CODES_FILE,
    FORMAT_VERSION,
    SIDECAR_FILE,
    IndexFormatError,
    IndexMismatchError,
    writer_lock,
)

BACKENDS = ("auto", "exact", "annoy")
_ANNOY_MAX_INT = 2**31 - 1
_ANNOY_ADD_BATCH = 8192  # rows unpacked to Python lists at a time while feeding Annoy


@dataclass(frozen=True)
class Hit:
    """One search result.

    Attributes:
        rank: 1 for the nearest item, then 2, 3, ...
        id: the id the item was added with.
        distance: exact Hamming distance to the query.
        position: the item's insertion order in the index (ties are ordered by it).
        metadata: a copy of the item's metadata.
    """

    rank: int
    id: str | int
    distance: int
    position: int
    metadata: dict[str, Any] = field(default_factory=dict)


class HammingIndex:
    """Searchable hash codes with ids and metadata.

    Backends:

    * ``"exact"``: the exact scan of ``deploy.exact`` over all codes. Ties are ordered by
      insertion order, so results equal a brute-force stable sort.
    * ``"annoy"``: an Annoy Hamming forest over the codes present at :meth:`build`, plus
      an exact scan of the items added since (the delta), merged and ranked by exact
      distance, then position. This is APPROXIMATE: Annoy stops after gathering
      ``search_k`` candidates, and nothing it reports bounds the distance of the items it
      never visited, so verifying its answer would cost a full exact scan; an unvisited
      closer item is missed (recall@10 0.986 at 1M clustered codes, 1.0 with 10x
      search_k; see bench/bench_index.py). What holds: every item Annoy visited is
      re-ranked by its exact distance, so the result is the exact top-k of (visited
      items + delta), every returned distance is exact, and ties are ordered by
      position, never by Annoy. ``search_k >= n_trees * len(index)`` makes Annoy visit
      every leaf: exact, but slower than ``"exact"``.
    * ``"auto"`` (default): ``"exact"`` while the index has fewer than ``annoy_min_items``
      items, ``"annoy"`` from there. ``annoy_min_items=None`` (default) never picks
      Annoy, because the benchmark (docs/targets.md, bench/bench_index.py) shows Annoy
      faster than the exact scan only by giving up recall. The default therefore never
      returns a worse top-k than exact search.

    Annoy cannot add items after building, and a lookup before :meth:`build` searches
    everything exactly; :meth:`compact` rebuilds the forest over all items.

    Args:
        bits: code length (one of ``VALID_BITS``).
        fingerprint: fingerprint of the encoder that made the codes; :meth:`load` can
            refuse an index made by another encoder.
        n_trees: Annoy trees.
        search_k: candidates Annoy gathers per lookup (duplicates across trees count);
            -1 means Annoy's default for k results, ``n_trees * k``.
        backend: "auto", "exact" or "annoy".
        annoy_min_items: smallest index size at which "auto" uses Annoy; None: never.

    Example:
        >>> index = HammingIndex(bits=32, fingerprint="enc-1")
        >>> index.add([0] * 32, id="a", metadata={"label": 0})
        >>> index.add([1] * 32, id="b")
        >>> [(h.id, h.distance) for h in index.lookup([0] * 31 + [1], k=2)]
        [('a', 1), ('b', 31)]
    """

    def __init__(
        self,
        bits: int,
        fingerprint: str,
        n_trees: int = 50,
        search_k: int = -1,
        backend: str = "auto",
        annoy_min_items: int | None = None,
    ):
        if not _is_int(bits) or bits not in VALID_BITS:
            raise ValueError(f"bits must be one of {VALID_BITS}, got {bits!r}")
        if not isinstance(fingerprint, str):
            raise ValueError(f"fingerprint must be a str, got {type(fingerprint).__name__}")
        if not isinstance(backend, str) or backend not in BACKENDS:
            raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
        if not _is_int(n_trees) or n_trees < 1:
            raise ValueError(f"n_trees must be an int >= 1, got {n_trees!r}")
        if not _is_int(search_k) or not (search_k >= 1 or search_k == -1):
            raise ValueError(f"search_k must be an int >= 1 or -1, got {search_k!r}")
        if annoy_min_items is not None and not (_is_int(annoy_min_items) and annoy_min_items >= 0):
            raise ValueError(
                f"annoy_min_items must be None or an int >= 0, got {annoy_min_items!r}"
            )
        self.bits = bits
        self.fingerprint = fingerprint
        self.n_trees = n_trees
        self.search_k = search_k
        self.backend = backend
        self.annoy_min_items = annoy_min_items
        self._n_bytes = bits // 8
        self._packed = np.empty((0, self._n_bytes), np.uint8)  # grows by doubling
        self._words = codes.packed_to_words(self._packed)
        # For 64 bits and more the words are a view of the packed codes; 32-bit codes are
        # zero-padded to a word, so they are kept in a second array.
        self._words_copied = self._n_bytes % 8 != 0
        self._n = 0
        self._ids: list[str | int] = []
        self._positions: dict[str | int, int] = {}
        self._metadata: list[dict[str, Any]] = []
        self._annoy: annoy.AnnoyIndex | None = None
        self._n_annoy = 0
        # When the index was first saved (UTC, ISO 8601); kept by every later save.
        self.created: str | None = None

    def get_config(self) -> dict[str, Any]:
        """The constructor arguments, verbatim."""
        return {
            "bits": self.bits,
            "fingerprint": self.fingerprint,
            "n_trees": self.n_trees,
            "search_k": self.search_k,
            "backend": self.backend,
            "annoy_min_items": self.annoy_min_items,
        }

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> HammingIndex:
        return cls(**config)

    def __len__(self) -> int:
        return self._n

    # Reading (what a caller may know besides search results) ---------------------------

    def __contains__(self, id) -> bool:
        return id in self._positions

    @property
    def ids(self) -> list[str | int]:
        """The item ids, in insertion order (a copy)."""
        return list(self._ids)

    @property
    def n_delta(self) -> int:
        """Items outside the Annoy forest (all of them without one), scanned exactly."""
        return self._n - self._n_annoy

    def entries(self) -> list[tuple[str | int, dict[str, Any]]]:
        """(id, metadata copy) of every item, in insertion order."""
        return [(i, dict(m)) for i, m in zip(self._ids, self._metadata, strict=True)]

    def indexed_paths(self) -> list[tuple[str | int, str]]:
        """(id, path) of every item whose metadata names its file (``"path"``)."""
        return [
            (i, m["path"])
            for i, m in zip(self._ids, self._metadata, strict=True)
            if isinstance(m.get("path"), str) and m["path"]
        ]

    def packed_codes(self, positions) -> np.ndarray:
        """Packed uint8 (len(positions), bits / 8) codes of the items at ``positions``
        (e.g. the ``position`` of hits), a copy."""
        positions = np.asarray(positions, np.int64).reshape(-1)
        if positions.size and (positions.min() < 0 or positions.max() >= self._n):
            raise IndexError(f"positions must be in [0, {self._n}), got {positions.tolist()}")
        return self._packed[positions].copy()

    # Adding ---------------------------------------------------------------------------

    def add(self, code, id: str | int, metadata: dict[str, Any] | None = None) -> None:
        """Adds one code: ``bits`` 0/1 values or ``bits / 8`` packed uint8 bytes."""
        if np.ndim(code) != 1:
            raise ValueError(f"add takes one code (1-D), got shape {np.shape(code)}; use batch_add")
        self.batch_add(np.asarray(code)[None], [id], None if metadata is None else [metadata])

    def batch_add(self, codes_, ids, metadata=None) -> None:
        """Adds N codes (N, bits) 0/1 or (N, bits / 8) packed, with N unique ids.

        Nothing is added if any code, id or metadata entry is invalid.
        """
        packed = self._to_packed(codes_, "codes")
        ids = [_check_id(i) for i in ids]
        if len(ids) != len(packed):
            raise ValueError(f"got {len(packed)} codes but {len(ids)} ids")
        # One shared empty dict when no metadata is given: it is never mutated.
        metadata = [{}] * len(ids) if metadata is None else [_check_meta(m) for m in metadata]
        if len(metadata) != len(ids):
            raise ValueError(f"got {len(ids)} ids but {len(metadata)} metadata entries")
        seen = set(self._positions)
        for i in ids:
            if i in seen:
                raise ValueError(f"duplicate id {i!r}: ids must be unique")
            seen.add(i)
        self._append(packed, ids, metadata)

    def _append(self, packed: np.ndarray, ids: list, metadata: list) -> None:
        n, m = self._n, len(packed)
        if n + m > len(self._packed):
            grown = np.zeros((max(2 * len(self._packed), n + m, 1024), self._n_bytes), np.uint8)
            grown[:n] = self._packed[:n]
            self._packed = grown
            self._words = codes.packed_to_words(grown)
        self._packed[n : n + m] = packed
        if self._words_copied:
            self._words[n : n + m] = codes.packed_to_words(packed)
        self._positions.update((i, n + j) for j, i in enumerate(ids))
        self._ids.extend(ids)
        self._metadata.extend(metadata)
        self._n = n + m

    def _to_packed(self, values, what: str) -> np.ndarray:
        arr = np.asarray(values)
        if arr.ndim != 2:
            raise ValueError(f"{what} must be 2-D (N, code), got shape {arr.shape}")
        if arr.shape[1] == self.bits:
            try:
                return codes.pack_bits(arr)
            except ValueError as err:
                raise ValueError(f"{what} are not 0/1 bits: {err}") from err
        if arr.shape[1] == self._n_bytes:
            if arr.dtype != np.uint8:
                raise ValueError(
                    f"{what} with {self._n_bytes} values must be packed uint8 bytes, got {arr.dtype}"
                )
            return arr
        raise ValueError(
            f"{what} have {arr.shape[1]} values per code; this index holds {self.bits}-bit "
            f"codes: give {self.bits} bits (0/1) or {self._n_bytes} packed uint8 bytes"
        )

    # Removing and replacing -----------------------------------------------------------

    def remove(self, ids) -> int:
        """Removes the items with these ids; the others keep their insertion order.

        An item inside the Annoy forest cannot be taken out of it (Annoy has no delete),
        and every later position moves down, so removing one drops the forest: until
        :meth:`compact` rebuilds it, every item is in the delta and searched exactly (never
        a wrong answer, only a slower one). Removing only delta items keeps the forest.

        Returns:
            The number of items removed.

        Raises:
            KeyError: an id is not in the index (nothing is removed).
        """
        ids = [_check_id(i) for i in ids]
        missing = [i for i in ids if i not in self._positions]
        if missing:
            raise KeyError(f"id {missing[0]!r} is not in the index ({len(missing)} unknown)")
        drop = np.zeros(self._n, bool)
        drop[[self._positions[i] for i in ids]] = True
        if not drop.any():
            return 0
        if drop[: self._n_annoy].any():
            self._annoy, self._n_annoy = None, 0
        keep = np.flatnonzero(~drop)
        packed = self._packed[keep]
        kept_ids = [self._ids[p] for p in keep.tolist()]
        kept_meta = [self._metadata[p] for p in keep.tolist()]
        self._packed = np.empty((0, self._n_bytes), np.uint8)
        self._words = codes.packed_to_words(self._packed)
        self._n, self._ids, self._positions, self._metadata = 0, [], {}, []
        self._append(packed, kept_ids, kept_meta)
        return int(drop.sum())

    def replace(self, code, id: str | int, metadata: dict[str, Any] | None = None) -> None:
        """Gives an existing id a new code (and metadata): :meth:`remove` then :meth:`add`.

        The item becomes the newest one (it is a new insertion, so it ranks after older
        items at an equal distance). Nothing changes if the code or metadata is invalid.

        Raises:
            KeyError: ``id`` is not in the index.
        """
        if np.ndim(code) != 1:
            raise ValueError(f"replace takes one code (1-D), got shape {np.shape(code)}")
        packed = self._to_packed(np.asarray(code)[None], "codes")
        meta = _check_meta(metadata)
        id = _check_id(id)
        self.remove([id])
        self._append(packed, [id], [meta])

    # Building -------------------------------------------------------------------------

    def uses_annoy(self) -> bool:
        """Whether :meth:`build` makes an Annoy forest (from backend and current size)."""
        if self.backend == "auto":
            return self.annoy_min_items is not None and self._n >= self.annoy_min_items
        return self.backend == "annoy"

    def build(self) -> None:
        """Builds the Annoy forest over all items when Annoy is used; else nothing to do."""
        if self._n == 0:
            raise ValueError("cannot build an empty index: add codes first")
        if not self.uses_annoy():
            self._annoy, self._n_annoy = None, 0
            return
        if self._annoy is not None and self._n_annoy == self._n:
            return
        forest = annoy.AnnoyIndex(self.bits, "hamming")
        forest.set_seed(ANNOY_SEED)
        for start in range(0, self._n, _ANNOY_ADD_BATCH):
            # Annoy reads a value > 0.5 as bit 1: feed it 0/1 bits, never tanh outputs.
            rows = codes.unpack_bits(self._packed[start : min(start + _ANNOY_ADD_BATCH, self._n)])
            for offset, row in enumerate(rows.tolist()):
                forest.add_item(start + offset, row)
        forest.build(self.n_trees, n_jobs=1)
        self._annoy, self._n_annoy = forest, self._n

    def compact(self) -> None:
        """Folds the delta into a fresh Annoy forest over all items (same as build)."""
        self.build()

    # Searching ------------------------------------------------------------------------

    def lookup(self, query, k: int) -> list[Hit]:
        """The k nearest items to one code (bits or packed); all items if k > len."""
        if np.ndim(query) != 1:
            raise ValueError(
                f"lookup takes one code (1-D), got shape {np.shape(query)}; use batch_lookup"
            )
        return self.batch_lookup(np.asarray(query)[None], k)[0]

    def batch_lookup(self, queries, k: int) -> list[list[Hit]]:
        """The k nearest items to each of N codes; same results as N lookups."""
        positions, distances = self.search(queries, k)
        return [
            [
                Hit(rank + 1, self._ids[p], d, p, dict(self._metadata[p]))
                for rank, (p, d) in enumerate(zip(row_p.tolist(), row_d.tolist(), strict=True))
            ]
            for row_p, row_d in zip(positions, distances, strict=True)
        ]

    def search(self, queries, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Array form of :meth:`batch_lookup`: (positions int64, distances int32), (N, k')."""
        if isinstance(k, bool) or not isinstance(k, int | np.integer) or k < 1:
            raise ValueError(f"k must be an integer >= 1, got {k!r}")
        if self._n == 0:
            raise ValueError("lookup on an empty index: add codes first")
        k = min(int(k), self._n)  # "all items if k > len"; Annoy takes only a C int
        q_packed = self._to_packed(queries, "queries")
        q_words = codes.packed_to_words(q_packed)
        words = self._words[: self._n]
        if self._annoy is None:
            return exact_topk(q_words, words, k)
        kk = min(int(k), self._n)
        delta = None
        if self._n > self._n_annoy:
            delta = exact_topk(q_words, words[self._n_annoy :], k)
        search_k = self.search_k if self.search_k != -1 else self.n_trees * int(k)
        # More candidates than the forest's leaves visit nothing more; Annoy takes a C int.
        search_k = min(search_k, self.n_trees * self._n_annoy, _ANNOY_MAX_INT)
        q_bits = codes.unpack_bits(q_packed).tolist()
        out_p = np.empty((len(q_packed), kk), np.int64)
        out_d = np.empty((len(q_packed), kk), np.int32)
        for j, q in enumerate(q_bits):
            cand = self._annoy_candidates(q, search_k)
            if cand.size < min(int(k), self._n_annoy):  # Annoy visited too few: take all
                cand = np.arange(self._n_annoy)
            dist = np.bitwise_count(words[cand] ^ q_words[j]).sum(axis=1, dtype=np.int32)
            if delta is not None:
                cand = np.concatenate([cand, delta[0][j] + self._n_annoy])
                dist = np.concatenate([dist, delta[1][j]])
            order = np.lexsort((cand, dist))[:kk]
            out_p[j], out_d[j] = cand[order], dist[order]
        return out_p, out_d

    def _annoy_candidates(self, query_bits: list, search_k: int) -> np.ndarray:
        """Positions of every item Annoy visits for the query (at most search_k).

        Annoy's traversal depends only on search_k, and it computes the distance of every
        item it visits before keeping the n nearest; asking for n = search_k returns all
        of them, so the exact re-rank sees each visited tie and the order among ties is
        ours (position), never Annoy's.
        """
        n = min(search_k, self._n_annoy)
        return np.asarray(self._annoy.get_nns_by_vector(query_bits, n, search_k), np.int64)

    # Saving and loading ---------------------------------------------------------------

    def save(self, directory: str | os.PathLike, lock_timeout: float | None = None) -> None:
        """Writes the index folder atomically: a crash leaves the previous one loadable.

        Saves of one folder are serialised (its writer lock, waited for up to
        ``lock_timeout`` seconds, None: no limit). To add to a saved index without losing
        a concurrent writer's items, hold :func:`writer_lock` from before :meth:`load` to
        after the save. A ``directory`` that is a symbolic link is written through.

        Raises:
            FileExistsError: ``directory`` is a file, or a non-empty folder that holds no
                index (it would be replaced, and its files lost).
            deploy.locking.LockTimeout: another writer held the lock too long.
        """
        self.created = index_store.write_index(
            directory,
            self.get_config(),
            self._packed[: self._n],
            self._ids,
            self._metadata,
            self._annoy,
            self._n_annoy,
            lock_timeout,
            self.created,
        )

    @classmethod
    def load(
        cls,
        directory: str | os.PathLike,
        expected_fingerprint: str | None = None,
        expected_bits: int | None = None,
    ) -> HammingIndex:
        """Loads an index folder, refusing one made by another encoder or bit length.

        Raises:
            FileNotFoundError: no ``index.json`` in ``directory``.
            IndexMismatchError: the index holds codes of another encoder or bit length.
            IndexFormatError: a file is truncated, corrupted or inconsistent (named).
        """
        stored = index_store.read_index(directory, expected_fingerprint, expected_bits)
        try:
            index = cls.from_config(stored.config)
        except (TypeError, ValueError) as err:
            sidecar = stored.path / SIDECAR_FILE
            raise IndexFormatError(f"index sidecar {sidecar} is corrupted: {err}") from None
        index._append(stored.packed, stored.ids, stored.metadata)
        index._annoy, index._n_annoy = stored.forest, stored.n_annoy
        index.created = stored.created
        return index


def _is_int(value) -> bool:
    return isinstance(value, int | np.integer) and not isinstance(value, bool)


def _check_id(value) -> str | int:
    if isinstance(value, np.integer):
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise ValueError(f"ids must be str or int, got {value!r} ({type(value).__name__})")
    return value


def _check_meta(value) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict) or not all(isinstance(key, str) for key in value):
        raise ValueError(f"metadata must be a dict with str keys, got {value!r}")
    try:
        json.dumps(value)
    except (TypeError, ValueError) as err:
        raise ValueError(f"metadata must be JSON-serialisable: {err}") from err
    return dict(value)
