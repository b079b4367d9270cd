"""mAP against k, one line per method, drawn with Pillow (no plotting dependency).

One panel per mAP convention; a grey line is the random-ranking reference. Float
descriptors are drawn with round markers, hash codes with square ones, Y-Net rows with
triangles and a thicker line, so families stay apart even where colours are close.
"""

from __future__ import annotations

from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

from deploy.atomic import atomic_path
from keras_ynet.ranking_metrics import CONVENTION_NAMES, MAP_CONVENTIONS

PANEL_W, PANEL_H = 420, 340
MARGIN_L, MARGIN_R, MARGIN_T, MARGIN_B = 56, 16, 36, 44
LEGEND_W = 260  # fits "ynet_hash_from_embedding (64)"
PALETTE = [
    (31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189),
    (140, 86, 75), (227, 119, 194), (188, 189, 34), (23, 190, 207), (0, 0, 128),
    (128, 128, 0), (0, 128, 128), (220, 20, 60), (85, 107, 47),
]  # fmt: skip
GREY = (150, 150, 150)


def _font(size: int):
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow built without FreeType: a fixed bitmap font
        return ImageFont.load_default()


def _marker(draw, x, y, shape, colour, r=4):
    box = [x - r, y - r, x + r, y + r]
    if shape == "square":
        draw.rectangle(box, fill=colour)
    elif shape == "triangle":
        draw.polygon([(x, y - r - 1), (x - r - 1, y + r), (x + r + 1, y + r)], fill=colour)
    else:
        draw.ellipse(box, fill=colour)


def _style(row: dict, index: int):
    shape = {"float": "circle", "hash": "square"}.get(row["kind"], "circle")
    if row["method"] == "ynet":
        shape = "triangle"
    return PALETTE[index % len(PALETTE)], shape, 3 if row["method"] == "ynet" else 2


def plot_map_vs_k(rows: list[dict], random_map: dict, path: Path, title: str = "") -> Path:
    """Writes the PNG (atomically) and returns its path.

    Args:
        rows: table rows of :func:`keras_ynet.experiments.summary_tables.summarize_row`.
        random_map: ``random_map[convention][str(k)]``.
        path: the .png to write.
        title: line drawn above the panels.
    """
    ks = rows[0]["ks"]
    means = [r["map"][c][str(k)]["mean"] for r in rows for c in MAP_CONVENTIONS for k in ks]
    means += [random_map[c][str(k)] for c in MAP_CONVENTIONS for k in ks]
    low = max(0.0, int(min(means) * 10) / 10)
    high = min(1.0, int(max(means) * 10 + 0.9999) / 10)
    high = high if high > low else low + 0.1
    width = PANEL_W * len(MAP_CONVENTIONS) + LEGEND_W
    image = Image.new("RGB", (width, PANEL_H + 24), "white")
    draw = ImageDraw.Draw(image)
    font, small = _font(14), _font(11)
    draw.text((8, 4), title, fill="black", font=font)
    for p, c in enumerate(MAP_CONVENTIONS):
        x0, y0 = p * PANEL_W + MARGIN_L, 24 + MARGIN_T
        x1, y1 = (p + 1) * PANEL_W - MARGIN_R, 24 + PANEL_H - MARGIN_B

        def xy(i, value, x0=x0, x1=x1, y0=y0, y1=y1):
            x = x0 + (x1 - x0) * (i + 0.5) / len(ks)  # k is categorical: 5, 10, 20, 50
            return x, y1 - (y1 - y0) * (value - low) / (high - low)

        draw.rectangle([x0, y0, x1, y1], outline="black")
        draw.text((x0, y0 - 20), f"mAP, convention {CONVENTION_NAMES[c]}", fill="black", font=font)
        for t in range(int(round((high - low) * 10)) + 1):
            value = low + t / 10
            _, y = xy(0, value)
            draw.line([x0, y, x1, y], fill=(230, 230, 230))
            draw.text((x0 - 34, y - 6), f"{value:.1f}", fill="black", font=small)
        for i, k in enumerate(ks):
            x, _ = xy(i, low)
            draw.text((x - 8, y1 + 6), f"@{k}", fill="black", font=small)
        draw.text(((x0 + x1) / 2 - 4, y1 + 22), "k", fill="black", font=small)
        chance = [xy(i, random_map[c][str(k)]) for i, k in enumerate(ks)]
        draw.line(chance, fill=GREY, width=2)
        for index, row in enumerate(rows):
            colour, shape, line_width = _style(row, index)
            points = [xy(i, row["map"][c][str(k)]["mean"]) for i, k in enumerate(ks)]
            draw.line(points, fill=colour, width=line_width)
            for x, y in points:
                _marker(draw, x, y, shape, colour)
    lx = PANEL_W * len(MAP_CONVENTIONS) + 8
    for index, row in enumerate([*rows, None]):
        y = 24 + MARGIN_T + 18 * index
        if row is None:
            draw.line([lx, y + 6, lx + 22, y + 6], fill=GREY, width=2)
            draw.text((lx + 30, y), "random ranking", fill="black", font=small)
            continue
        colour, shape, line_width = _style(row, index)
        draw.line([lx, y + 6, lx + 22, y + 6], fill=colour, width=line_width)
        _marker(draw, lx + 11, y + 6, shape, colour)
        draw.text((lx + 30, y), f"{row['name']} ({row['dim']})", fill="black", font=small)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        image.save(tmp, format="PNG")
    return path
