"""``python -m deploy search``: the k nearest indexed images to a query, and the report.

The query's code stays packed, as the encoder's ``code`` output gives it, from the model
to the scan; the report unpacks the codes it draws. See :mod:`deploy.cli`.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

from deploy import dicom, dicom_header, report, search_report
from deploy.cli_shared import make_parent, open_encoder, open_for_search
from deploy.encoder import Encoder
from deploy.errors import printable
from deploy.index import HammingIndex, Hit
from deploy.mapped_index import MappedIndex, MultiIndex


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
    warning = search_report.region_warning(args.image, args.us_region, hits)
    if warning:
        print(f"warning: {warning}", file=sys.stderr)
    if args.json:
        results = search_report.hits_json(index, hits)
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


def _open_indexes(
    folders: list[Path], encoder: Encoder, encoder_path: Path
) -> HammingIndex | MappedIndex | MultiIndex:
    """One folder: memory-mapped, or loaded when it holds an Annoy forest (searched with
    it); several: memory-mapped and searched exactly as one index holding their items in
    the order given."""
    if len(folders) == 1:
        return open_for_search(folders[0], encoder, encoder_path)
    return MultiIndex.open(folders, encoder.codes_id, encoder.bits)


def _refuse_overwrites(args, sheet: Path | None, index) -> None:
    """Before anything is encoded or written: no output over an input or an existing file."""
    outputs = [("--report", args.report), ("--sheet", sheet)]
    if all(path is None for _, path in outputs):
        return  # nothing is written: no need to read every item's path (O(N))
    inputs = [(args.image, "the query image")]
    inputs += [(Path(p), "an indexed image") for _, p in index.indexed_paths()]
    report.refuse_overwrites(outputs, inputs, args.overwrite)


def _write_report(
    args, encoder: Encoder, index: HammingIndex, query: np.ndarray, hits: list[Hit], sheet
) -> list[Path]:
    folders = ", ".join(map(str, args.index))
    source = f"encoder {encoder.model_path} ({encoder.codes_id}), index {folders}"
    content = search_report.report_content(
        encoder, index, query, hits, args.image.name, args.image, source, args.frame, args.us_region
    )
    return report.write_report(content, args.report, sheet, overwrite=args.overwrite)


def _table(hits: list[Hit]) -> str:
    header = ("rank", "id", "distance", "label", "path")
    # Ids, labels and paths come from files: printed escaped, never as terminal codes.
    rows = [header] + [
        tuple(printable(v) for v in list(search_report.hit_json(h).values())[: len(header)])
        for h in hits
    ]
    widths = [max(len(row[c]) for row in rows) for c in range(len(header))]
    return "\n".join(
        "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
        for row in rows
    )
