"""What an index folder holds (``index info``) and a full check of it (``index verify``).

Both read only; neither takes the writer lock (a save replaces the folder as a whole, so
a reader sees the old or the new index, never a mix). Only numpy, annoy and the standard
library are imported here.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from deploy import codes
from deploy.index_store import (
    ANNOY_FILE,
    CODES_FILE,
    ITEMS_FILE,
    OFFSETS_FILE,
    SIDECAR_FILE,
    IndexFormatError,
    read_index,
    read_sidecar,
)


def index_info(folder: str | os.PathLike) -> dict[str, Any]:
    """Facts about an index from its sidecar and file sizes; the hashes are not checked
    (that is :func:`verify_index`), so this is fast at any size.

    Returns:
        ``index`` (the folder read), ``items``, ``bits``, ``backend`` (as configured),
        ``search`` (``"annoy"`` when a forest is present, else ``"exact"``), ``n_annoy``,
        ``n_delta``, ``stale_forest`` (Annoy is configured but there is no forest, e.g.
        after ``index remove`` took an item out of it: searches are exact, and slower,
        until ``--compact`` rebuilds it),
        ``codes`` (the codes identity ``<fingerprint>+<kind>``), ``fingerprint``,
        ``code_kind`` (``float``, ``int8``, or ``""`` when not recorded), ``created``
        and ``modified`` (UTC ISO 8601, None when not recorded), ``format_version``,
        ``files`` (name -> bytes) and ``bytes`` (their sum).
    """
    path, meta = read_sidecar(folder)
    files = {
        name: (path / name).stat().st_size
        for name in (SIDECAR_FILE, CODES_FILE, ITEMS_FILE, OFFSETS_FILE, ANNOY_FILE)
        if (path / name).is_file()
    }
    fingerprint, _, kind = meta["fingerprint"].partition("+")
    annoy_wanted = meta["backend"] == "annoy" or (
        meta["backend"] == "auto"
        and isinstance(meta["annoy_min_items"], int)
        and meta["count"] >= meta["annoy_min_items"]
    )
    return {
        "index": str(path),
        "items": meta["count"],
        "bits": meta["bits"],
        "backend": meta["backend"],
        "search": "annoy" if meta["n_annoy"] else "exact",
        "n_annoy": meta["n_annoy"],
        "n_delta": meta["n_delta"],
        "stale_forest": annoy_wanted and meta["count"] > 0 and meta["n_annoy"] == 0,
        "codes": meta["fingerprint"],
        "fingerprint": fingerprint,
        "code_kind": kind,
        "created": _text_or_none(meta.get("created")),
        "modified": _text_or_none(meta.get("modified")),
        "format_version": meta["format_version"],
        "files": files,
        "bytes": sum(files.values()),
    }


def verify_index(folder: str | os.PathLike) -> dict[str, Any]:
    """Re-checks every stored hash and the consistency of an index folder.

    Beyond what loading checks (the sidecar's fields and counts; the size and sha256 of
    ``codes.npy``, ``index.ann`` and, format 2, ``items.jsonl`` and ``items_offsets.npy``;
    the offsets against the lines, every line, the ids' types and uniqueness; the
    forest's item and tree counts), the
    forest must hold exactly the codes of its items (a forest built from other codes
    would return wrong candidates), and there must be no ``index.ann`` when the sidecar
    records no forest.

    Returns:
        :func:`index_info`'s facts plus ``ok`` (True), ``codes_sha256``,
        ``annoy_sha256``, ``items_sha256`` and ``offsets_sha256`` (both "" for format 1).

    Raises:
        IndexFormatError: one line naming the file at fault.
        FileNotFoundError: no index there.
    """
    stored = read_index(folder)
    path = stored.path
    if stored.forest is None and (path / ANNOY_FILE).exists():
        raise IndexFormatError(
            f"Annoy file {path / ANNOY_FILE} is present, but {path / SIDECAR_FILE} records "
            "no forest: the files do not belong together"
        )
    if stored.forest is not None:
        bits = codes.unpack_bits(stored.packed[: stored.n_annoy])
        for position in range(stored.n_annoy):
            # Annoy stores each Hamming vector as 0/1 values (as floats in Python).
            stored_bits = np.asarray(stored.forest.get_item_vector(position), np.uint8)
            if not np.array_equal(stored_bits, bits[position]):
                raise IndexFormatError(
                    f"Annoy file {path / ANNOY_FILE} holds another code for item {position} "
                    f"than {path / CODES_FILE}: rebuild the forest (index add --compact)"
                )
        stored.forest.unload()
    _, meta = read_sidecar(path)
    info = index_info(path)
    return {
        "ok": True,
        **info,
        "codes_sha256": meta["codes_sha256"],
        "annoy_sha256": meta.get("annoy_sha256", ""),
        "items_sha256": meta.get("items_sha256", ""),
        "offsets_sha256": meta.get("offsets_sha256", ""),
    }


def _text_or_none(value) -> str | None:
    return value if isinstance(value, str) else None
