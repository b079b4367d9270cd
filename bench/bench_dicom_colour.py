"""How far colour DICOM decoding lands from the source colours, and from libjpeg's own
colour conversion.

    python bench/bench_dicom_colour.py [--images 50]

1. Every one of the 2 ** 24 RGB colours through pydicom's ``convert_color_space`` to
   YBR_FULL and back (what a YBR_FULL file made from RGB gives on decoding): the largest
   per-channel error and the share of colours that come back exactly.
2. ``--images`` random smooth RGB fields (96 x 128) saved by Pillow as JPEG (4:2:2 chroma,
   qualities 75, 90, 95), wrapped as JPEG Baseline YBR_FULL_422 DICOM and read by
   :func:`deploy.preprocess.load_image` (pydicom: the codec's YCbCr, then
   ``convert_color_space``): the largest difference from Pillow's RGB decode of the same
   bytes (libjpeg's integer colour conversion) and from the source pixels.
"""

from __future__ import annotations

import argparse
import io
import sys
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def round_trip() -> tuple[int, float]:
    from pydicom.pixels import convert_color_space

    worst, exact, total = 0, 0, 0
    for red in range(256):
        g, b = np.meshgrid(np.arange(256), np.arange(256), indexing="ij")
        rgb = np.stack([np.full_like(g, red), g, b], -1).astype(np.uint8)
        back = convert_color_space(
            convert_color_space(rgb.copy(), "RGB", "YBR_FULL"), "YBR_FULL", "RGB"
        )
        error = np.abs(back.astype(np.int16) - rgb).max(-1)
        worst = max(worst, int(error.max()))
        exact += int((error == 0).sum())
        total += error.size
    return worst, exact / total


def smooth_field(rng, height=96, width=128) -> np.ndarray:
    layers = []
    for _ in range(3):
        grid = Image.fromarray((rng.random((5, 5)) * 255).astype(np.uint8))
        layers.append(np.asarray(grid.resize((width, height), Image.BICUBIC)))
    return np.stack(layers, -1)


def jpeg_case(folder: Path, rgb: np.ndarray, quality: int) -> tuple[int, int]:
    import pydicom
    from pydicom.encaps import encapsulate
    from pydicom.uid import JPEGBaseline8Bit

    from deploy.preprocess import load_image

    buffer = io.BytesIO()
    Image.fromarray(rgb).save(buffer, "JPEG", quality=quality, subsampling=1)
    data = buffer.getvalue()
    meta = pydicom.dataset.FileMetaDataset()
    meta.TransferSyntaxUID = JPEGBaseline8Bit
    meta.MediaStorageSOPClassUID = pydicom.uid.UltrasoundImageStorage
    meta.MediaStorageSOPInstanceUID = pydicom.uid.generate_uid()
    ds = pydicom.Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = (
        meta.MediaStorageSOPClassUID,
        meta.MediaStorageSOPInstanceUID,
    )
    ds.Rows, ds.Columns = rgb.shape[:2]
    ds.SamplesPerPixel, ds.PhotometricInterpretation, ds.PlanarConfiguration = 3, "YBR_FULL_422", 0
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
    ds.PixelData = encapsulate([data])
    ds["PixelData"].VR = "OB"
    path = folder / f"q{quality}.dcm"
    ds.save_as(path, enforce_file_format=True)
    decoded = load_image(path).astype(np.int16)
    libjpeg = np.asarray(Image.open(io.BytesIO(data)).convert("RGB"), np.int16)
    return int(np.abs(decoded - libjpeg).max()), int(np.abs(decoded - rgb).max())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=50)
    args = parser.parse_args()
    worst, exact = round_trip()
    print(
        f"RGB -> YBR_FULL -> RGB over all 2^24 colours: max error {worst}, exact {100 * exact:.2f}%"
    )
    rng = np.random.default_rng(0)
    fields = [smooth_field(rng) for _ in range(args.images)]
    with tempfile.TemporaryDirectory() as tmp:
        for quality in (75, 90, 95):
            results = [jpeg_case(Path(tmp), f, quality) for f in fields]
            vs_libjpeg = max(r[0] for r in results)
            vs_source = max(r[1] for r in results)
            print(
                f"JPEG baseline YBR_FULL_422 q{quality}, {args.images} images: max |pydicom - "
                f"libjpeg RGB| {vs_libjpeg}, max |decoded - source| {vs_source}"
            )


if __name__ == "__main__":
    main()
