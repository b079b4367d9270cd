"""The mask signal of JSRT with a nodule drawn into each mask (a measurement, no training).

    python scripts/nodule_mask_signal.py ../shared/data/jsrt

JSRT's masks outline the lungs and heart, which say nothing about a nodule (mask signal
at chance). Its labels.csv also records each nodule's centre (x_256, y_256, pixels of the
256 px image) and diameter (size_mm). This draws each nodule as a disc of a fourth mask
class (0.175 mm per pixel at JSRT's 2048 px, so 1.4 mm per pixel at 256 px) and measures
the mask signal of the train split again, as keras_ynet.mask_signal does for any dataset:
what the segmentation guidance could teach if the masks outlined the finding.
"""

from __future__ import annotations

import sys

import numpy as np

from keras_ynet.dataset import load_dataset
from keras_ynet.mask_signal import leave_one_out_signal, mask_descriptor
from keras_ynet.masks import MISSING_MASK, load_mask

MM_PER_PIXEL_256 = 0.175 * 2048 / 256


def nodule_disc(shape, x: float, y: float, size_mm: float) -> np.ndarray:
    rows, cols = np.mgrid[: shape[0], : shape[1]]
    # size_mm in pixels of a 256 px mask; the caller scales it to the mask size.
    radius = max(size_mm / 2 / MM_PER_PIXEL_256, 1.0)
    return (cols - x) ** 2 + (rows - y) ** 2 <= radius**2


def main(argv=None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print(__doc__, file=sys.stderr)
        return 2
    spec = load_dataset(args[0])
    records = [r for r in spec.split("train") if r.mask is not None]
    labels = spec.label_ids(records)
    classes = len(spec.mask_class_names)
    with_nodule, without = [], []
    for r in records:
        mask = load_mask(r.mask, r.mask_map)
        mask = np.where(mask == MISSING_MASK, 0, mask)
        without.append(mask_descriptor(mask, classes))
        x, y, size = (r.extra.get(c, "") for c in ("x_256", "y_256", "size_mm"))
        if x and y and size:
            scale = mask.shape[0] / 256
            disc = nodule_disc(mask.shape, float(x) * scale, float(y) * scale, float(size) * scale)
            mask = np.where(disc, classes, mask)
        with_nodule.append(mask_descriptor(mask, classes + 1))
    for name, descriptors in (("lungs, heart", without), ("lungs, heart, nodule", with_nodule)):
        score, chance = leave_one_out_signal(np.stack(descriptors), labels)
        skill = (score - chance) / (1 - chance)
        print(f"{spec.name} masks ({name}): mAP@10 {score:.3f}, chance {chance:.3f}, "
              f"skill {skill:.2f}, {len(records)} train images")  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
