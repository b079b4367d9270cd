"""The ultrasound region an encoder looks at when asked to (``--us-region``).

An ultrasound frame carries more than the scan: text, calipers, a colour bar, the
spectral Doppler trace. The modality declares where its data lie in the Sequence of
Ultrasound Regions (0018,6011); each item gives a rectangle
``RegionLocationMinX0, MinY0, MaxX1, MaxY1`` (pixel columns and rows, inclusive) and a
``RegionSpatialFormat`` (0018,6012: 1 = 2D tissue or flow image, 2 = M-mode, 3 =
spectral, 4 = waveform, 5 = graphics).

The rule, the same on every host (``encoder.json``: ``preprocessing.decode.dicom.
us_region``): among the regions with RegionSpatialFormat 1 (the 2D image, which is what
a sonographer compares), or among all regions when none is 2D, take the one of largest
area ``(MaxX1 - MinX0 + 1) * (MaxY1 - MinY0 + 1)``, the first in sequence order on a
tie. Its rectangle is clipped to the image; the decoded frame is cropped to rows
``MinY0..MaxY1`` and columns ``MinX0..MaxX1`` before resizing. A file without the
sequence is used whole. A region with a corner missing, or nothing left after clipping,
is an error naming the file.
"""

from __future__ import annotations

CORNERS = (
    "RegionLocationMinX0",
    "RegionLocationMinY0",
    "RegionLocationMaxX1",
    "RegionLocationMaxY1",
)
SPATIAL_2D = 1
# What the contract says, defined once: export writes it into encoder.json.
RULE = (
    "only with the host's us_region option: the Sequence of Ultrasound Regions (0018,6011) "
    "item with RegionSpatialFormat 1 (2D) of largest area (MaxX1 - MinX0 + 1) * (MaxY1 - "
    "MinY0 + 1), or of all items when none is 2D, the first on a tie; its rectangle is "
    "clipped to the image and the decoded image (after colour conversion) cropped to rows "
    "MinY0..MaxY1, columns MinX0..MaxX1 (inclusive) before resizing; a file without the "
    "sequence is used whole"
)


def choose_region(ds, rows: int, cols: int, fail) -> tuple[int, int, int, int] | None:
    """(x0, y0, x1, y1), inclusive and inside the image, by the module's rule; None
    when ``ds`` declares no ultrasound region.

    Raises:
        ``fail(problem)``: a region without its four corners, or none of the image left.
    """
    regions = ds.get("SequenceOfUltrasoundRegions")
    if not regions:
        return None
    boxes = []
    for number, item in enumerate(regions, 1):
        if any(key not in item for key in CORNERS):
            raise fail(f"ultrasound region {number} lacks one of {', '.join(CORNERS)}")
        x0, y0, x1, y1 = (int(item[key].value) for key in CORNERS)
        area = (x1 - x0 + 1) * (y1 - y0 + 1)
        spatial = int(item.get("RegionSpatialFormat", 0) or 0)
        boxes.append((spatial == SPATIAL_2D, area, number, (x0, y0, x1, y1)))
    candidates = [b for b in boxes if b[0]] or boxes
    # max by area; min number on a tie (the first in sequence order)
    _, _, number, (x0, y0, x1, y1) = max(candidates, key=lambda b: (b[1], -b[2]))
    x0, y0 = max(x0, 0), max(y0, 0)
    x1, y1 = min(x1, cols - 1), min(y1, rows - 1)
    if x1 < x0 or y1 < y0:
        raise fail(f"ultrasound region {number} lies outside the {cols} x {rows} image")
    return x0, y0, x1, y1
