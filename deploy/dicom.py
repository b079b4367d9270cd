"""DICOM files -> uint8 images, for :func:`deploy.preprocess.load_image`.

pydicom is imported only when a DICOM file is read, so a device that never sees one does
not need it. Conversion of a grey image (SamplesPerPixel 1, MONOCHROME1 or MONOCHROME2,
8/12/16/32-bit stored values, signed or unsigned, or float pixel data), all in float64:

1. stored values ``s`` as pydicom decodes them (bits above BitsStored masked off, signed
   values sign-extended).
2. modality LUT (pydicom ``apply_modality_lut``): ``m = s * RescaleSlope +
   RescaleIntercept`` when both are present, else the first Modality LUT Sequence item,
   else ``m = s``. NaN or infinity in ``m`` is refused.
3. VOI, giving ``y`` in 0..255, the first of these present:

   * VOI LUT Sequence (first item; descriptor ``[n, first, depth]``, ``n = 0`` meaning
     65536): ``i = clip(floor(m + 0.5) - first, 0, n - 1)``,
     ``y = LUTData[i] * 255 / (2 ** depth - 1)``;
   * WindowCenter ``c`` / WindowWidth ``w`` (the first value of each if several), by
     VOILUTFunction (DICOM PS3.3 C.11.2.1.2-3 with output range 0..255):
     LINEAR (default; needs ``w >= 1``): ``c1 = c - 0.5``, ``w1 = w - 1``;
     ``y = 0`` if ``m <= c1 - w1 / 2``, ``255`` if ``m > c1 + w1 / 2``, else
     ``((m - c1) / w1 + 0.5) * 255``. LINEAR_EXACT (``w > 0``): the same with ``c1 = c``,
     ``w1 = w``. SIGMOID (``w > 0``): ``y = 255 / (1 + exp(-4 * (m - c) / w))``;
   * otherwise the full range of ``m``: ``y = (m - min(m)) * 255 / (max(m) - min(m))``,
     ``y = 0`` everywhere when ``max(m) == min(m)``.
4. ``v = clip(floor(y + 0.5), 0, 255)`` as uint8 (rounding half up).
5. MONOCHROME1 (low values bright): ``v = 255 - v``.

Colour, 8 bits allocated, to RGB with pydicom's own conversion (``pydicom.pixels``):

* RGB: the stored values unchanged (no LUTs apply to colour);
* YBR_FULL and YBR_FULL_422 (ultrasound, and every colour JPEG): pydicom decodes to
  YCbCr (a YBR_FULL_422 native file has each Cb/Cr sample repeated for its two pixels;
  JPEG is decoded without the codec's own colour conversion) and converts by
  ``convert_color_space(arr, "YBR_FULL", "RGB")`` (DICOM PS3.3 C.7.6.3.1.2, float32):
  ``R = Y + 1.402 (Cr - 128)``, ``G = Y - 0.114 * 1.772 / 0.587 (Cb - 128) - 0.299 *
  1.402 / 0.587 (Cr - 128)``, ``B = Y + 1.772 (Cb - 128)``, then ``clip(floor(x + 0.5),
  0, 255)``;
* YBR_ICT / YBR_RCT (JPEG 2000 only): the codec's inverse transform gives RGB;
* PALETTE COLOR: ``apply_color_lut``; 16-bit palette entries keep their high byte
  (``v >> 8``), as 16-bit colour elsewhere in the contract.

Other photometric interpretations and colour of more than 8 bits are refused. The grey or
RGB image then goes through the contract's channel rule like any other image.
Why not all of pydicom's LUT helpers: ``apply_windowing`` maps onto the modality's
output range (from BitsStored and the rescale), and scaling that back to 0..255 adds a
float round trip that hosts in other languages cannot repeat bit for bit; and
``apply_voi`` (pydicom 3.0.2) indexes an 8-bit LUT through a uint8 array, so a LUT of
more than 256 entries wraps around. Both steps are written out here instead.

A multi-frame file needs an explicit ``frame`` (0-based; :mod:`deploy.cine` chooses one
for ``index build/add``). Compressed transfer syntaxes are decoded when a pydicom plugin
for them is installed (:mod:`deploy.dicom_codecs`); the others give an error naming the
transfer syntax and what to install. ``us_region=True`` crops to the declared ultrasound
region (:mod:`deploy.ultrasound`) after the colour conversion.
"""

from __future__ import annotations

import importlib
import math
import warnings
from pathlib import Path

import numpy as np

from deploy import dicom_codecs, ultrasound
from deploy.preprocess import ImageError, check_size

SUFFIXES = (".dcm", ".dicom")
MAGIC_OFFSET, MAGIC = 128, b"DICM"
GREY = ("MONOCHROME1", "MONOCHROME2")
PALETTE = "PALETTE COLOR"
# Three-sample colour spaces pydicom turns into RGB; YBR_ICT / YBR_RCT only inside
# JPEG 2000, whose codec applies the inverse transform.
COLOUR = ("RGB", "YBR_FULL", "YBR_FULL_422")
JPEG2000_COLOUR = ("YBR_ICT", "YBR_RCT")
PIXEL_ELEMENTS = ("PixelData", "FloatPixelData", "DoubleFloatPixelData")


def is_dicom(path: Path) -> bool:
    """True for a ``.dcm``/``.dicom`` file or one with ``DICM`` at byte 128."""
    if Path(path).suffix.lower() in SUFFIXES:
        return True
    try:
        with open(path, "rb") as f:
            head = f.read(MAGIC_OFFSET + len(MAGIC))
    except OSError:
        return False
    return head[MAGIC_OFFSET:] == MAGIC


def read_dicom(path: Path, frame: int | None = None, us_region: bool = False) -> np.ndarray:
    """Reads a DICOM file as uint8 (H, W, 1) grey or (H, W, 3) RGB; see the module doc.

    Args:
        path: the file.
        frame: 0-based frame of a multi-frame file; None for a single-frame file.
        us_region: crop to the declared ultrasound region (:mod:`deploy.ultrasound`).

    Raises:
        ImageError: one line naming the file: pydicom missing, not readable, unsupported
            kind, compressed without a decoder, too large or small, multi-frame without a
            frame, frame out of range, or NaN/infinite values.
    """
    try:
        pydicom = importlib.import_module("pydicom")
        pixels = importlib.import_module("pydicom.pixels")
    except ImportError:
        raise ImageError(f"pip install pydicom is needed to read DICOM {path}") from None

    def fail(problem: str) -> ImageError:
        return ImageError(f"cannot read DICOM {path}: {problem}")

    # pydicom warns about odd but readable elements; the outcome here is either a checked
    # array or an ImageError, so the warnings would only be noise on the device.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            ds = pydicom.dcmread(path, force=True)
            ts = _transfer_syntax(ds, pydicom, pixels, fail)
            index = _check_header(ds, path, frame, ts, fail)
            region = None
            if us_region:
                region = ultrasound.choose_region(ds, int(ds.Rows), int(ds.Columns), fail)
            # as_rgb: pydicom converts YBR_FULL / YBR_FULL_422 with convert_color_space.
            ds.pixel_array_options(index=index, as_rgb=True)
            try:
                stored = np.asarray(ds.pixel_array)
            except Exception as e:
                raise fail(f"cannot decode the pixel data ({ts.name}, {ts}): {e}") from None
            image = _to_uint8(stored, ds, pixels, fail)
            if region is not None:
                x0, y0, x1, y1 = region
                image = np.ascontiguousarray(image[y0 : y1 + 1, x0 : x1 + 1])
                check_size(path, image.shape[1], image.shape[0], "DICOM ultrasound region")
            return image
        except ImageError:
            raise
        except Exception as e:  # pydicom raises many kinds on damaged files
            raise fail(f"{type(e).__name__}: {e}") from None


def _to_uint8(stored: np.ndarray, ds, pixels, fail) -> np.ndarray:
    """Decoded pixels (H, W) or (H, W, 3) -> uint8 (H, W, 1) grey or (H, W, 3) RGB."""
    if stored.ndim == 3:  # colour, already RGB (pydicom converted YBR)
        return np.ascontiguousarray(stored, np.uint8)
    if str(ds.PhotometricInterpretation).strip() == PALETTE:
        rgb = np.asarray(pixels.apply_color_lut(stored, ds))
        if rgb.dtype.itemsize == 2:
            rgb = rgb >> 8  # 16-bit palette entries: the high byte
        return np.ascontiguousarray(rgb, np.uint8)
    return _grey_to_uint8(stored, ds, pixels, fail)[..., None]


def _check_header(ds, path: Path, frame: int | None, ts, fail) -> int | None:
    """Checks the image module before any decoding; returns pydicom's frame index."""
    element = next((name for name in PIXEL_ELEMENTS if name in ds), None)
    if element is None or "Rows" not in ds or "Columns" not in ds:
        raise fail("no image in the file (no pixel data, Rows or Columns)")
    rows, cols = int(ds.Rows), int(ds.Columns)
    samples = int(ds.get("SamplesPerPixel", 1))
    photometric = str(ds.get("PhotometricInterpretation", "")).strip()
    bits = int(ds.get("BitsAllocated", 0))
    if samples == 1 and photometric not in (*GREY, PALETTE):
        raise fail(
            f"PhotometricInterpretation {photometric!r} is not supported for 1 sample per "
            f"pixel ({', '.join((*GREY, PALETTE))} are)"
        )
    colour = COLOUR + (JPEG2000_COLOUR if "2000" in ts.name else ())
    if samples == 3 and photometric not in colour:
        raise fail(
            f"PhotometricInterpretation {photometric!r} is not supported for 3 samples per "
            f"pixel ({', '.join(colour)} are)"
        )
    if samples == 3 and bits != 8:
        raise fail(f"{bits}-bit colour is not supported (8-bit colour only)")
    if samples not in (1, 3):
        raise fail(f"SamplesPerPixel {samples} is not supported (1 or 3)")
    check_size(path, cols, rows, "DICOM")
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    if frame is None:
        if frames > 1:
            raise fail(
                f"multi-frame file with {frames} frames; choose one with frame=0..{frames - 1} (--frame)"
            )
        index = None
    elif not 0 <= frame < frames:
        raise fail(f"frame {frame} out of range: the file has {frames} frame(s)")
    else:
        index = frame
    if not ts.is_compressed and bits % 8 == 0:
        # YBR_FULL_422 stores two samples a pixel (Y Y Cb Cr for two pixels).
        per_pixel = 2 if photometric == "YBR_FULL_422" else samples
        need = rows * cols * per_pixel * (bits // 8) * frames
        have = len(ds[element].value or b"")
        if have < need:
            raise fail(f"truncated: pixel data has {have} bytes, {need} expected")
    return index


def _transfer_syntax(ds, pydicom, pixels, fail):
    """The transfer syntax, guessed for a file without meta; refused if undecodable."""
    uid = pydicom.uid
    if not hasattr(ds, "file_meta") or ds.file_meta is None:
        ds.file_meta = pydicom.dataset.FileMetaDataset()
    if "TransferSyntaxUID" not in ds.file_meta:
        # A bare dataset (no preamble, no meta) read by force: use its detected encoding.
        implicit, little = ds.original_encoding
        if little is False:
            raise fail("big-endian data without a transfer syntax is not supported")
        ts = uid.ImplicitVRLittleEndian if implicit else uid.ExplicitVRLittleEndian
        ds.file_meta.TransferSyntaxUID = ts
    ts = ds.file_meta.TransferSyntaxUID
    if not ts.is_transfer_syntax:
        raise fail(f"unknown transfer syntax {str(ts)!r}")
    dicom_codecs.check_decodable(ts, pixels, fail)
    return ts


def _grey_to_uint8(stored: np.ndarray, ds, pixels, fail) -> np.ndarray:
    """Stored grey values (H, W) -> uint8 (H, W) by steps 2-5 of the module doc."""
    if np.issubdtype(stored.dtype, np.integer):
        stored = stored.astype(np.int64)  # room for LUT index arithmetic in pydicom
    m = np.asarray(pixels.apply_modality_lut(stored, ds), np.float64)
    if not np.isfinite(m).all():
        raise fail("pixel values include NaN or infinity")
    voi_lut = ds.get("VOILUTSequence")
    if voi_lut:
        y = _voi_lut(m, voi_lut[0], ds)
    elif "WindowCenter" in ds and "WindowWidth" in ds:
        y = _window(m, _first(ds["WindowCenter"]), _first(ds["WindowWidth"]), ds, fail)
    else:
        lo, hi = float(m.min()), float(m.max())
        y = (m - lo) * 255.0 / (hi - lo) if hi > lo else np.zeros_like(m)
    v = np.clip(np.floor(y + 0.5), 0, 255).astype(np.uint8)
    if str(ds.PhotometricInterpretation).strip() == "MONOCHROME1":
        v = 255 - v
    return v


def _first(element) -> float:
    value = element.value
    return float(value[0] if element.VM > 1 else value)


def _voi_lut(m: np.ndarray, item, ds) -> np.ndarray:
    count, first, depth = (int(v) for v in item.LUTDescriptor)
    count = count or 65536
    data = item.LUTData
    if isinstance(data, bytes):  # VR OW: 16-bit words in the file's byte order
        little = ds.original_encoding[1] is not False
        lut = np.frombuffer(data, "<u2" if little else ">u2")
    else:
        lut = np.atleast_1d(np.asarray(data, np.int64))
    if len(lut) < count or not 1 <= depth <= 16:
        raise ValueError(f"VOI LUT descriptor {[count, first, depth]} does not fit its data")
    index = np.clip(np.floor(m + 0.5) - first, 0, count - 1).astype(np.int64)
    return lut[index].astype(np.float64) * 255.0 / (2**depth - 1)


def _window(m: np.ndarray, c: float, w: float, ds, fail) -> np.ndarray:
    function = str(ds.get("VOILUTFunction", "LINEAR") or "LINEAR").strip().upper()
    if not (math.isfinite(c) and math.isfinite(w)):
        raise fail(f"window center/width {c}/{w} not finite")
    if function == "SIGMOID":
        if w <= 0:
            raise fail(f"window width {w} must be > 0 for SIGMOID")
        with np.errstate(over="ignore"):  # exp overflow -> inf -> 0, as intended
            return 255.0 / (1.0 + np.exp(-4.0 * (m - c) / w))
    if function == "LINEAR":
        if w < 1:
            raise fail(f"window width {w} must be >= 1 for LINEAR windowing")
        c1, w1 = c - 0.5, w - 1.0
    elif function == "LINEAR_EXACT":
        if w <= 0:
            raise fail(f"window width {w} must be > 0 for LINEAR_EXACT windowing")
        c1, w1 = c, w
    else:
        raise fail(f"VOILUTFunction {function!r} is not supported")
    low, high = c1 - w1 / 2, c1 + w1 / 2
    y = np.where(m > high, 255.0, 0.0)
    inside = (m > low) & (m <= high)  # empty when w1 == 0, so no division by zero
    y[inside] = ((m[inside] - c1) / w1 + 0.5) * 255.0
    return y
