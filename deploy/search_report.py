"""The "why it matched" of one device search: per-hit bit agreement and the report content.

Shared by ``python -m deploy search`` (:mod:`deploy.cli_search`, which writes the report
to files) and the search service (:mod:`deploy.serve_app`, which returns it in a page),
so both explain a hit the same way, and both warn alike when the query and the DICOM hits
were not encoded alike (:func:`region_warning`). numpy only, plus :mod:`deploy.report`'s
content.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from deploy import codes, dicom, report
from deploy.encoder import Encoder
from deploy.index import HammingIndex, Hit
from deploy.mapped_index import MultiIndex


def hit_json(hit: Hit) -> dict:
    """One hit as ``search --json`` prints it: rank, id, distance, label, path (+ dicom)."""
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


def hits_json(index: HammingIndex | MultiIndex, hits: list[Hit]) -> list[dict]:
    """The hits as ``search --json`` prints them; searching several folders at once
    (:class:`deploy.mapped_index.MultiIndex`), each also names its folder (``index``)."""
    rows = [hit_json(h) for h in hits]
    if isinstance(index, MultiIndex):  # which site's folder each hit comes from
        for row, hit in zip(rows, hits, strict=True):
            row["index"] = str(index.parts[index.locate(hit.position)[0]].path)
    return rows


def hit_frame(hit: Hit) -> int | None:
    """The frame a hit was encoded from (a multi-frame DICOM's entry records it)."""
    return (hit.metadata.get("dicom") or {}).get("frame")


def region_warning(
    query_path: Path, us_region: bool, hits: list[Hit], option: str = "--us-region"
) -> str:
    """Why the query and the DICOM hits were not encoded alike ('' when they were): codes
    of a whole ultrasound frame and of its region are at unrelated distances. A hit
    encoded cropped records ``us_region`` (:func:`deploy.index_input.entry_metadata`);
    ``option`` is how the caller's user asks for the crop."""
    dicom_hits = [h for h in hits if "dicom" in h.metadata]
    with_region = sum("us_region" in h.metadata for h in dicom_hits)
    if us_region and dicom_hits and with_region == 0:
        why = f"were indexed without {option}, the query is cropped to its region"
    elif not us_region and with_region and dicom.is_dicom(query_path):
        why = f"were indexed with {option}, the query is not (add {option})"
    else:
        return ""
    return f"the DICOM hits {why}; distances compare unlike images"


def grid_note(encoder: Encoder) -> str:
    """Why the report has no agreement map ('' when the contract records the layout)."""
    if report.HashGrid.from_contract(encoder.contract) is not None:
        return ""
    return (
        f"{encoder.contract.path} does not record the bit layout (hash_grid): its hash "
        "head's bits have no image region, or it was exported before the layout was "
        "recorded (re-export the model to get the map)"
    )


def agreement_json(encoder: Encoder, query: np.ndarray, hit_codes: np.ndarray) -> list[dict]:
    """Per hit, what the report draws, as numbers: ``agreeing_bits`` (bits on which query
    and hit agree) and ``cell_agreement`` (rows x cols fractions of each grid cell's bits,
    :func:`deploy.report.cell_agreement`; None without a recorded grid)."""
    grid = report.HashGrid.from_contract(encoder.contract)
    query_bits = codes.unpack_bits(query[None], encoder.bits)[0]
    rows = []
    for bits in codes.unpack_bits(hit_codes, encoder.bits):
        cells = None if grid is None else report.cell_agreement(query_bits, bits, grid)
        rows.append({
            "agreeing_bits": int(np.sum(bits == query_bits)),
            "cell_agreement": None if cells is None else cells.tolist(),
        })  # fmt: skip
    return rows


def report_content(
    encoder: Encoder,
    index: HammingIndex | MultiIndex,
    query: np.ndarray,
    hits: list[Hit],
    query_name: str,
    query_path: Path,
    source: str,
    frame: int | None = None,
    us_region: bool = False,
) -> report.Report:
    """The report of one search; hit codes come from the index, images from their paths.
    The query was encoded from ``frame`` (of a multi-frame file) and, with ``us_region``,
    cropped to its ultrasound region; each hit as its entry records.

    The codes stay packed up to here; the report draws bits, so they are unpacked once.
    """
    grid = report.HashGrid.from_contract(encoder.contract)
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
            withheld=not_the_indexed_image(encoder, h, code),
            frame=hit_frame(h),
            us_region="us_region" in h.metadata,
        )
        for h, bits, code in zip(hits, hit_bits, hit_codes, strict=True)
    ]
    query_bits = codes.unpack_bits(query[None], encoder.bits)[0]
    query_entry = report.Entry(query_name, query_path, query_bits, frame=frame, us_region=us_region)
    return report.Report(query_entry, entries, grid, grid_note=grid_note(encoder), source=source)


def not_the_indexed_image(encoder: Encoder, hit: Hit, code: np.ndarray) -> str:
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
        actual = encoder.code_file(path, hit_frame(hit), us_region="us_region" in hit.metadata)
    except (ValueError, OSError):
        return ""  # missing or unreadable: load_tile's own note says so, nothing is read
    if not np.array_equal(actual, code):
        return (
            f"{path} does not encode to the indexed code of {hit.id!r} (changed since it was "
            "indexed, or not the indexed image); not shown"
        )
    return ""
