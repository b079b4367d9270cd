"""Real ultrasound input: YBR and palette colour, compressed transfer syntaxes (RLE, JPEG
baseline, JPEG-LS), the decoder-missing error, and the ultrasound region crop.

Every file is made here with pydicom (and Pillow for the JPEG bytes) from a known source
image; the decoded pixels are compared exactly, or for lossy JPEG with the bound the
codec allows."""

from __future__ import annotations

import io

import numpy as np
import pydicom
import pytest
from PIL import Image
from pydicom.dataset import Dataset
from pydicom.encaps import encapsulate
from pydicom.pixels import convert_color_space
from pydicom.uid import (
    JPEGBaseline8Bit,
    JPEGLosslessSV1,
    JPEGLSLossless,
    RLELossless,
)
from test_image_formats import write_dicom

from deploy import ultrasound
from deploy.preprocess import ImageError, load_image, prepare_image


def known_rgb(height=16, width=24, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


def retag(path, **tags):
    """Rewrites tags of a DICOM file written by ``write_dicom``."""
    ds = pydicom.dcmread(path)
    for key, value in tags.items():
        setattr(ds, key, value)
    ds.save_as(path)
    return path


# YBR colour ------------------------------------------------------------------------------


def test_ybr_full_is_pydicoms_conversion_and_within_one_of_the_source(tmp_path):
    rgb = known_rgb()
    ybr = convert_color_space(rgb.copy(), "RGB", "YBR_FULL")
    path = retag(
        write_dicom(tmp_path / "ybr.dcm", ybr, "RGB"), PhotometricInterpretation="YBR_FULL"
    )
    image = load_image(path)
    np.testing.assert_array_equal(image, convert_color_space(ybr.copy(), "YBR_FULL", "RGB"))
    # Two roundings (RGB -> YBR -> RGB), each at most half a level per term.
    assert np.abs(image.astype(int) - rgb).max() == 1


def test_ybr_full_422_repeats_each_chroma_sample_for_its_pixel_pair(tmp_path):
    rgb = known_rgb(8, 12, seed=1)
    ybr = convert_color_space(rgb.copy(), "RGB", "YBR_FULL")
    # Native YBR_FULL_422: per pixel pair Y1 Y2 Cb Cr, the chroma of the first pixel.
    pairs = ybr.reshape(8, 6, 2, 3)
    stored = np.stack(
        [pairs[:, :, 0, 0], pairs[:, :, 1, 0], pairs[:, :, 0, 1], pairs[:, :, 0, 2]], -1
    )
    path = write_dicom(tmp_path / "ybr422.dcm", rgb, "RGB")  # header of an 8 x 12 RGB image
    ds = pydicom.dcmread(path)
    ds.PhotometricInterpretation = "YBR_FULL_422"
    ds.PixelData = stored.tobytes()
    ds.save_as(path)
    upsampled = ybr.copy()
    upsampled[:, 1::2, 1:] = ybr[:, 0::2, 1:]  # each odd pixel takes its pair's Cb, Cr
    expected = convert_color_space(upsampled, "YBR_FULL", "RGB")
    np.testing.assert_array_equal(load_image(path), expected)
    np.testing.assert_array_equal(load_image(path)[:, 0::2], load_image(path)[:, 0::2])
    # The even pixels keep their own chroma: within one level of the source.
    assert np.abs(load_image(path)[:, 0::2].astype(int) - rgb[:, 0::2]).max() == 1


def test_ybr_goes_to_grey_by_the_contracts_luma_rule(tmp_path):
    rgb = known_rgb(12, 12, seed=2)
    ybr = convert_color_space(rgb.copy(), "RGB", "YBR_FULL")
    path = retag(
        write_dicom(tmp_path / "ybr.dcm", ybr, "RGB"), PhotometricInterpretation="YBR_FULL"
    )
    as_rgb = convert_color_space(ybr.copy(), "YBR_FULL", "RGB")
    np.testing.assert_array_equal(
        prepare_image(load_image(path), 12, 1), prepare_image(as_rgb, 12, 1)
    )


def test_palette_colour_takes_the_lut_high_byte(tmp_path):
    # 16-bit palette entries: index i -> (257 * i, 65535 - 257 * i, 256 * 7 + 200)
    index = np.arange(64, dtype=np.uint8).reshape(8, 8)
    path = write_dicom(tmp_path / "palette.dcm", index, "PALETTE COLOR")
    ds = pydicom.dcmread(path)
    levels = np.arange(256, dtype=np.uint16)
    for colour, data in (
        ("Red", 257 * levels),
        ("Green", 65535 - 257 * levels),
        ("Blue", np.full(256, 256 * 7 + 200, np.uint16)),
    ):
        setattr(ds, f"{colour}PaletteColorLookupTableDescriptor", [256, 0, 16])
        ds[f"{colour}PaletteColorLookupTableDescriptor"].VR = "US"
        setattr(ds, f"{colour}PaletteColorLookupTableData", data.astype("<u2").tobytes())
    ds.save_as(path)
    i = index.astype(np.uint16)
    expected = np.stack([i, 255 - i, np.full_like(i, 7)], -1).astype(np.uint8)
    np.testing.assert_array_equal(load_image(path), expected)


@pytest.mark.parametrize(
    ("photometric", "message"),
    [
        ("YBR_PARTIAL_422", "'YBR_PARTIAL_422' is not supported for 3 samples per pixel"),
        ("YBR_ICT", "'YBR_ICT' is not supported for 3 samples per pixel"),  # not JPEG 2000
    ],
)
def test_other_colour_spaces_are_refused(tmp_path, photometric, message):
    path = retag(write_dicom(tmp_path / "c.dcm", known_rgb(), "RGB"),
                 PhotometricInterpretation=photometric)  # fmt: skip
    with pytest.raises(ImageError, match=message) as err:
        load_image(path)
    assert str(path) in str(err.value)


# Compressed transfer syntaxes ------------------------------------------------------------


def compressed(tmp_path, name, stored, syntax, photometric, **kwargs):
    path = write_dicom(tmp_path / name, stored, photometric)
    ds = pydicom.dcmread(path)
    ds.compress(syntax, stored, **kwargs)  # the header says `photometric` already
    ds.save_as(path)
    assert pydicom.dcmread(path).file_meta.TransferSyntaxUID == syntax
    return path


@pytest.mark.parametrize("syntax", [RLELossless, JPEGLSLossless], ids=["rle", "jpeg-ls"])
def test_lossless_compressed_grey_16_bit_decodes_exactly(tmp_path, syntax):
    stored = (np.arange(16 * 16, dtype=np.uint16).reshape(16, 16) * 64) % 4096
    path = compressed(tmp_path, "g.dcm", stored, syntax, "MONOCHROME2")
    retag(path, BitsStored=12, HighBit=11, WindowCenter=2048, WindowWidth=4096)
    # LINEAR, c1 = 2047.5, w1 = 4095: y = ((m - 2047.5) / 4095 + 0.5) * 255
    m = stored.astype(np.float64)
    expected = np.clip(np.floor(((m - 2047.5) / 4095 + 0.5) * 255 + 0.5), 0, 255)
    np.testing.assert_array_equal(load_image(path)[..., 0], expected.astype(np.uint8))


@pytest.mark.parametrize("syntax", [RLELossless, JPEGLSLossless], ids=["rle", "jpeg-ls"])
def test_lossless_compressed_rgb_decodes_exactly(tmp_path, syntax):
    rgb = known_rgb(10, 14, seed=3)
    path = compressed(tmp_path, "c.dcm", rgb, syntax, "RGB")
    np.testing.assert_array_equal(load_image(path), rgb)


def jpeg_dicom(path, image: Image.Image, photometric, **save):
    """A JPEG Baseline DICOM wrapping Pillow's JPEG bytes of ``image``."""
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", **save)
    array = np.asarray(image)
    write_dicom(path, array, "RGB" if array.ndim == 3 else "MONOCHROME2")
    ds = pydicom.dcmread(path)
    ds.file_meta.TransferSyntaxUID = JPEGBaseline8Bit
    ds.PhotometricInterpretation = photometric
    ds.PixelData = encapsulate([buffer.getvalue()])
    ds["PixelData"].VR = "OB"
    ds.save_as(path, enforce_file_format=True)
    return path, buffer.getvalue()


def test_jpeg_baseline_grey_equals_pillows_decode(tmp_path):
    grey = Image.fromarray(known_rgb(16, 16, seed=4)[..., 0])
    path, data = jpeg_dicom(tmp_path / "j.dcm", grey, "MONOCHROME2", quality=90)
    decoded = np.asarray(Image.open(io.BytesIO(data)))
    # No window, so the full min..max range of the decoded values maps onto 0..255.
    lo, hi = int(decoded.min()), int(decoded.max())
    expected = np.floor((decoded - lo) * 255.0 / (hi - lo) + 0.5).astype(np.uint8)
    np.testing.assert_array_equal(load_image(path)[..., 0], expected)


def test_jpeg_baseline_ybr_full_422_uses_pydicoms_colour_conversion(tmp_path):
    # A smooth colour field: JPEG's loss stays small and measurable.
    rows = np.linspace(0, 1, 32)[:, None]
    cols = np.linspace(0, 1, 48)[None, :]
    channels = (200 * rows + 30 * cols, 120 + 100 * cols + 0 * rows, 220 - 150 * rows * cols)
    field = np.stack(channels, -1)
    source = np.round(field).astype(np.uint8)
    path, data = jpeg_dicom(
        tmp_path / "us.dcm", Image.fromarray(source), "YBR_FULL_422", quality=95, subsampling=1
    )
    image = load_image(path)
    ycbcr = Image.open(io.BytesIO(data))
    ycbcr.draft("YCbCr", ycbcr.size)  # the codec's YCbCr, before any colour conversion
    ycbcr = np.asarray(ycbcr.convert("YCbCr") if ycbcr.mode != "YCbCr" else ycbcr)
    np.testing.assert_array_equal(image, convert_color_space(ycbcr.copy(), "YBR_FULL", "RGB"))
    # libjpeg's own integer conversion rounds differently by at most one level.
    libjpeg_rgb = np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))
    assert np.abs(image.astype(int) - libjpeg_rgb).max() <= 1
    assert np.abs(image.astype(int) - source).max() <= 4  # quality 95 on a smooth field


def test_compressed_syntax_without_decoder_names_file_syntax_and_package(tmp_path):
    path = write_dicom(tmp_path / "lossless.dcm", np.zeros((8, 8), np.uint8))
    ds = pydicom.dcmread(path)
    ds.file_meta.TransferSyntaxUID = JPEGLosslessSV1
    ds.PixelData = encapsulate([b"\xff\xd8\xff\xd9"])
    ds.save_as(path, enforce_file_format=True)
    with pytest.raises(ImageError) as err:
        load_image(path)
    assert str(err.value) == (
        f"cannot read DICOM {path}: compressed transfer syntax JPEG Lossless, "
        "Non-Hierarchical, First-Order Prediction (Process 14 [Selection Value 1]) "
        f"({JPEGLosslessSV1}) needs a decoder that is not installed: pip install python-gdcm "
        "or pip install pylibjpeg pylibjpeg-libjpeg"
    )


# Ultrasound region -----------------------------------------------------------------------


def region(x0, y0, x1, y1, spatial):
    item = Dataset()
    item.RegionLocationMinX0, item.RegionLocationMinY0 = x0, y0
    item.RegionLocationMaxX1, item.RegionLocationMaxY1 = x1, y1
    item.RegionSpatialFormat = spatial
    return item


# (regions, the crop expected as rows y0..y1, columns x0..x1)
REGION_CASES = {
    # graphics region largest, but a 2D region wins; of the 2D ones the larger
    "largest_2d": ([(0, 0, 39, 29, 5), (2, 3, 11, 12, 1), (20, 4, 35, 19, 1)], (20, 4, 35, 19)),
    "no_2d_largest_any": ([(0, 0, 9, 9, 3), (10, 2, 30, 25, 2)], (10, 2, 30, 25)),
    "tie_first": ([(0, 0, 9, 9, 1), (20, 10, 29, 19, 1)], (0, 0, 9, 9)),
    "clipped": ([(30, 20, 60, 50, 1)], (30, 20, 39, 29)),
}


@pytest.mark.parametrize("case", REGION_CASES)
def test_us_region_crops_to_the_rules_region(tmp_path, case):
    boxes, (x0, y0, x1, y1) = REGION_CASES[case]
    grey = (np.arange(30 * 40) % 251).astype(np.uint8).reshape(30, 40)
    path = write_dicom(tmp_path / "us.dcm", grey, WindowCenter=128, WindowWidth=256)
    retag(path, SequenceOfUltrasoundRegions=[region(*b) for b in boxes])
    np.testing.assert_array_equal(
        load_image(path, us_region=True)[..., 0], grey[y0 : y1 + 1, x0 : x1 + 1]
    )
    np.testing.assert_array_equal(load_image(path)[..., 0], grey)  # only when asked


def test_us_region_is_ignored_for_a_file_declaring_none(tmp_path):
    grey = (np.arange(30 * 40) % 251).astype(np.uint8).reshape(30, 40)
    path = write_dicom(tmp_path / "plain.dcm", grey, WindowCenter=128, WindowWidth=256)
    np.testing.assert_array_equal(load_image(path, us_region=True)[..., 0], grey)


@pytest.mark.parametrize(
    ("boxes", "message"),
    [
        ([(50, 40, 60, 50, 1)], "ultrasound region 1 lies outside the 40 x 30 image"),
        ([(0, 0, 9, 9, 1), (0, 0, 20, None, 1)], "ultrasound region 2 lacks one of"),
    ],
    ids=["outside", "missing_corner"],
)
def test_bad_us_region_is_an_error_naming_the_file(tmp_path, boxes, message):
    grey = np.zeros((30, 40), np.uint8)
    items = []
    for box in boxes:
        item = region(*[0 if v is None else v for v in box])
        if None in box:
            del item.RegionLocationMaxY1
        items.append(item)
    path = retag(write_dicom(tmp_path / "us.dcm", grey), SequenceOfUltrasoundRegions=items)
    with pytest.raises(ImageError, match=message) as err:
        load_image(path, us_region=True)
    assert str(path) in str(err.value)


def test_the_rule_text_names_the_sequence_and_the_tie_break():
    assert "(0018,6011)" in ultrasound.RULE and "first on a tie" in ultrasound.RULE


def test_rle_ybr_full_cine_frame_is_converted(tmp_path):
    rgb = np.stack([known_rgb(8, 10, seed=s) for s in (5, 6, 7)])
    ybr = convert_color_space(rgb.copy(), "RGB", "YBR_FULL", per_frame=True)
    path = write_dicom(tmp_path / "loop.dcm", rgb[0], "RGB")  # header of one RGB frame
    ds = pydicom.dcmread(path)
    ds.NumberOfFrames, ds.PhotometricInterpretation = 3, "YBR_FULL"
    ds.compress(RLELossless, ybr)
    ds.save_as(path)
    assert pydicom.dcmread(path).PhotometricInterpretation == "YBR_FULL"
    for frame in range(3):
        np.testing.assert_array_equal(
            load_image(path, frame=frame), convert_color_space(ybr[frame].copy(), "YBR_FULL", "RGB")
        )
