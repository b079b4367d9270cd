"""``python -m deploy index add``: encode images into an index (and the helpers that
``index build``, :mod:`deploy.cli_build`, shares with it).

See :mod:`deploy.cli` for the command line; the parser and the error contract live there.
"""

from __future__ import annotations

import json
import os
import sys

from deploy import atomic, dicom, preprocess, sources
from deploy.cli_shared import load_index, open_encoder, waiting
from deploy.encoder import Encoder, EncodeResult
from deploy.errors import printable
from deploy.index import SIDECAR_FILE, HammingIndex, writer_lock


def _refuse_same_files(items: list[sources.Item], indexed: list[tuple[str, str]] = ()) -> None:
    """Refuses two items that are one file (same path, link or hard link).

    One image under two ids would be two entries at distance 0 of each other: every
    search would return it twice and push a real neighbour out of the top k. Files are
    compared by device and inode, so a symbolic link or a hard link counts as the same
    file; ``indexed`` holds (id, path) of the items already in the index.
    """
    seen: dict[tuple[int, int], str] = {}
    for item_id, path in [*indexed, *((item.id, str(item.path)) for item in items)]:
        try:
            st = os.stat(path)
        except (OSError, ValueError):
            continue  # a missing file is reported by the encoder
        key = (st.st_dev, st.st_ino)
        if key in seen:
            raise ValueError(
                f"ids {printable(seen[key])!r} and {printable(item_id)!r} are the same file "
                f"({printable(path)}): an image is indexed once; remove one of them"
            )
        seen[key] = item_id


def _skipped(result: EncodeResult) -> list[dict[str, str]]:
    return [{"path": path, "error": message} for path, message in result.failures]


def _refuse_existing_index(args) -> None:
    # A crash mid-swap leaves the old index under its backup name: put it back first,
    # or a build without --overwrite would see no index and silently replace it.
    if args.out.exists() and not args.out.is_dir():
        raise ValueError(f"--out {args.out} exists and is not a folder")
    atomic.repair_directory(args.out, args.lock_timeout, waiting(args.out))
    if (args.out / SIDECAR_FILE).exists() and not args.overwrite:
        raise ValueError(f"{args.out} already holds an index; add --overwrite to replace it")


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
    items = sources.file_items(args.files) if args.files else _items(args)
    known = {item.id for item in items if item.id in index}
    if known and not args.replace:
        raise ValueError(
            f"{len(known)} id(s) already in {args.index}, e.g. {sorted(known)[0]!r}; nothing "
            "was added (--replace gives them their new code)"
        )
    # A replaced item's old file is allowed to be its new file.
    indexed = [(str(i), p) for i, p in index.indexed_paths() if i not in known]
    _refuse_same_files(items, indexed)
    result = _encode(encoder, items, args)
    # Only ids that encoded are replaced: a bad new file keeps the old entry.
    replaced = index.remove([i for i in result.ids if i in known])
    _add_to(index, items, result)
    if args.compact:
        index.compact()
    index.save(args.index)
    if args.json:
        print(json.dumps({
            "index": str(args.index), "added": len(result) - replaced, "replaced": replaced,
            "items": len(index), "n_delta": index.n_delta, "skipped": _skipped(result),
        }, indent=2))  # fmt: skip
        return 0
    in_delta = f", {index.n_delta} in the Annoy delta" if index.uses_annoy() else ""
    also = f" (replacing {replaced})" if replaced else ""
    print(f"added {len(result)} image(s){also} to {args.index}: {len(index)} items{in_delta}")
    return 0


def _items(args) -> list[sources.Item]:
    if args.data is not None:
        return sources.dataset_items(args.data, args.split, args.allow_outside_paths)
    return sources.folder_items(args.images, args.allow_outside_paths)


def _encode(encoder: Encoder, items: list[sources.Item], args) -> EncodeResult:
    progress = sys.stderr.isatty() if args.progress is None else args.progress
    result = encoder.encode_files(
        [item.path for item in items],
        batch_size=args.batch_size,
        progress=progress,
        ids=[item.id for item in items],
    )
    if not len(result):  # one error line naming the first bad file; --debug lists them all
        if args.debug:
            _print_failures(result.failures)
        more = len(result.failures) - 1
        tail = f" (and {more} more; see --debug)" if more > 0 else ""
        first = f": {result.failures[0][1]}" if result.failures else ""
        raise ValueError(f"none of the {len(items)} images could be read{first}{tail}")
    if result.failures:
        _print_failures(result.failures)
    return result


def _print_failures(failures: list[tuple[str, str]]) -> None:
    print(f"skipped {len(failures)} bad files:", file=sys.stderr)
    for _path, message in failures:  # each message names its file
        print(f"  {printable(message)}", file=sys.stderr)


def _add_to(index: HammingIndex, items: list[sources.Item], result: EncodeResult) -> None:
    metadata = {item.id: item.metadata for item in items}
    entries = [
        _with_dicom_ids(metadata[i], path) for i, path in zip(result.ids, result.paths, strict=True)
    ]
    index.batch_add(result.packed, result.ids, entries)


def _with_dicom_ids(metadata: dict, path) -> dict:
    """A DICOM source's metadata gains its identifiers (``dicom``: study, series and SOP
    instance UIDs, frame), so a hit leads back to the instance in the PACS."""
    if path is None or not dicom.is_dicom(path):
        return metadata
    try:
        return {**metadata, "dicom": dicom.identifiers(path)}
    except preprocess.ImageError:
        return metadata  # it encoded, so its header was readable: not expected
