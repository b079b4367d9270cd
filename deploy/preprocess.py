"""Image decoding and preparation shared by training, export and the device runtime.

numpy + Pillow only (no TensorFlow): the device runtime and the workstation must turn
the same file into the same model input, bit for bit, so there is exactly one copy of
these rules. The exported ``encoder.json`` describes them for hosts in other languages:

* decode: grey stays 1 channel, colour becomes RGB; alpha is dropped (no compositing);
  16-bit grey maps to 8-bit by ``round(v / 257)``;
* resize: Pillow ``Image.resize(..., BILINEAR)`` to the square model size (no aspect
  keeping; Pillow widens the kernel when shrinking, i.e. antialiases);
* channels: grey -> RGB replicates; RGB -> grey is ITU-R BT.601 luma, rounded.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

LUMA_WEIGHTS = np.array([0.299, 0.587, 0.114])  # ITU-R BT.601
GREY_MODES = ("1", "L", "LA", "I", "I;16", "I;16B", "I;16L")


class ImageError(ValueError):
    """An image file is missing, unreadable or of an unsupported kind."""


def open_image(path: Path, what: str) -> Image.Image:
    if not Path(path).is_file():
        raise ImageError(f"{what} file not found: {path}")
    try:
        img = Image.open(path)
        img.load()
    except Exception as e:  # Pillow raises OSError, SyntaxError, ValueError, zlib errors
        raise ImageError(f"cannot read {what} {path}: {e}") from e
    return img


def load_image(path: str | Path) -> np.ndarray:
    """Reads an image as uint8 (H, W, C) with C = 1 (grey) or 3 (colour).

    Conversions: RGBA -> RGB and LA -> L drop alpha (no compositing); palette and other
    colour modes -> RGB; 1-bit -> 0/255; 16-bit grey -> 8-bit by ``round(v / 257)``, which
    maps 0..65535 linearly onto 0..255 (257 * 255 = 65535). Pillow itself reduces 16-bit
    RGB PNGs to their high byte.

    Raises:
        ImageError: naming the file, when it is missing, truncated or not an image.
    """
    img = open_image(Path(path), "image")
    if img.mode in ("I", "I;16", "I;16B", "I;16L"):
        arr = np.asarray(img).astype(np.int64)
        arr = np.clip(np.floor(arr / 257.0 + 0.5), 0, 255).astype(np.uint8)
        return arr[..., None]
    if img.mode in GREY_MODES:
        return np.asarray(img.convert("L"))[..., None]
    if img.mode not in ("RGB", "RGBA", "P", "PA", "CMYK", "YCbCr", "LAB", "HSV", "RGBX"):
        raise ImageError(f"cannot read image {path}: unsupported mode {img.mode!r}")
    return np.asarray(img.convert("RGB"))


def convert_channels(image: np.ndarray, channels: int) -> np.ndarray:
    """uint8 (H, W, C) with C in {1, 3} -> (H, W, channels)."""
    if channels not in (1, 3):
        raise ValueError(f"channels must be 1 or 3, got {channels}")
    have = image.shape[-1]
    if have == channels:
        return image
    if have == 1:
        return np.repeat(image, 3, axis=-1)
    # Element by element in a fixed order, (R*wr + G*wg) + B*wb in float64, so any host
    # reproduces it exactly (a BLAS dot product may round differently per kernel).
    rgb = image[..., :3].astype(np.float64)
    wr, wg, wb = LUMA_WEIGHTS
    luma = rgb[..., 0] * wr + rgb[..., 1] * wg + rgb[..., 2] * wb
    return np.clip(np.rint(luma), 0, 255).astype(np.uint8)[..., None]


def prepare_image(image: np.ndarray, image_size: int, channels: int) -> np.ndarray:
    """uint8 (H, W, C) -> uint8 (image_size, image_size, channels); bilinear, antialiased."""
    if image.shape[:2] != (image_size, image_size):
        pil = Image.fromarray(image[..., 0] if image.shape[-1] == 1 else image)
        # Pillow widens the bilinear kernel when shrinking, i.e. it antialiases.
        resized = np.asarray(pil.resize((image_size, image_size), Image.BILINEAR))
        image = resized.reshape(image_size, image_size, image.shape[-1])
    return convert_channels(image, channels)
