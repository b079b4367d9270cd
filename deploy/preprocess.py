"""Image decoding and preparation shared by training, export and the device runtime.

numpy + Pillow only (no TensorFlow; pydicom only for DICOM files, imported when one is
read): the device runtime and the workstation must turn the same file into the same
model input, bit for bit, so there is exactly one copy of these rules. The exported
``encoder.json`` describes them for hosts in other languages:

* decode: grey stays 1 channel, colour becomes RGB; alpha is dropped (no compositing);
  16-bit grey maps to 8-bit by ``round(v / 257)``; DICOM goes through its modality and
  VOI LUT (or window) to 0..255, MONOCHROME1 inverted (:mod:`deploy.dicom`);
* refused, with a one-line :class:`ImageError` naming the file: missing, empty,
  truncated or unknown files, more than ``MAX_PIXELS`` pixels (checked from the header,
  before decoding), a side under ``MIN_SIDE``, float images with NaN or infinity;
* resize: Pillow ``Image.resize(..., BILINEAR)`` to the square model size (no aspect
  keeping; Pillow widens the kernel when shrinking, i.e. antialiases);
* channels: grey -> RGB replicates; RGB -> grey is ITU-R BT.601 luma, rounded.
"""

from __future__ import annotations

import re
import warnings
from pathlib import Path

import numpy as np
from PIL import Image

LUMA_WEIGHTS = np.array([0.299, 0.587, 0.114])  # ITU-R BT.601
GREY_MODES = ("1", "L", "LA", "I", "I;16", "I;16B", "I;16L")
COLOUR_MODES = ("RGB", "RGBA", "P", "PA", "CMYK", "YCbCr", "LAB", "HSV", "RGBX")
# 8192 x 8192: far above any radiograph or fundus photo, below Pillow's own bomb limit,
# and small enough that decoding plus conversion stays within a device's memory.
MAX_PIXELS = 8192 * 8192
# Smaller images carry no anatomy the model can use; they are almost always icons,
# thumbnails or broken exports, better refused than silently upscaled.
MIN_SIDE = 8


class ImageError(ValueError):
    """An image file is missing, unreadable or of an unsupported kind.

    The message is always one line (line breaks in it become spaces), so a log or a
    failure list shows one row per bad file.
    """

    def __init__(self, message: str):
        super().__init__(re.sub(r"\s*[\r\n]+\s*", " ", str(message)).strip())


def check_size(path: Path, width: int, height: int, what: str, min_side: int = MIN_SIDE):
    """Refuses an image of more than ``MAX_PIXELS`` pixels or a side under ``min_side``.

    Called with the size from the file header, before the pixels are decoded.
    """
    if width * height > MAX_PIXELS:
        raise ImageError(
            f"cannot read {what} {path}: {width}x{height} pixels is over the limit of "
            f"{MAX_PIXELS} pixels (refused as a possible decompression bomb)"
        )
    if min(width, height) < min_side:
        raise ImageError(
            f"cannot read {what} {path}: {width}x{height} pixels is smaller than the "
            f"minimum side of {min_side} pixels"
        )


def open_image(path: Path, what: str, frame: int | None = None, min_side: int = 1) -> Image.Image:
    """Opens and decodes an image file with Pillow, checking its size from the header.

    Args:
        path: the file.
        what: its role in messages (``"image"``, ``"mask"``).
        frame: frame of a multi-frame file (GIF, TIFF) to load; None loads the first.
        min_side: the smallest accepted width and height.

    Raises:
        ImageError: one line naming the file.
    """
    path = Path(path)
    if not path.is_file():
        raise ImageError(f"{what} file not found: {path}")
    if path.stat().st_size == 0:
        raise ImageError(f"cannot read {what} {path}: the file is empty")
    try:
        # Pillow only warns between its limit and twice it; a warning is refused too.
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img = Image.open(path)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise ImageError(f"cannot read {what} {path}: decompression bomb: {e}") from None
    except Image.UnidentifiedImageError:
        raise ImageError(f"cannot read {what} {path}: not a recognised image format") from None
    except Exception as e:  # Pillow raises OSError, SyntaxError, ValueError, struct errors
        raise ImageError(f"cannot read {what} {path}: {e}") from None
    if frame is not None:
        frames = getattr(img, "n_frames", 1)
        if not 0 <= frame < frames:
            raise ImageError(
                f"cannot read {what} {path}: frame {frame} out of range: the file has "
                f"{frames} frame(s)"
            )
    try:
        if frame:
            img.seek(frame)
        check_size(path, img.width, img.height, what, min_side)  # before decoding
        img.load()
    except ImageError:
        raise
    except Exception as e:  # truncated data, bad CRCs, zlib errors
        raise ImageError(f"cannot read {what} {path}: {e}") from None
    return img


def load_image(path: str | Path, frame: int | None = None, us_region: bool = False) -> np.ndarray:
    """Reads an image as uint8 (H, W, C) with C = 1 (grey) or 3 (colour).

    Conversions: RGBA -> RGB and LA -> L drop alpha (no compositing); palette and other
    colour modes -> RGB; 1-bit -> 0/255; 16-bit grey -> 8-bit by ``round(v / 257)``, which
    maps 0..65535 linearly onto 0..255 (257 * 255 = 65535). Pillow itself reduces 16-bit
    RGB PNGs to their high byte. 32-bit float images are not supported.

    DICOM (``DICM`` at byte 128, or a ``.dcm``/``.dicom`` name; needs pydicom): stored
    values -> modality LUT (``s * RescaleSlope + RescaleIntercept``) -> VOI LUT, or the
    first window (LINEAR: ``((m - (c - 0.5)) / (w - 1) + 0.5) * 255``, clipped), or else
    the full ``min..max`` of the modality values linearly onto 0..255 -> rounded half up
    (``floor(y + 0.5)``) -> MONOCHROME1 inverted (``255 - v``). 8-bit RGB DICOM stays
    RGB; YBR colour and palette colour become RGB. :mod:`deploy.dicom` gives every case.

    Args:
        path: the image file.
        frame: 0-based frame of a multi-frame file; required for multi-frame DICOM.
        us_region: a DICOM declaring ultrasound regions is cropped to the one of
            :mod:`deploy.ultrasound`; other files are not affected.

    Raises:
        ImageError: one line naming the file, when it is missing, empty, truncated, not
            an image, too large (over ``MAX_PIXELS``) or too small (a side under
            ``MIN_SIDE``), holds NaN/infinite floats, or is of an unsupported kind.
    """
    path = Path(path)
    if frame is not None and (isinstance(frame, bool) or not isinstance(frame, int | np.integer)):
        raise ImageError(f"cannot read image {path}: frame must be an integer, got {frame!r}")
    frame = None if frame is None else int(frame)
    if not path.is_file():
        raise ImageError(f"image file not found: {path}")
    if path.stat().st_size == 0:
        raise ImageError(f"cannot read image {path}: the file is empty")
    from deploy import dicom  # here, not at the top: deploy.dicom imports this module

    if dicom.is_dicom(path):
        return dicom.read_dicom(path, frame, us_region)
    img = open_image(path, "image", frame, min_side=MIN_SIDE)
    try:
        return _pillow_to_array(img, path)
    except ImageError:
        raise
    except Exception as e:  # a conversion Pillow cannot do for this particular file
        raise ImageError(f"cannot read image {path}: {e}") from None


_STRIP_PIXELS = 1 << 20  # pixels per strip of the 16-bit conversion (8 MiB of int64)


def _sixteen_to_eight(img: Image.Image) -> np.ndarray:
    """16-bit (or 32-bit integer) grey -> uint8 (H, W): ``floor(v / 257 + 0.5)``, clipped.

    Computed as ``floor((2 v + 257) / 514)`` in integers, which is the same number:
    ``(2 v + 257) / 514`` is never a whole number (odd over even), and no float error
    reaches the distance 1/514 to the next one. Done a strip of rows at a time, so an
    8192 x 8192 image needs its 8-bit result and one small strip, not 4 GiB of float64.
    """
    width, height = img.size
    out = np.empty((height, width), np.uint8)
    rows = max(1, _STRIP_PIXELS // max(width, 1))
    for top in range(0, height, rows):
        strip = np.asarray(img.crop((0, top, width, min(top + rows, height))), np.int64)
        out[top : top + rows] = np.clip(np.floor_divide(2 * strip + 257, 514), 0, 255)
    return out


def _pillow_to_array(img: Image.Image, path: Path) -> np.ndarray:
    if img.mode in ("I", "I;16", "I;16B", "I;16L"):
        return _sixteen_to_eight(img)[..., None]
    if img.mode in GREY_MODES:
        return np.asarray(img.convert("L"))[..., None]
    if img.mode == "F":
        if not np.isfinite(np.asarray(img)).all():
            raise ImageError(f"cannot read image {path}: float pixels include NaN or infinity")
        raise ImageError(
            f"cannot read image {path}: 32-bit float images are not supported; save it as "
            "8- or 16-bit"
        )
    if img.mode not in COLOUR_MODES:
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


def load_prepared(
    path: str | Path,
    image_size: int,
    channels: int,
    frame: int | None = None,
    us_region: bool = False,
) -> np.ndarray:
    """``prepare_image(load_image(path, frame, us_region), image_size, channels)``, with
    less memory.

    The same bytes out (the tests compare the two), but no full-size copy is made that
    the decoded image does not need: 16-bit grey is converted a strip at a time, grey is
    resized straight from the decoded image, and colour is resized one band at a time
    (Pillow's bilinear resize treats every band alike, so bands resized apart equal the
    bands of the RGB resize). An image at the ``MAX_PIXELS`` limit then peaks near its
    decoded size (8192 x 8192 16-bit grey: 128 MiB, 8000 x 8000 RGB: 244 MiB, which
    Pillow stores at 4 bytes a pixel) instead of four to eight times it
    (``bench/bench_decode_memory.py``). Nothing is reduced before the final resize, so
    the rules of ``encoder.json`` hold for every size.

    Raises:
        ImageError: as :func:`load_image`.
    """
    path = Path(path)
    if not path.is_file() or path.stat().st_size == 0:
        return prepare_image(load_image(path, frame), image_size, channels)  # its errors
    from deploy import dicom

    if dicom.is_dicom(path) or (frame is not None and type(frame) is not int):
        return prepare_image(load_image(path, frame, us_region), image_size, channels)
    img = open_image(path, "image", frame, min_side=MIN_SIDE)
    try:
        if img.mode in ("I", "I;16", "I;16B", "I;16L"):
            img = Image.fromarray(_sixteen_to_eight(img))
        if img.mode in GREY_MODES:
            grey = img if img.mode == "L" else img.convert("L")
            return convert_channels(_fit(grey, image_size)[..., None], channels)
        if img.mode in COLOUR_MODES:
            rgb = img if img.mode == "RGB" else img.convert("RGB")
            del img  # a converted copy replaces the decoded image
            # One full-size band at a time: each is dropped before the next is made.
            arrays = [_fit(rgb.getchannel(i), image_size) for i in range(3)]
            return convert_channels(np.stack(arrays, axis=-1), channels)
        # float and unknown modes: refused, with load_image's messages
        return prepare_image(_pillow_to_array(img, path), image_size, channels)
    except ImageError:
        raise
    except Exception as e:  # a conversion Pillow cannot do for this particular file
        raise ImageError(f"cannot read image {path}: {e}") from None


def _fit(band: Image.Image, image_size: int) -> np.ndarray:
    """One band as uint8 (S, S), resized only when it is not S x S (as prepare_image)."""
    if band.size == (image_size, image_size):
        return np.asarray(band)
    # Pillow widens the bilinear kernel when shrinking, i.e. it antialiases.
    return np.asarray(band.resize((image_size, image_size), Image.BILINEAR))


def prepare_image(image: np.ndarray, image_size: int, channels: int) -> np.ndarray:
    """uint8 (H, W, C) -> uint8 (image_size, image_size, channels); bilinear, antialiased."""
    if image.shape[:2] != (image_size, image_size):
        pil = Image.fromarray(image[..., 0] if image.shape[-1] == 1 else image)
        # Pillow widens the bilinear kernel when shrinking, i.e. it antialiases.
        resized = np.asarray(pil.resize((image_size, image_size), Image.BILINEAR))
        image = resized.reshape(image_size, image_size, image.shape[-1])
    return convert_channels(image, channels)
