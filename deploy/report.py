"""Why a search matched: an HTML report and a PNG contact sheet of the query and its hits.

The hash head pools the core node to a ``rows x cols`` grid of image regions and gives
each cell ``bits_per_cell`` bits (bit first_bit + i -> cell i // bits_per_cell, cells
row-major; ``encoder.json`` -> ``hash_grid``; the bits before first_bit, where a head
has them, come from the whole image and are left out of the map). For each hit the
report colours every cell by the fraction of that cell's bits on which query and hit
agree (:func:`cell_agreement`):
green where they agree on more than half, red where they disagree on more than half,
clear at one half (chance level), stronger the further from one half. The map is drawn
over grey copies of the hit and of the query; optional predicted masks are drawn over
the plain images. Images are shown squashed to a square, as the encoder sees them.

The HTML file is self-contained (images inlined as base64 PNG, no external resources);
both files are written atomically. numpy + Pillow only (no TensorFlow).
"""

from __future__ import annotations

import io
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from deploy.atomic import atomic_path


@dataclass(frozen=True)
class HashGrid:
    """The bit layout: bit first_bit + i comes from cell i // bits_per_cell, cells
    row-major; the first ``first_bit`` bits have no image region."""

    rows: int
    cols: int
    bits_per_cell: int
    first_bit: int = 0

    @property
    def region_bits(self) -> int:
        """How many bits the grid maps."""
        return self.rows * self.cols * self.bits_per_cell

    @property
    def bits(self) -> int:
        """The code length."""
        return self.first_bit + self.region_bits

    @classmethod
    def from_contract(cls, contract) -> HashGrid | None:
        """The grid an ``EncoderContract`` records, or None for an older contract."""
        return None if contract.hash_grid is None else cls(*contract.hash_grid)


def cell_agreement(query_bits, hit_bits, grid: HashGrid) -> np.ndarray:
    """Per grid cell, the fraction of its bits on which two {0, 1} codes agree.

    Returns:
        float (rows, cols) in [0, 1].
    """
    q, h = np.asarray(query_bits), np.asarray(hit_bits)
    if q.shape != (grid.bits,) or h.shape != (grid.bits,):
        raise ValueError(f"codes of shape {q.shape} and {h.shape} for a {grid.bits}-bit grid")
    same = (q == h)[grid.first_bit :].reshape(grid.rows, grid.cols, grid.bits_per_cell)
    return same.mean(axis=-1)


@dataclass
class Entry:
    """One image of the report: the query (rank 0) or a hit.

    Attributes:
        id: its id (the query: its file name).
        path: its image file; None or an unreadable file gives a placeholder and a note.
        bits: its {0, 1} code (bits,), or None.
        rank, distance, label: of a hit ('' label: unknown).
        mask: predicted mask classes (H, W), value 0 = background; drawn when given.
        withheld: why the file at ``path`` is not shown ('' : it is shown). The search
            report withholds a hit's file that does not encode to the hit's indexed code:
            the index names it, but it is not the image that was indexed.
        frame: the frame of a multi-frame file that was encoded (None: single frame).
        us_region: it was encoded cropped to its ultrasound region (``--us-region``).
    """

    id: str
    path: Path | None
    bits: np.ndarray | None = None
    rank: int = 0
    distance: int | None = None
    label: str = ""
    mask: np.ndarray | None = None
    withheld: str = ""
    frame: int | None = None
    us_region: bool = False


@dataclass
class Report:
    """Everything one report shows.

    Attributes:
        query, hits: the entries, hits nearest first.
        grid: the bit layout; None draws no agreement map and shows ``grid_note``.
        grid_note: why there is no grid.
        mask_classes: names of the mask values (0 = background), for the legend.
        source: one line naming the encoder and database.
    """

    query: Entry
    hits: list[Entry]
    grid: HashGrid | None
    grid_note: str = ""
    mask_classes: list[str] = field(default_factory=list)
    source: str = ""
    title: str = "Why it matched"


def refuse_overwrites(outputs, inputs, overwrite: bool) -> None:
    """Refuses outputs that would replace an input, or an existing file without ``overwrite``.

    A command may replace only a file the user calls disposable (``--overwrite``), and
    never one of its inputs, whatever the flags: ``--image scan.png --report scan.html``
    would otherwise draw the sheet over the query.

    Args:
        outputs: (flag, path or None) pairs, e.g. ``[("--report", html), ("--sheet", png)]``.
        inputs: (path, role) pairs, e.g. ``[(query, "the query image")]``.
        overwrite: whether an existing file that is no input may be replaced.

    Raises:
        ValueError: naming the output, what it would replace and the flag to change.
    """
    for flag, out in outputs:
        if out is None:
            continue
        what = "contact sheet" if flag == "--sheet" else "report"
        for path, role in inputs:
            if _same_file(out, path):
                raise ValueError(
                    f"the {what} {out} would replace {role} {path}; choose another {flag} path"
                )
        if os.path.lexists(out) and not overwrite:
            raise ValueError(
                f"{out} exists and would be replaced by the {what}; add --overwrite to "
                f"replace it, or choose another {flag} path"
            )


def _same_file(a, b) -> bool:
    """Whether two paths name one file: same resolved path, or one inode (hard links)."""
    if os.path.realpath(a) == os.path.realpath(b):
        return True
    try:
        return os.path.samefile(a, b)
    except OSError:  # one of them does not exist
        return False


def report_html(report: Report) -> str:
    """The HTML report as text, without writing it (the search service returns it)."""
    from deploy.report_render import render_html

    return render_html(report, _panels(report))


def _panels(report: Report) -> list:
    """Each entry's panels (query first), the images as the encoder saw them."""
    from deploy.report_render import load_tile, panels_of

    query = report.query
    query_tile = load_tile(query.path, frame=query.frame, us_region=query.us_region)
    return [panels_of(report, e, query_tile) for e in [report.query, *report.hits]]


def write_report(report: Report, html_path=None, sheet_path=None, overwrite=True) -> list[Path]:
    """Writes the HTML report and/or the contact sheet atomically; returns the paths.

    ``overwrite=False`` raises ``FileExistsError`` instead of replacing an existing file,
    also one created while the report was being drawn. Files get the umask's modes
    (reports are for sharing).
    """
    from deploy.report_render import render_html, render_sheet

    panels = _panels(report)
    outputs = []
    if html_path is not None:
        outputs.append((Path(html_path), render_html(report, panels).encode("utf-8")))
    if sheet_path is not None:
        buffer = io.BytesIO()
        render_sheet(report, panels).save(buffer, format="PNG")
        outputs.append((Path(sheet_path), buffer.getvalue()))
    for path, data in outputs:
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(path, overwrite=overwrite) as tmp:
            tmp.write_bytes(data)
    return [path for path, _ in outputs]
