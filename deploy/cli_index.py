"""``python -m deploy index build`` and ``index add``: encode images into an index.

See :mod:`deploy.cli` for the command line; the parser and the error contract live there.
A file that cannot be read is never dropped quietly: without ``--skip-bad`` the command
lists every such file with its reason on stderr and fails (exit 1) without writing;
with it, the others are indexed and the summary lists the skipped ones. Multi-frame
DICOM files are encoded by the frame policy of :mod:`deploy.cine` (``--frames``).
"""

from __future__ import annotations

import json
import os
import sys

from deploy import atomic, cine, dicom, dicom_header, preprocess, sources, ultrasound
from deploy.cli_shared import load_index, make_parent, open_encoder, waiting
from deploy.encoder import Encoder, EncodeResult
from deploy.errors import printable
from deploy.index import SIDECAR_FILE, HammingIndex, writer_lock


def _refuse_same_files(
    items: list[sources.Item], indexed: list[tuple[str, str, int | None]] = ()
) -> None:
    """Refuses two items that are one image (same file and frame, via link or hard link).

    One image under two ids would be two entries at distance 0 of each other: every
    search would return it twice and push a real neighbour out of the top k. Files are
    compared by device and inode, so a symbolic link or a hard link counts as the same
    file; frames of one cine loop are different images. ``indexed`` holds (id, path,
    frame) of the items already in the index.
    """
    seen: dict[tuple[int, int, int | None], str] = {}
    mine = ((item.id, str(item.path), item.frame) for item in items)
    for item_id, path, frame in [*indexed, *mine]:
        try:
            st = os.stat(path)
        except (OSError, ValueError):
            continue  # a missing file is reported by the encoder
        key = (st.st_dev, st.st_ino, frame)
        if key in seen:
            where = "" if frame is None else f", frame {frame}"
            raise ValueError(
                f"ids {printable(seen[key])!r} and {printable(item_id)!r} are the same file "
                f"({printable(path)}{where}): an image is indexed once; remove one of them"
            )
        seen[key] = item_id


def cmd_build(args) -> int:
    _refuse_existing_index(args)  # at once, before the encoding; again under the lock
    encoder = open_encoder(args)
    index = HammingIndex(
        bits=encoder.bits,
        fingerprint=encoder.codes_id,  # model + float/int8: what the codes are
        n_trees=args.n_trees,
        search_k=args.search_k,
        backend=args.backend,
    )  # before encoding: bad settings fail at once
    items, unreadable = cine.expand(_items(args), args.frames)
    _refuse_same_files(items)
    make_parent("--out", args.out)
    result = _encode(encoder, items, args, unreadable)
    _add_to(index, items, result, args.us_region)
    index.build()
    with writer_lock(args.out, args.lock_timeout, waiting(args.out)):
        _refuse_existing_index(args)  # another build may have finished meanwhile
        index.save(args.out)
    kind = "annoy" if index.uses_annoy() else "exact"
    if args.json:
        print(json.dumps({
            "index": str(args.out), "indexed": len(result), "items": len(index),
            "bits": encoder.bits, "codes": encoder.codes_id, "search": kind,
            **_policy(args), "skipped": _skipped(result),
        }, indent=2))  # fmt: skip
        return 0
    print(
        f"indexed {len(result)} images ({encoder.bits} bits, encoder {encoder.codes_id}, "
        f"{kind}) -> {printable(args.out)}{_skipped_note(result)}"
    )
    return 0


def _policy(args) -> dict:
    return {"frames": args.frames, "us_region": args.us_region}


def _skipped(result: EncodeResult) -> list[dict[str, str]]:
    return [{"path": path, "error": message} for path, message in result.failures]


def _skipped_note(result: EncodeResult) -> str:
    n = len(result.failures)
    return f"; skipped {n} unreadable file(s) (--skip-bad), listed above" if n else ""


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
    _refuse_same_files(items, indexed)
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
            "items": len(index), "n_delta": index.n_delta, **_policy(args),
            "skipped": _skipped(result),
        }, indent=2))  # fmt: skip
        return 0
    in_delta = f", {index.n_delta} in the Annoy delta" if index.uses_annoy() else ""
    also = f" (replacing {replaced})" if replaced else ""
    print(
        f"added {len(result)} image(s){also} to {args.index}: {len(index)} items{in_delta}"
        f"{_skipped_note(result)}"
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
    if not len(result):  # one error line naming the first bad file; --debug lists them all
        if args.debug:
            _print_failures(result.failures)
        more = len(result.failures) - 1
        tail = f" (and {more} more; see --debug)" if more > 0 else ""
        first = f": {result.failures[0][1]}" if result.failures else ""
        raise ValueError(f"none of the {total} images could be read{first}{tail}")
    if result.failures:
        _print_failures(result.failures, args.skip_bad)
        if not args.skip_bad:
            raise ValueError(
                f"{len(result.failures)} of {total} images could not be read (listed above), "
                f"e.g. {result.failures[0][1]}; nothing was written (--skip-bad indexes the "
                "others)"
            )
    return result


def _print_failures(failures: list[tuple[str, str]], skipped: bool = True) -> None:
    what = "skipped" if skipped else "cannot read"
    print(f"{what} {len(failures)} bad file(s):", file=sys.stderr)
    for _path, message in failures:  # each message names its file
        print(f"  {printable(message)}", file=sys.stderr)


def _add_to(
    index: HammingIndex, items: list[sources.Item], result: EncodeResult, us_region: bool
) -> None:
    by_id = {item.id: item for item in items}
    entries = [_with_dicom_ids(by_id[i], us_region) for i in result.ids]
    index.batch_add(result.packed, result.ids, entries)


def _with_dicom_ids(item: sources.Item, us_region: bool) -> dict:
    """A DICOM source's metadata gains its identifiers (``dicom``: study, series and SOP
    instance UIDs, frame), so a hit leads back to the instance in the PACS, and with
    ``--us-region`` the region encoded (``us_region``: [x0, y0, x1, y1] inclusive, or
    None for a file declaring none), so a search can encode the hit's file again alike."""
    if not dicom.is_dicom(item.path):
        return item.metadata
    try:
        found = {**item.metadata, "dicom": dicom_header.identifiers(item.path, item.frame)}
        if us_region:
            ds = dicom_header.read_header(item.path)
            box = ultrasound.choose_region(ds, int(ds.Rows), int(ds.Columns), ValueError)
            found["us_region"] = None if box is None else list(box)
        return found
    except (preprocess.ImageError, ValueError):
        return item.metadata  # it encoded, so its header was readable: not expected
