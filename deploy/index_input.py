"""What ``index build`` (:mod:`deploy.cli_build`) and ``index add``
(:mod:`deploy.cli_index`) share about the images they encode: one image under two ids is refused, unreadable
files are listed, a DICOM entry keeps its identifiers, frame and ultrasound region, and
an existing index is not replaced without ``--overwrite``.

A file that cannot be read is never dropped quietly: without ``--skip-bad`` both
commands list every such file with its reason on stderr and fail (exit 1) without
writing an index; with it, the others are indexed and the summary lists the skipped ones.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable

from deploy import atomic, dicom, dicom_header, preprocess, sources, ultrasound
from deploy.cli_shared import waiting
from deploy.errors import printable
from deploy.index import SIDECAR_FILE


def refuse_same_files(
    items: Iterable[sources.Item], indexed: Iterable[tuple[str, str, int | None]] = ()
) -> None:
    """Refuses two items that are one image (same file and frame, via link or hard link).

    One image under two ids would be two entries at distance 0 of each other: every
    search would return it twice and push a real neighbour out of the top k. Files are
    compared by device and inode, so a symbolic link or a hard link counts as the same
    file; frames of one cine loop are different images. ``indexed`` holds (id, path,
    frame) of the items already in the index. Holds one key per item, never images, so
    ``items`` may be a stream over an archive.
    """
    seen: dict[tuple[int, int, int | None], str] = {}
    mine = ((item.id, str(item.path), item.frame) for item in items)
    for source in (indexed, mine):
        for item_id, path, frame in source:
            try:
                st = os.stat(path)
            except (OSError, ValueError):
                continue  # a missing file is reported by the encoder
            key = (st.st_dev, st.st_ino, frame)
            if key in seen:
                where = "" if frame is None else f", frame {frame}"
                raise ValueError(
                    f"ids {printable(seen[key])!r} and {printable(item_id)!r} are the same "
                    f"file ({printable(path)}{where}): an image is indexed once; remove one "
                    "of them"
                )
            seen[key] = item_id


def refuse_existing_index(args) -> None:
    """``--out`` must be a folder without an index, unless ``--overwrite``."""
    # A crash mid-swap leaves the old index under its backup name: put it back first,
    # or a build without --overwrite would see no index and silently replace it.
    if args.out.exists() and not args.out.is_dir():
        raise ValueError(f"--out {args.out} exists and is not a folder")
    atomic.repair_directory(args.out, args.lock_timeout, waiting(args.out))
    if (args.out / SIDECAR_FILE).exists() and not args.overwrite:
        raise ValueError(f"{args.out} already holds an index; add --overwrite to replace it")


def policy_json(args) -> dict:
    """The frame policy and region flag, as the ``--json`` summaries report them."""
    return {"frames": args.frames, "us_region": args.us_region}


def skipped_json(failures: list[tuple[str, str]]) -> list[dict[str, str]]:
    return [{"path": path, "error": message} for path, message in failures]


def skipped_note(failures: list[tuple[str, str]]) -> str:
    n = len(failures)
    return f"; skipped {n} unreadable file(s) (--skip-bad), listed above" if n else ""


def print_failures(failures: list[tuple[str, str]], skipped: bool = True) -> None:
    what = "skipped" if skipped else "cannot read"
    print(f"{what} {len(failures)} bad file(s):", file=sys.stderr)
    for _path, message in failures:  # each message names its file
        print(f"  {printable(message)}", file=sys.stderr)


def check_failures(
    n_encoded: int, failures: list[tuple[str, str]], total: int, args, written: str
) -> None:
    """Raises when nothing encoded, or, without ``--skip-bad``, when anything failed
    (every bad file is listed on stderr first); with it, lists the skipped files.

    ``written`` ends the error message: what became of the work done (e.g. "nothing
    was written").
    """
    if not n_encoded:  # one error line naming the first bad file; --debug lists them all
        if args.debug:
            print_failures(failures)
        more = len(failures) - 1
        tail = f" (and {more} more; see --debug)" if more > 0 else ""
        first = f": {failures[0][1]}" if failures else ""
        raise ValueError(f"none of the {total} images could be read{first}{tail}")
    if failures:
        print_failures(failures, args.skip_bad)
        if not args.skip_bad:
            raise ValueError(
                f"{len(failures)} of {total} images could not be read (listed above), "
                f"e.g. {failures[0][1]}; {written} (--skip-bad indexes the others)"
            )


def entry_metadata(item: sources.Item, us_region: bool) -> dict:
    """What the index stores with ``item``: its metadata and, for a DICOM source, its
    identifiers (``dicom``: study, series and SOP instance UIDs, frame), so a hit leads
    back to the instance in the PACS, and with ``--us-region`` the region encoded
    (``us_region``: [x0, y0, x1, y1] inclusive, or None for a file declaring none), so a
    search can encode the hit's file again alike."""
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
