"""A Hamming index of hash codes with ids and metadata, exact by default, Annoy on request.

This is the public face of the index; the work is in four modules beside it:

* :mod:`deploy.index_items`: the items in insertion order (packed codes, scan words, ids,
  metadata) and every check an item passes on its way in;
* :mod:`deploy.exact`: the exact top-k scan; :mod:`deploy.annoy_forest`: the Annoy
  forest and its merge with the items added after it was built;
* :mod:`deploy.index_store`: the folder on disk (``index.json`` sidecar, ``codes.npy``,
  ``index.ann``), written atomically under the writer lock and checked on reading. Its
  names (``SIDECAR_FILE``, ``IndexFormatError``, ``writer_lock``, ...) are importable from
  here too.

Only numpy, annoy and the standard library are imported here.

Longer than 300 lines on purpose: it is the whole public API of the index, one class
that other code (the CLI, the reports, user programs, the README's example) is written
against, each method with its contract spelled out; the work behind the methods is in
the modules above.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

import annoy
import numpy as np

from deploy import codes, index_store
from deploy.annoy_forest import build_forest, forest_topk
from deploy.contract import VALID_BITS
from deploy.exact import exact_topk
from deploy.index_items import ItemTable, check_id, check_metadata
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
      distance, then position. This is APPROXIMATE (an item Annoy never visits is
      missed; every returned distance is exact and ties are still ordered by position):
      :mod:`deploy.annoy_forest` says exactly what holds.
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
        self._items = ItemTable(bits)
        # The forest over the first _n_annoy items (None: every search is exact).
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

    @classmethod
    def from_sidecar_config(cls, folder: os.PathLike, config: dict[str, Any]) -> HammingIndex:
        """An empty index of the config an index folder records (what :meth:`load` and
        :meth:`deploy.mapped_index.MappedIndex.open` check it with).

        Raises:
            IndexFormatError: the config is not a valid one (naming the sidecar).
        """
        try:
            return cls.from_config(config)
        except (TypeError, ValueError) as err:
            sidecar = os.path.join(folder, SIDECAR_FILE)
            raise IndexFormatError(f"index sidecar {sidecar} is corrupted: {err}") from None

    def __len__(self) -> int:
        return len(self._items)

    # Reading (what a caller may know besides search results) ---------------------------

    def __contains__(self, id) -> bool:
        return id in self._items.positions

    @property
    def ids(self) -> list[str | int]:
        """The item ids, in insertion order (a copy)."""
        return list(self._items.ids)

    @property
    def n_delta(self) -> int:
        """Items outside the Annoy forest (all of them without one), scanned exactly."""
        return len(self._items) - self._n_annoy

    def entries(self) -> list[tuple[str | int, dict[str, Any]]]:
        """(id, metadata copy) of every item, in insertion order."""
        return [(i, dict(m)) for i, m in zip(self._items.ids, self._items.metadata, strict=True)]

    def indexed_paths(self) -> list[tuple[str | int, str]]:
        """(id, path) of every item whose metadata names its file (``"path"``)."""
        return [
            (i, m["path"])
            for i, m in zip(self._items.ids, self._items.metadata, strict=True)
            if isinstance(m.get("path"), str) and m["path"]
        ]

    def packed_codes(self, positions) -> np.ndarray:
        """Packed uint8 (len(positions), bits / 8) codes of the items at ``positions``
        (e.g. the ``position`` of hits), a copy."""
        positions = np.asarray(positions, np.int64).reshape(-1)
        n = len(self._items)
        if positions.size and (positions.min() < 0 or positions.max() >= n):
            raise IndexError(f"positions must be in [0, {n}), got {positions.tolist()}")
        return self._items.packed[positions].copy()

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
        self._items.add(codes_, ids, metadata)

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
        removed = self._items.remove(ids)
        if removed.size and removed[0] < self._n_annoy:
            self._annoy, self._n_annoy = None, 0
        return int(removed.size)

    def replace(self, code, id: str | int, metadata: dict[str, Any] | None = None) -> None:
        """Gives an existing id a new code (and metadata): :meth:`remove` then :meth:`add`.

        The item becomes the newest one (it is a new insertion, so it ranks after older
        items at an equal distance). Nothing changes if the code or metadata is invalid.

        Raises:
            KeyError: ``id`` is not in the index.
        """
        if np.ndim(code) != 1:
            raise ValueError(f"replace takes one code (1-D), got shape {np.shape(code)}")
        packed = self._items.to_packed(np.asarray(code)[None], "codes")
        meta = check_metadata(metadata)
        id = check_id(id)
        self.remove([id])
        self._items.append(packed, [id], [meta])

    # Building -------------------------------------------------------------------------

    def uses_annoy(self) -> bool:
        """Whether :meth:`build` makes an Annoy forest (from backend and current size)."""
        if self.backend == "auto":
            return self.annoy_min_items is not None and len(self) >= self.annoy_min_items
        return self.backend == "annoy"

    def build(self) -> None:
        """Builds the Annoy forest over all items when Annoy is used; else nothing to do."""
        n = len(self)
        if n == 0:
            raise ValueError("cannot build an empty index: add codes first")
        if not self.uses_annoy():
            self._annoy, self._n_annoy = None, 0
            return
        if self._annoy is not None and self._n_annoy == n:
            return
        self._annoy = build_forest(self._items.packed, self.bits, self.n_trees)
        self._n_annoy = n

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
        ids, metadata = self._items.ids, self._items.metadata
        return [
            [
                Hit(rank + 1, ids[p], d, p, dict(metadata[p]))
                for rank, (p, d) in enumerate(zip(row_p.tolist(), row_d.tolist(), strict=True))
            ]
            for row_p, row_d in zip(positions, distances, strict=True)
        ]

    def search(self, queries, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Array form of :meth:`batch_lookup`: (positions int64, distances int32), (N, k')."""
        if isinstance(k, bool) or not isinstance(k, int | np.integer) or k < 1:
            raise ValueError(f"k must be an integer >= 1, got {k!r}")
        n = len(self)
        if n == 0:
            raise ValueError("lookup on an empty index: add codes first")
        k = min(int(k), n)  # "all items if k > len"; Annoy takes only a C int
        q_packed = self._items.to_packed(queries, "queries")
        if self._annoy is None:
            return exact_topk(codes.packed_to_words(q_packed), self._items.words, k)
        search_k = self.search_k if self.search_k != -1 else self.n_trees * k
        return forest_topk(
            self._annoy, self._n_annoy, self._items.words, q_packed, k, search_k, self.n_trees
        )

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
            self._items.packed,
            self._items.ids,
            self._items.metadata,
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
        index = cls.from_sidecar_config(stored.path, stored.config)
        index._items.append(stored.packed, stored.ids, stored.metadata)
        index._annoy, index._n_annoy = stored.forest, stored.n_annoy
        index.created = stored.created
        return index


def _is_int(value) -> bool:
    return isinstance(value, int | np.integer) and not isinstance(value, bool)
