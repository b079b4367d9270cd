"""``python -m deploy index add``: encode images into an existing index.

See :mod:`deploy.cli` for the command line; the parser and the error contract live there.
``index build`` is :mod:`deploy.cli_build`; what the two share (unreadable files and
``--skip-bad``, one image under two ids, DICOM metadata) is :mod:`deploy.index_input`.
Multi-frame DICOM files are encoded by the frame policy of :mod:`deploy.cine`
(``--frames``).
"""

from __future__ import annotations

import json
import sys

from deploy import cine, sources
from deploy.cli_shared import load_index, open_encoder, waiting
from deploy.encoder import Encoder, EncodeResult
from deploy.index import HammingIndex, writer_lock
from deploy.index_input import (
    check_failures,
    entry_metadata,
    policy_json,
    refuse_same_files,
    skipped_json,
    skipped_note,
)


def cmd_add(args) -> int:
    given = [args.data is not None, args.images is not None, bool(args.files)]
    if sum(given) != 1:
        raise ValueError("index add takes exactly one of --data DIR, --images DIR or IMAGE files")
    encoder = open_encoder(args)
    # Read-modify-write under the lock: a concurrent add saved before this one reads the
    # index, so its items are kept (without the lock, the last save would win).
    with writer_lock(args.index, args.lock_timeout, waiting(args.index)):
        return _add_locked(args, encoder)


def _add_locked(args, encoder: Encoder) -> int:
    index = load_index(args.index, encoder, args.encoder)
    listed = sources.file_items(args.files) if args.files else _items(args)
    items, unreadable = cine.expand(listed, args.frames)
    known = {item.id for item in items if item.id in index}
    if known and not args.replace:
        raise ValueError(
            f"{len(known)} id(s) already in {args.index}, e.g. {sorted(known)[0]!r}; nothing "
            "was added (--replace gives them their new code)"
        )
    # A replaced item's old file is allowed to be its new file.
    indexed = [
        (str(i), m["path"], (m.get("dicom") or {}).get("frame"))
        for i, m in index.entries()
        if i not in known and isinstance(m.get("path"), str) and m["path"]
    ]
    refuse_same_files(items, indexed)
    result = _encode(encoder, items, args, unreadable)
    # Only ids that encoded are replaced: a bad new file keeps the old entry.
    replaced = index.remove([i for i in result.ids if i in known])
    _add_to(index, items, result, args.us_region)
    if args.compact:
        index.compact()
    index.save(args.index)
    if args.json:
        print(json.dumps({
            "index": str(args.index), "added": len(result) - replaced, "replaced": replaced,
            "items": len(index), "n_delta": index.n_delta, **policy_json(args),
            "skipped": skipped_json(result.failures),
        }, indent=2))  # fmt: skip
        return 0
    in_delta = f", {index.n_delta} in the Annoy delta" if index.uses_annoy() else ""
    also = f" (replacing {replaced})" if replaced else ""
    print(
        f"added {len(result)} image(s){also} to {args.index}: {len(index)} items{in_delta}"
        f"{skipped_note(result.failures)}"
    )
    return 0


def _items(args) -> list[sources.Item]:
    if args.data is not None:
        return sources.dataset_items(args.data, args.split, args.allow_outside_paths)
    return sources.folder_items(args.images, args.allow_outside_paths)


def _encode(
    encoder: Encoder, items: list[sources.Item], args, unreadable: list[tuple[str, str]]
) -> EncodeResult:
    """Encodes ``items``; ``unreadable`` are files :func:`cine.expand` could not use.

    Raises:
        ValueError: nothing could be read; or, without ``--skip-bad``, anything could not
            (every such file is listed on stderr first, and nothing is written).
    """
    progress = sys.stderr.isatty() if args.progress is None else args.progress
    result = encoder.encode_files(
        [item.path for item in items],
        batch_size=args.batch_size,
        progress=progress,
        ids=[item.id for item in items],
        frames=[item.frame for item in items],
        us_region=args.us_region,
    )
    result.failures = [*unreadable, *result.failures]
    total = len(items) + len(unreadable)
    check_failures(len(result), result.failures, total, args, "nothing was written")
    return result


def _add_to(
    index: HammingIndex, items: list[sources.Item], result: EncodeResult, us_region: bool
) -> None:
    by_id = {item.id: item for item in items}
    entries = [entry_metadata(by_id[i], us_region) for i in result.ids]
    index.batch_add(result.packed, result.ids, entries)
