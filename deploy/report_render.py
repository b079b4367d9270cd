"""Drawing of the "why it matched" report: image tiles, the PNG contact sheet, the HTML.

Works on the :class:`deploy.report.Report` content; :func:`deploy.report.write_report`
calls it and writes the files. numpy + Pillow only (no TensorFlow).

Just over 300 lines on purpose: the tiles, the sheet and the HTML draw the same entries
with the same sizes and notes; :mod:`deploy.report` already holds the content and the
writing, so a further split would only pass the layout constants around.
"""

from __future__ import annotations

import base64
import html
import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from deploy import preprocess
from deploy.errors import printable
from deploy.report import Entry, HashGrid, Report, cell_agreement

TILE = 160  # side of every image tile, pixels
GAP = 8
LINE = 14  # caption line height in the sheet
CAPTION_LINES = 4
SHEET_COLUMNS = 6  # blocks per sheet row: the query, then hits
AGREE, DISAGREE = (0, 170, 0), (220, 0, 0)
MAX_ALPHA = 0.6  # overlay opacity where every bit of a cell agrees (or none does)
MASK_ALPHA = 0.3
MASK_COLOURS = ((0, 190, 255), (255, 0, 255), (255, 210, 0), (40, 90, 255), (255, 130, 0))
BACKGROUND, INK, MUTED = (255, 255, 255), (20, 20, 20), (110, 110, 110)


# Drawing ----------------------------------------------------------------------------


def _font(size: int = 11):
    try:
        return ImageFont.load_default(size=size)
    except (TypeError, OSError, ImportError):  # Pillow without FreeType: bitmap font
        return ImageFont.load_default()


def load_tile(
    path: Path | None,
    size: int = TILE,
    withheld: str = "",
    frame: int | None = None,
    us_region: bool = False,
) -> tuple[Image.Image, str]:
    """The image squashed to a square as the encoder sees it (RGB; the ``frame`` and
    ``us_region`` it was encoded with), and '' ; or a placeholder and a note saying why
    there is no image (``withheld``: not opened)."""
    try:
        if withheld:
            raise ValueError(withheld)
        if path is None:
            raise ValueError("no image file recorded")
        tile = preprocess.load_prepared(path, size, 3, frame, us_region)
        return Image.fromarray(tile), ""
    except (ValueError, OSError) as err:  # preprocess.ImageError is a ValueError
        tile = Image.new("RGB", (size, size), (215, 215, 215))
        draw = ImageDraw.Draw(tile)
        draw.line((0, 0, size, size), fill=MUTED)
        draw.line((0, size, size, 0), fill=MUTED)
        draw.text((size // 2, size // 2), "no image", fill=INK, font=_font(12), anchor="mm")
        return tile, f"image not shown: {err}"


def mask_colour(value: int) -> tuple[int, int, int]:
    return MASK_COLOURS[(value - 1) % len(MASK_COLOURS)]


def draw_mask(tile: Image.Image, mask: np.ndarray) -> Image.Image:
    """Translucent fill and a solid outline of every non-background mask class."""
    size = tile.size[0]
    m = np.asarray(Image.fromarray(np.asarray(mask, np.uint8)).resize((size, size), 0))
    p = np.pad(m, 1, mode="edge")  # a pixel is on an outline if a 4-neighbour differs
    edge = (p[:-2, 1:-1] != m) | (p[2:, 1:-1] != m) | (p[1:-1, :-2] != m) | (p[1:-1, 2:] != m)
    out = np.asarray(tile, np.float32).copy()
    for value in np.unique(m[m > 0]):
        colour = np.array(mask_colour(int(value)), np.float32)
        inside = m == value
        out[inside] = out[inside] * (1 - MASK_ALPHA) + colour * MASK_ALPHA
        out[inside & edge] = colour
    return Image.fromarray(np.rint(out).astype(np.uint8))


def draw_agreement(tile: Image.Image, agreement: np.ndarray, grid: HashGrid, tag: str = ""):
    """The agreement map over a grey copy of ``tile`` (so the image's own reds and greens
    are not read as agreement): a colour per cell, cell lines, and "agreeing/bits" where
    a cell holds several bits and has room for the text."""
    size = tile.size[0]
    f = agreement[np.arange(size) * grid.rows // size][:, np.arange(size) * grid.cols // size]
    alpha = np.abs(2 * f[..., None] - 1) * MAX_ALPHA
    colour = np.where(f[..., None] >= 0.5, np.float32(AGREE), np.float32(DISAGREE))
    grey = np.asarray(tile.convert("L").convert("RGB"), np.float32)
    image = Image.fromarray(np.rint(grey * (1 - alpha) + colour * alpha).astype(np.uint8))
    draw, font = ImageDraw.Draw(image), _font(10)
    for r in range(1, grid.rows):
        draw.line((0, r * size // grid.rows, size, r * size // grid.rows), fill=(60, 60, 60))
    for c in range(1, grid.cols):
        draw.line((c * size // grid.cols, 0, c * size // grid.cols, size), fill=(60, 60, 60))
    if grid.bits_per_cell > 1 and size // max(grid.rows, grid.cols) >= 28:
        for (r, c), value in np.ndenumerate(agreement):
            xy = ((2 * c + 1) * size // (2 * grid.cols), (2 * r + 1) * size // (2 * grid.rows))
            text = f"{round(value * grid.bits_per_cell)}/{grid.bits_per_cell}"
            draw.text(
                xy, text, fill="white", font=font, anchor="mm", stroke_width=2, stroke_fill="black"
            )
    if tag:
        draw.rectangle((0, 0, draw.textlength(tag, font=font) + 6, 13), fill=(0, 0, 0))
        draw.text((3, 1), tag, fill="white", font=font)
    return image


@dataclass
class _Panels:
    entry: Entry
    tiles: list[tuple[str, Image.Image]]  # (caption, image)
    note: str  # why the image is not shown
    agreeing: int | None  # bits on which query and hit agree


def panels_of(report: Report, entry: Entry, query_tile) -> _Panels:
    tile, note = (
        query_tile
        if entry is report.query
        else load_tile(entry.path, TILE, entry.withheld, entry.frame, entry.us_region)
    )
    plain = draw_mask(tile, entry.mask) if entry.mask is not None else tile
    if entry is report.query:
        return _Panels(entry, [("query", plain)], note, None)
    tiles, q, agreeing = [("hit", plain)], report.query, None
    if entry.bits is not None and q.bits is not None:
        agreeing = int(np.sum(np.asarray(entry.bits) == np.asarray(q.bits)))
        if report.grid is not None:
            agreement = cell_agreement(q.bits, entry.bits, report.grid)
            blank = Image.new("RGB", tile.size, (128, 128, 128))  # under a missing image
            for name, image in (("hit", blank if note else tile), ("query", query_tile[0])):
                drawn = draw_agreement(image, agreement, report.grid, name)
                tiles.append((f"agreement over the {name}", drawn))
    return _Panels(entry, tiles, note, agreeing)


# Contact sheet ------------------------------------------------------------------------


def sheet_size(n_hits: int, with_grid: bool, columns: int = SHEET_COLUMNS) -> tuple[int, int]:
    """(width, height) of the contact sheet: header lines, then one block (caption and
    tiles) per image, ``columns`` blocks to a row."""
    cols, rows = min(columns, 1 + n_hits), -(-(1 + n_hits) // columns)
    height = _header_lines(with_grid) * LINE + rows * _block_height(with_grid) + (rows + 1) * GAP
    return cols * TILE + (cols + 1) * GAP, height


def _header_lines(with_grid: bool) -> int:
    return 2 if with_grid else 3  # title, source (and why there is no map)


def _block_height(with_grid: bool) -> int:
    n_tiles = 3 if with_grid else 1
    return CAPTION_LINES * LINE + n_tiles * TILE + (n_tiles - 1) * GAP


def render_sheet(report: Report, panels: list[_Panels], columns: int = SHEET_COLUMNS):
    """The contact sheet: the query block (image, legend below it), then the hits."""
    grid, q, with_grid = report.grid, report.query, report.grid is not None
    width, height = sheet_size(len(report.hits), with_grid, columns)
    sheet = Image.new("RGB", (width, height), BACKGROUND)
    draw = ImageDraw.Draw(sheet)
    layout = f"grid {grid.rows}x{grid.cols}, {grid.bits_per_cell} bit(s)/cell" if grid else ""
    if grid is not None and grid.first_bit:
        layout += f" (bits {grid.first_bit}-{grid.bits - 1})"
    bits = f"{len(q.bits)} bits" if q.bits is not None else ""
    _text(draw, (GAP, 2), " | ".join(s for s in (report.title, bits, layout) if s), width)
    _text(draw, (GAP, 2 + LINE), report.source, width, MUTED)
    if not with_grid:
        _text(
            draw, (GAP, 2 + 2 * LINE), f"No bit-agreement map: {report.grid_note}", width, DISAGREE
        )
    top = _header_lines(with_grid) * LINE + GAP
    for i, panel in enumerate(panels):
        x, y = (
            GAP + (i % columns) * (TILE + GAP),
            top + (i // columns) * (_block_height(with_grid) + GAP),
        )
        for j, line in enumerate(_caption(panel)):
            _text(
                draw, (x, y + j * LINE), line.lstrip("!"), TILE, DISAGREE if line[0] == "!" else INK
            )
        for j, (_, tile) in enumerate(panel.tiles):
            sheet.paste(tile, (x, y + CAPTION_LINES * LINE + j * (TILE + GAP)))
    if with_grid:  # below the query, where a hit has its two maps
        _sheet_legend(draw, report, GAP, top + CAPTION_LINES * LINE + TILE + GAP)
    return sheet


def _caption(panel: _Panels) -> list[str]:
    e, note = panel.entry, ["!image not shown (see the HTML)"] if panel.note else []
    if e.rank == 0:
        return (["query", e.id, f"label: {e.label or '-'}"] + note)[:CAPTION_LINES]
    agree = "" if panel.agreeing is None else f", agree {panel.agreeing}/{len(e.bits)}"
    lines = [f"#{e.rank}  distance {e.distance}{agree}", e.id, f"label: {e.label or '-'}"]
    return (lines + note + [Path(str(e.path)).name if e.path else "-"])[:CAPTION_LINES]


def _sheet_legend(draw, report: Report, x: int, y: int) -> None:
    for line in (
        "Each hit: the hit, then the",
        "bit-agreement map over the hit",
        "and over the query (grey).",
    ):
        _text(draw, (x, y), line, TILE)
        y += LINE
    for px in range(TILE):  # red (no bit agrees) -> clear (half) -> green (all agree)
        f = px / (TILE - 1)
        a, c = abs(2 * f - 1) * MAX_ALPHA, AGREE if f >= 0.5 else DISAGREE
        draw.line(
            (x + px, y + 4, x + px, y + 16), fill=tuple(round(255 * (1 - a) + v * a) for v in c)
        )
    draw.rectangle((x, y + 4, x + TILE - 1, y + 16), outline=MUTED)
    for text, dx, anchor in (
        ("none", 0, "la"),
        ("half", TILE // 2, "ma"),
        ("all agree", TILE, "ra"),
    ):
        draw.text((x + dx, y + 18), text, fill=INK, font=_font(), anchor=anchor)
    _text(draw, (x, y + 18 + LINE), "of each grid cell's bits", TILE)
    y += 22 + 2 * LINE
    for value, name in list(enumerate(report.mask_classes))[1:]:
        draw.rectangle((x, y + 2, x + 10, y + 12), fill=mask_colour(value))
        _text(draw, (x + 16, y), f"predicted {name}", TILE - 16)
        y += LINE


def _text(draw, xy, text: str, width: int, colour=INK) -> None:
    """One line of text at ``xy``, cut with "..." to fit ``width`` pixels."""
    text = printable(text)  # a line break in a file name or id would break the line
    font = _font()
    if draw.textlength(text, font=font) > width:
        while text and draw.textlength(text + "...", font=font) > width:
            text = text[:-1]
        text += "..."
    draw.text(xy, text, fill=colour, font=font)


# HTML -------------------------------------------------------------------------------

_CSS = """
body{font:14px/1.4 system-ui,sans-serif;margin:16px;color:#141414;background:#fff}
h1{font-size:20px;margin:0 0 4px} .muted{color:#6e6e6e} code{font-size:12px}
.legend{border:1px solid #ccc;padding:8px 12px;margin:12px 0;max-width:1100px}
.bar{display:inline-block;width:160px;height:12px;border:1px solid #999;vertical-align:middle;
 background:linear-gradient(to right,rgba(220,0,0,.6),rgba(220,0,0,0) 50%,rgba(0,170,0,0) 50%,
 rgba(0,170,0,.6))}
.sw{display:inline-block;width:12px;height:12px;margin:0 4px 0 12px;vertical-align:middle}
.cards{display:flex;flex-wrap:wrap;gap:12px}
.card{border:1px solid #ccc;border-radius:4px;padding:8px;width:496px}
.card h2{font-size:15px;margin:0 0 4px} dl{display:grid;grid-template-columns:auto 1fr;
 gap:0 8px;margin:0 0 6px;font-size:13px;max-width:500px} dt{color:#6e6e6e} dd{margin:0;
 overflow-wrap:anywhere} figure{display:inline-block;margin:0 4px 0 0} figcaption{font-size:12px;
 color:#6e6e6e} .note{color:#c00000;font-size:13px;margin:4px 0 0}
"""


def render_html(report: Report, panels: list[_Panels]) -> str:
    """The report as one self-contained HTML page (every text escaped)."""
    esc, grid, query = html.escape, report.grid, report.query
    n_bits = len(query.bits) if query.bits is not None else None
    if grid is not None and grid.first_bit:
        mapped = (
            f"Bits {grid.first_bit} to {grid.bits - 1} come from the cells of a {grid.rows} x "
            f"{grid.cols} grid over the image ({grid.bits_per_cell} bit(s) per cell; bit "
            f"{grid.first_bit} + i is cell i // {grid.bits_per_cell}, row by row); bits 0 to "
            f"{grid.first_bit - 1} come from the whole image and are not mapped."
        )
    elif grid is not None:
        mapped = (
            f"Each bit comes from one cell of a {grid.rows} x {grid.cols} grid over the image "
            f"({grid.bits_per_cell} bit(s) per cell; bit i is cell i // {grid.bits_per_cell}, "
            "row by row)."
        )
    if grid is not None:
        layout = (
            f"{mapped} A cell's colour is the fraction of its bits on which the query and "
            "the hit agree: <span class='bar'></span> red = none agree, clear = half (chance), "
            "green = all agree. The map is drawn over grey copies of the hit and of the query."
        )
    else:
        layout = f"No bit-agreement map: {esc(report.grid_note)}"
    swatches = "".join(
        f"<span class='sw' style='background:rgb{mask_colour(v)}'></span>{esc(name)}"
        for v, name in list(enumerate(report.mask_classes))[1:]
    )
    masks = f"<p>Predicted segmentation (outline and fill): {swatches}</p>" if swatches else ""
    cards = [_card(p, esc) for p in panels]
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{esc(report.title)}</title>
<style>{_CSS}</style></head><body>
<h1>{esc(report.title)}</h1>
<p class="muted">query <code>{esc(str(query.path))}</code>{f" &middot; {n_bits} bits" if n_bits else ""}
{f" &middot; {esc(report.source)}" if report.source else ""}</p>
<div class="legend"><p>{layout}</p>{masks}<p class="muted">Images are shown squashed to a
square, as the encoder sees them. Distance = Hamming distance between the codes (bits that
differ).</p></div>
<div class="cards">{"".join(cards)}</div>
</body></html>
"""


def _card(panel: _Panels, esc) -> str:
    e = panel.entry
    if e.rank == 0:
        title = "Query"
        rows = [("id", e.id), ("label", e.label or "-"), ("path", str(e.path or "-"))]
    else:
        title = f"#{e.rank} &middot; distance {e.distance}"
        agree = "-" if panel.agreeing is None else f"{panel.agreeing} of {len(e.bits)} bits"
        rows = [("id", e.id), ("distance", str(e.distance)), ("label", e.label or "-"),
                ("path", str(e.path or "-")), ("agreement", agree)]  # fmt: skip
    dl = "".join(f"<dt>{k}</dt><dd>{esc(str(v))}</dd>" for k, v in rows)
    figures = "".join(
        f"<figure><img width='{TILE}' height='{TILE}' alt='{esc(caption)}' "
        f"src='data:image/png;base64,{_png64(tile)}'><figcaption>{esc(caption)}</figcaption>"
        "</figure>"
        for caption, tile in panel.tiles
    )
    note = f"<p class='note'>{esc(panel.note)}</p>" if panel.note else ""
    return f"<div class='card'><h2>{title}</h2><dl>{dl}</dl>{figures}{note}</div>\n"


def _png64(image: Image.Image) -> str:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode("ascii")
