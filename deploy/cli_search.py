"""``python -m deploy search``: the k nearest indexed images to a query, and the report.

The query's code stays packed, as the encoder's ``code`` output gives it, from the model
to the scan; the report unpacks the codes it draws. See :mod:`deploy.cli`.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

from deploy import codes, dicom, dicom_header, report
from deploy.cli_shared import load_index, make_parent, open_encoder
from deploy.encoder import Encoder
from deploy.errors import printable
from deploy.index import HammingIndex, Hit
from deploy.mapped_index import MultiIndex


def cmd_search(args) -> int:
    if args.k < 1:
        raise ValueError(f"-k must be >= 1, got {args.k}")
    encoder = open_encoder(args)
    index = _open_indexes(args.index, encoder, args.encoder)
    sheet = args.sheet
    if args.report is not None and sheet is None:
        sheet = args.report.with_suffix(".png")
    if args.report is not None and sheet.resolve() == args.report.resolve():
        raise ValueError(
            f"--report {args.report} and the sheet would be the same file; use --sheet"
        )
    _refuse_overwrites(args, sheet, index)  # before anything is encoded or written
    for flag, path in (("--report", args.report), ("--sheet", sheet)):
        if path is not None:
            make_parent(flag, path)
    query = encoder.code_file(
        args.image, frame=args.frame, us_region=args.us_region
    )  # packed, as the model gives it
    hits = index.lookup(query, k=args.k)
    _warn_region_mismatch(args, hits)
    if args.json:
        results = [_hit_json(h) for h in hits]
        if isinstance(index, MultiIndex):  # which site's folder each hit comes from
            for row, hit in zip(results, hits, strict=True):
                row["index"] = str(index.parts[index.locate(hit.position)[0]].path)
        document = {"query": str(args.image), "k": args.k, "results": results}
        if dicom.is_dicom(args.image):
            document["query_dicom"] = dicom_header.identifiers(args.image, args.frame)
        print(json.dumps(document, indent=2))
    else:
        print(_table(hits))
    if args.report is not None or sheet is not None:
        written = _write_report(args, encoder, index, query, hits, sheet)
        # With --json, stdout stays one JSON document.
        print(
            f"wrote {' and '.join(map(printable, written))}",
            file=sys.stderr if args.json else sys.stdout,
        )
    return 0


def _warn_region_mismatch(args, hits: list[Hit]) -> None:
    """A stderr warning when the query and the DICOM hits were not encoded alike: codes
    of a whole ultrasound frame and of its region are at unrelated distances."""
    dicom_hits = [h for h in hits if "dicom" in h.metadata]
    with_region = sum("us_region" in h.metadata for h in dicom_hits)
    if args.us_region and dicom_hits and with_region == 0:
        why = "were indexed without --us-region, the query is cropped to its region"
    elif not args.us_region and with_region and dicom.is_dicom(args.image):
        why = "were indexed with --us-region, the query is not (add --us-region)"
    else:
        return
    print(f"warning: the DICOM hits {why}; distances compare unlike images", file=sys.stderr)


def _open_indexes(
    folders: list[Path], encoder: Encoder, encoder_path: Path
) -> HammingIndex | MultiIndex:
    """One folder: loaded as it is (its Annoy forest too); several: memory-mapped and
    searched exactly as one index holding their items in the order given."""
    if len(folders) == 1:
        return load_index(folders[0], encoder, encoder_path)
    return MultiIndex.open(folders, encoder.codes_id, encoder.bits)


def _refuse_overwrites(args, sheet: Path | None, index: HammingIndex) -> None:
    """Before anything is encoded or written: no output over an input or an existing file."""
    inputs = [(args.image, "the query image")]
    inputs += [(Path(p), "an indexed image") for _, p in index.indexed_paths()]
    outputs = [("--report", args.report), ("--sheet", sheet)]
    report.refuse_overwrites(outputs, inputs, args.overwrite)


def _write_report(
    args, encoder: Encoder, index: HammingIndex, query: np.ndarray, hits: list[Hit], sheet
) -> list[Path]:
    """The report of one search; hit codes come from the index, images from their paths.

    The codes stay packed up to here; the report draws bits, so they are unpacked once.
    """
    grid = report.HashGrid.from_contract(encoder.contract)
    note = "" if grid else (
        f"{encoder.contract.path} does not record the bit layout (hash_grid): its hash "
        "head's bits have no image region, or it was exported before the layout was "
        "recorded (re-export the model to get the map)"
    )  # fmt: skip
    hit_codes = index.packed_codes([h.position for h in hits])
    hit_bits = codes.unpack_bits(hit_codes, encoder.bits)
    entries = [
        report.Entry(
            id=str(h.id),
            path=Path(h.metadata["path"]) if h.metadata.get("path") else None,
            bits=bits,
            rank=h.rank,
            distance=h.distance,
            label=str(h.metadata.get("label", "")),
            withheld=_not_the_indexed_image(encoder, h, code),
            frame=(h.metadata.get("dicom") or {}).get("frame"),
            us_region="us_region" in h.metadata,
        )
        for h, bits, code in zip(hits, hit_bits, hit_codes, strict=True)
    ]
    query_bits = codes.unpack_bits(query[None], encoder.bits)[0]
    query_entry = report.Entry(
        args.image.name, args.image, query_bits, frame=args.frame, us_region=args.us_region
    )
    folders = ", ".join(map(str, args.index))
    source = f"encoder {encoder.model_path} ({encoder.codes_id}), index {folders}"
    content = report.Report(query_entry, entries, grid, grid_note=note, source=source)
    return report.write_report(content, args.report, sheet, overwrite=args.overwrite)


def _not_the_indexed_image(encoder: Encoder, hit: Hit, code: np.ndarray) -> str:
    """Why a hit's file must not go into the report ('' when it may).

    The report is for sharing and inlines the images it shows, and ``path`` is only what
    index.json says: an edited or foreign index could name any file on this machine. A
    file is shown only if it encodes to the hit's indexed code, i.e. it is (as far as the
    codes can tell) the image that was indexed; without knowing a private file's code no
    index can name it into a report.
    """
    path = hit.metadata.get("path")
    if not path:
        return ""  # load_tile says there is no file
    try:
        frame = (hit.metadata.get("dicom") or {}).get("frame")
        actual = encoder.code_file(path, frame, us_region="us_region" in hit.metadata)
    except (ValueError, OSError):
        return ""  # missing or unreadable: load_tile's own note says so, nothing is read
    if not np.array_equal(actual, code):
        return (
            f"{path} does not encode to the indexed code of {hit.id!r} (changed since it was "
            "indexed, or not the indexed image); not shown"
        )
    return ""


def _hit_json(hit: Hit) -> dict:
    row = {
        "rank": hit.rank,
        "id": hit.id,
        "distance": hit.distance,
        "label": hit.metadata.get("label", ""),
        "path": hit.metadata.get("path", ""),
    }
    if "dicom" in hit.metadata:
        row["dicom"] = hit.metadata["dicom"]
    return row


def _table(hits: list[Hit]) -> str:
    header = ("rank", "id", "distance", "label", "path")
    # Ids, labels and paths come from files: printed escaped, never as terminal codes.
    rows = [header] + [
        tuple(printable(v) for v in list(_hit_json(h).values())[: len(header)]) for h in hits
    ]
    widths = [max(len(row[c]) for row in rows) for c in range(len(header))]
    return "\n".join(
        "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
        for row in rows
    )
