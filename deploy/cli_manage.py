"""``python -m deploy index remove``, ``index info`` and ``index verify``.

See :mod:`deploy.cli` for the command line; the parser and the error contract live there.
None of them opens an encoder: they work on the index folder alone.
"""

from __future__ import annotations

import json

from deploy.cli_shared import waiting
from deploy.errors import printable
from deploy.index import HammingIndex, writer_lock
from deploy.index_info import index_info, verify_index


def cmd_remove(args) -> int:
    # Read-modify-write under the writer lock, as index add: no concurrent update is lost.
    with writer_lock(args.index, args.lock_timeout, waiting(args.index)):
        index = HammingIndex.load(args.index)
        ids = [stored_id(index, given) for given in args.id]
        unknown = [given for given, stored in zip(args.id, ids, strict=True) if stored is None]
        if unknown:
            raise ValueError(
                f"{args.index}: {len(unknown)} id(s) not in the index, e.g. "
                f"{printable(unknown[0])!r}; nothing was removed"
            )
        had_forest = index.n_delta < len(index)
        removed = index.remove(dict.fromkeys(ids))  # an id given twice is removed once
        if args.compact and len(index):
            index.compact()
        index.save(args.index)
    dropped = had_forest and index.n_delta == len(index) and not args.compact
    result = {
        "index": str(args.index),
        "removed": removed,
        "items": len(index),
        "n_delta": index.n_delta,
        "forest_dropped": dropped,
    }
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    print(f"removed {removed} item(s) from {printable(args.index)}: {len(index)} items")
    if dropped:
        print("the Annoy forest held a removed item and was dropped: searches are exact until "
              "--compact rebuilds it")  # fmt: skip
    return 0


def stored_id(index: HammingIndex, given: str):
    """The id as the index stores it: ids may be ints (Python API), the command line
    gives text."""
    if given in index:
        return given
    if given.lstrip("-").isdigit() and int(given) in index:
        return int(given)
    return None


def cmd_info(args) -> int:
    info = index_info(args.index)
    if args.json:
        print(json.dumps(info, indent=2))
        return 0
    forest = (
        f"annoy ({info['n_annoy']} in the forest, {info['n_delta']} in the delta)"
        if info["search"] == "annoy"
        else "exact"
    )
    if info["stale_forest"]:
        forest += " (the Annoy forest was dropped; --compact rebuilds it)"
    kind = info["code_kind"] or "unlabelled"
    lines = [
        ("index", printable(info["index"])),
        ("items", str(info["items"])),
        ("bits", str(info["bits"])),
        ("backend", f"{info['backend']}; searches: {forest}"),
        ("encoder", f"{info['fingerprint']} ({kind} codes)"),
        ("created", info["created"] or "-"),
        ("modified", info["modified"] or "-"),
        ("size", f"{info['bytes']} bytes (" + ", ".join(
            f"{name} {size}" for name, size in info["files"].items()) + ")"),
    ]  # fmt: skip
    width = max(len(key) for key, _ in lines)
    print("\n".join(f"{key.ljust(width)}  {value}" for key, value in lines))
    return 0


def cmd_verify(args) -> int:
    result = verify_index(args.index)  # raises naming the file: one error line, exit 1
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    print(
        f"ok: {printable(result['index'])}: {result['items']} items, every stored sha256 "
        "and count checked"
    )
    return 0
