"""Mask files: reading label masks and translating stored values to mask classes.

A mask is a label image: pixel value = mask class index. Two other forms are read too:
binary masks stored as 0 / 255 (the form of most public segmentation sets: BUSI, ISIC,
Kvasir-SEG), read as background / foreground, and any stored values that dataset.json
maps to classes (``"mask_values": {"0": "background", "255": "lesion"}``). A translation
is a tuple of (stored value, class index) pairs; empty means the values are the indices.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from deploy import preprocess
from keras_ynet.dataset_csv import DatasetError

# The mask value of "no mask for this row": its pixels are left out of the segmentation
# loss. Mask classes are indices 0..254, so it never names a class.
MISSING_MASK = 255
# Binary masks stored as 0 / 255: background / foreground.
BINARY_MASK_VALUES = (0, 255)
BINARY_MASK_CLASSES = ("background", "foreground")


def _open(path: Path):
    try:
        return preprocess.open_image(path, "mask")
    except preprocess.ImageError as e:
        raise DatasetError(str(e)) from None


def load_mask(path: str | Path, mask_map: tuple[tuple[int, int], ...] = ()) -> np.ndarray:
    """Reads a label mask as uint8 (H, W); pixel value = mask class index.

    With ``mask_map`` ((stored value, class index) pairs) the stored values are
    translated; a value the map does not name is an error naming the file.

    Grey and palette PNGs give their stored values (a palette index is the label, as in
    VOC-style masks); 1-bit masks give 0/1; 16-bit masks must hold values below 256 (labels
    are never rescaled); a colour mask must be grey (R == G == B).

    Raises:
        DatasetError: naming the file, when it is missing, unreadable or not a label image.
    """
    mask = _load_mask_values(Path(path))
    if not mask_map:
        return mask
    lut = np.full(256, -1, np.int16)
    for value, index in mask_map:
        lut[value] = index
    mapped = lut[mask]
    if (mapped < 0).any():
        bad = sorted(int(v) for v in np.unique(mask[mapped < 0]))[:8]
        named = sorted(v for v, _ in mask_map)
        raise DatasetError(f"mask {path}: values {bad} are not among the mapped values {named}")
    return mapped.astype(np.uint8)


def _load_mask_values(path: Path) -> np.ndarray:
    img = _open(path)
    if img.mode in ("L", "P", "1"):
        return np.asarray(img).astype(np.uint8)
    if img.mode in ("LA", "PA"):
        return np.asarray(img)[..., 0].astype(np.uint8)
    arr = np.asarray(img)
    if img.mode in ("I;16", "I;16B", "I;16L", "I"):
        if arr.size and (arr.max() > 255 or arr.min() < 0):
            raise DatasetError(f"mask {path}: 16-bit values up to {arr.max()} are not labels")
        return arr.astype(np.uint8)
    if img.mode in ("RGB", "RGBA"):
        rgb = arr[..., :3]
        if not (
            np.array_equal(rgb[..., 0], rgb[..., 1]) and np.array_equal(rgb[..., 0], rgb[..., 2])
        ):
            raise DatasetError(f"mask {path}: colour mask; store class indices in a grey PNG")
        return rgb[..., 0].copy()
    raise DatasetError(f"mask {path}: unsupported mode {img.mode!r}")


def mapped_class_names(values: dict[str, str]) -> list[str]:
    """The classes named by ``mask_values``, in the order of their smallest stored value."""
    names: list[str] = []
    for _, name in sorted((int(k), v) for k, v in values.items()):
        if name not in names:
            names.append(name)
    return names


def declared_mask_map(meta: dict, declared, problems: list[str], path: Path):
    """(stored value, class index) pairs from dataset.json ``mask_values``, or ()."""
    values = meta.get("mask_values")
    if not values:
        return ()
    names = list(declared) if declared is not None else mapped_class_names(values)
    unknown = sorted({v for v in values.values() if v not in names})
    if unknown:
        problems.append(f"{path}: mask_values name classes {unknown} not in mask_classes {names}")
        return ()
    if len(names) >= MISSING_MASK:
        problems.append(f"{path}: {len(names)} mask classes; at most {MISSING_MASK - 1}")
        return ()
    return tuple(sorted((int(k), names.index(v)) for k, v in values.items()))
