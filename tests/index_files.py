"""Reading and editing an index folder's items the way a person with a text editor
would, for tests that look at or damage them (format 2: items.jsonl + items_offsets.npy;
format 1: the sidecar's ``ids`` and ``metadata``)."""

from __future__ import annotations

import json
from pathlib import Path

from deploy.index_store import SIDECAR_FILE
from deploy.items_file import ITEMS_FILE, write_items


def sidecar(folder: Path) -> dict:
    return json.loads((Path(folder) / SIDECAR_FILE).read_text())


def read_items(folder: Path) -> tuple[list, list]:
    """(ids, metadata) as the files hold them, parsed here line by line."""
    meta = sidecar(folder)
    if meta["format_version"] == 1:
        return meta["ids"], meta["metadata"]
    lines = (Path(folder) / ITEMS_FILE).read_text().splitlines()
    entries = [json.loads(line) for line in lines]
    return [e["id"] for e in entries], [e["meta"] for e in entries]


def read_ids(folder: Path) -> list:
    return read_items(folder)[0]


def edit_items(folder: Path, edit) -> None:
    """Calls ``edit(ids, metadata)`` on the stored lists, then writes them back with
    matching offsets, sizes and hashes (an edit a reader's checks must judge on its own,
    not by a hash mismatch)."""
    folder = Path(folder)
    ids, metadata = read_items(folder)
    edit(ids, metadata)
    meta = sidecar(folder)
    meta.update(write_items(folder, ids, metadata))
    (folder / SIDECAR_FILE).write_text(json.dumps(meta))


def to_format_1(folder: Path) -> None:
    """Rewrites a folder as the format-1 code wrote it: ids and metadata in the sidecar,
    no items files."""
    folder = Path(folder)
    ids, metadata = read_items(folder)
    meta = sidecar(folder)
    for key in ("items_bytes", "items_sha256", "offsets_bytes", "offsets_sha256"):
        meta.pop(key, None)
    meta.update(format_version=1, ids=ids, metadata=metadata)
    (folder / SIDECAR_FILE).write_text(json.dumps(meta, indent=1))
    for name in (ITEMS_FILE, "items_offsets.npy"):
        (folder / name).unlink(missing_ok=True)
