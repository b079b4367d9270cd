"""The items of a Hamming index, in insertion order: packed codes, ids and metadata.

:class:`ItemTable` is what :class:`deploy.index.HammingIndex` stores and every check an
item passes on its way in (code shape and values, id type and uniqueness, metadata that
JSON can hold). A position is an item's place in insertion order; it is the tie rule of
every search, so removing items keeps the others' order and moves later ones down.

The codes are held twice when that is cheaper than converting per search: packed bytes
(``codes.pack_bits`` layout, what is saved) and the uint64 words the exact scan reads
(:func:`deploy.codes.packed_to_words`; a view of the packed bytes for 64 bits and more).
Both arrays grow by doubling, so adding one item at a time stays linear.

Only numpy and the standard library are imported here.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np

from deploy import codes


class ItemTable:
    """Packed codes, scan words, ids, positions and metadata of ``len(self)`` items.

    Args:
        bits: code length (a multiple of 8; the index checks it is a valid one).
    """

    def __init__(self, bits: int):
        self.bits = bits
        self.n_bytes = bits // 8
        self._packed = np.empty((0, self.n_bytes), np.uint8)  # grows by doubling
        self._words = codes.packed_to_words(self._packed)
        # For 64 bits and more the words are a view of the packed codes; 32-bit codes are
        # zero-padded to a word, so they are kept in a second array.
        self._words_copied = self.n_bytes % 8 != 0
        self._n = 0
        self.ids: list[str | int] = []
        self.positions: dict[str | int, int] = {}
        self.metadata: list[dict[str, Any]] = []

    def __len__(self) -> int:
        return self._n

    @property
    def packed(self) -> np.ndarray:
        """The packed codes (len, bits / 8), a view."""
        return self._packed[: self._n]

    @property
    def words(self) -> np.ndarray:
        """The codes as uint64 scan words, a view."""
        return self._words[: self._n]

    def to_packed(self, values, what: str) -> np.ndarray:
        """Codes (N, bits) of 0/1 or (N, bits / 8) packed uint8, as packed bytes.

        Raises:
            ValueError: naming ``what`` (e.g. "codes", "queries") and the problem.
        """
        arr = np.asarray(values)
        if arr.ndim != 2:
            raise ValueError(f"{what} must be 2-D (N, code), got shape {arr.shape}")
        if arr.shape[1] == self.bits:
            try:
                return codes.pack_bits(arr)
            except ValueError as err:
                raise ValueError(f"{what} are not 0/1 bits: {err}") from err
        if arr.shape[1] == self.n_bytes:
            if arr.dtype != np.uint8:
                raise ValueError(
                    f"{what} with {self.n_bytes} values must be packed uint8 bytes, got {arr.dtype}"
                )
            return arr
        raise ValueError(
            f"{what} have {arr.shape[1]} values per code; this index holds {self.bits}-bit "
            f"codes: give {self.bits} bits (0/1) or {self.n_bytes} packed uint8 bytes"
        )

    def add(self, codes_, ids, metadata=None) -> None:
        """Adds N codes with N new unique ids; nothing is added if anything is invalid."""
        packed = self.to_packed(codes_, "codes")
        ids = [check_id(i) for i in ids]
        if len(ids) != len(packed):
            raise ValueError(f"got {len(packed)} codes but {len(ids)} ids")
        # One shared empty dict when no metadata is given: it is never mutated.
        metadata = [{}] * len(ids) if metadata is None else [check_metadata(m) for m in metadata]
        if len(metadata) != len(ids):
            raise ValueError(f"got {len(ids)} ids but {len(metadata)} metadata entries")
        seen = set(self.positions)
        for i in ids:
            if i in seen:
                raise ValueError(f"duplicate id {i!r}: ids must be unique")
            seen.add(i)
        self.append(packed, ids, metadata)

    def append(self, packed: np.ndarray, ids: list, metadata: list) -> None:
        """Appends items already checked (packed uint8 codes, unique new ids)."""
        n, m = self._n, len(packed)
        if n + m > len(self._packed):
            grown = np.zeros((max(2 * len(self._packed), n + m, 1024), self.n_bytes), np.uint8)
            grown[:n] = self._packed[:n]
            self._packed = grown
            self._words = codes.packed_to_words(grown)
        self._packed[n : n + m] = packed
        if self._words_copied:
            self._words[n : n + m] = codes.packed_to_words(packed)
        self.positions.update((i, n + j) for j, i in enumerate(ids))
        self.ids.extend(ids)
        self.metadata.extend(metadata)
        self._n = n + m

    def remove(self, ids) -> np.ndarray:
        """Removes the items with these ids; the others keep their order.

        Returns:
            The sorted positions (before the removal) of the items removed.

        Raises:
            KeyError: an id is not in the table (nothing is removed).
        """
        ids = [check_id(i) for i in ids]
        missing = [i for i in ids if i not in self.positions]
        if missing:
            raise KeyError(f"id {missing[0]!r} is not in the index ({len(missing)} unknown)")
        drop = np.zeros(self._n, bool)
        drop[[self.positions[i] for i in ids]] = True
        if not drop.any():
            return np.flatnonzero(drop)
        keep = np.flatnonzero(~drop)
        packed = self._packed[keep]
        kept_ids = [self.ids[p] for p in keep.tolist()]
        kept_meta = [self.metadata[p] for p in keep.tolist()]
        self._packed = np.empty((0, self.n_bytes), np.uint8)
        self._words = codes.packed_to_words(self._packed)
        self._n, self.ids, self.positions, self.metadata = 0, [], {}, []
        self.append(packed, kept_ids, kept_meta)
        return np.flatnonzero(drop)


def check_id(value) -> str | int:
    """An item id: a str or an int (numpy integers become int)."""
    if isinstance(value, np.integer):
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise ValueError(f"ids must be str or int, got {value!r} ({type(value).__name__})")
    return value


def check_metadata(value) -> dict[str, Any]:
    """A copy of an item's metadata: a JSON-serialisable dict with str keys (None: {})."""
    if value is None:
        return {}
    if not isinstance(value, dict) or not all(isinstance(key, str) for key in value):
        raise ValueError(f"metadata must be a dict with str keys, got {value!r}")
    try:
        json.dumps(value)
    except (TypeError, ValueError) as err:
        raise ValueError(f"metadata must be JSON-serialisable: {err}") from err
    return dict(value)
