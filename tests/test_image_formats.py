"""deploy.preprocess.load_image on DICOM and on broken files.

Every accepted DICOM is checked against a uint8 array worked out here by hand from the
documented conversion (deploy/dicom.py), saved as a PNG: the DICOM and the PNG must
give the same image and the same model input. Bad files must give one-line ImageErrors
that name the file and the problem.
"""

from __future__ import annotations

import struct
import sys
import time
import zlib

import numpy as np
import pytest
from PIL import Image
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import encapsulate
from pydicom.uid import (
    ExplicitVRLittleEndian,
    JPEGLSLossless,
    SecondaryCaptureImageStorage,
    generate_uid,
)

from deploy.preprocess import ImageError, load_image, prepare_image


def write_dicom(path, stored, photometric="MONOCHROME2", bits_stored=None, signed=False, **tags):
    """An uncompressed DICOM file holding ``stored`` ((H, W), (H, W, 3) or (F, H, W))."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = tags.pop("transfer_syntax", ExplicitVRLittleEndian)
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = SecondaryCaptureImageStorage, generate_uid()
    colour = photometric == "RGB"
    frames = stored.shape[0] if stored.ndim == 3 and not colour else 1
    ds.Rows, ds.Columns = stored.shape[-3:-1] if colour else stored.shape[-2:]
    ds.SamplesPerPixel = 3 if colour else 1
    ds.PhotometricInterpretation = photometric
    ds.BitsAllocated = stored.dtype.itemsize * 8
    ds.BitsStored = bits_stored or ds.BitsAllocated
    ds.HighBit = ds.BitsStored - 1
    ds.PixelRepresentation = int(signed)
    if colour:
        ds.PlanarConfiguration = 0
    if frames > 1:
        ds.NumberOfFrames = frames
    for key, value in tags.items():
        setattr(ds, key, value)
    if "PixelData" not in ds and "FloatPixelData" not in ds:
        ds.PixelData = stored.tobytes()
        ds["PixelData"].VR = "OB" if ds.BitsAllocated == 8 else "OW"
    ds.save_as(path, enforce_file_format=True)
    return path


def rows8(values, dtype):
    """An 8 x 8 image whose every row is ``values`` (8 literal numbers)."""
    return np.tile(np.array(values, dtype), (8, 1))


def assert_same_as_png(tmp_path, dicom_path, expected, frame=None):
    png = tmp_path / (dicom_path.stem + "_expected.png")
    Image.fromarray(expected[..., 0] if expected.shape[-1] == 1 else expected).save(png)
    image = load_image(dicom_path, frame=frame)
    assert image.dtype == np.uint8
    np.testing.assert_array_equal(image, expected)
    np.testing.assert_array_equal(image, load_image(png))
    for size, channels in ((8, 1), (12, 3), (5, 1)):
        np.testing.assert_array_equal(
            prepare_image(image, size, channels), prepare_image(load_image(png), size, channels)
        )


# Accepted DICOM -------------------------------------------------------------------------


def test_monochrome2_8bit_uses_the_full_range(tmp_path):
    path = write_dicom(tmp_path / "m2.dcm", rows8([0, 10, 20, 50, 100, 150, 200, 250], np.uint8))
    # No window: y = (s - 0) * 255 / (250 - 0) = 1.02 * s, rounded half up.
    expected = rows8([0, 10, 20, 51, 102, 153, 204, 255], np.uint8)[..., None]
    assert_same_as_png(tmp_path, path, expected)


def test_monochrome1_is_inverted(tmp_path):
    stored = rows8([0, 10, 20, 50, 100, 150, 200, 250], np.uint8)
    path = write_dicom(tmp_path / "m1.dcm", stored, photometric="MONOCHROME1")
    expected = rows8([255, 245, 235, 204, 153, 102, 51, 0], np.uint8)[..., None]
    assert_same_as_png(tmp_path, path, expected)


def test_12_bits_stored_in_16(tmp_path):
    # 0xF000 | 4095: bits above BitsStored are not part of the value, so it reads 4095.
    stored = rows8([0, 100, 500, 1000, 2000, 3000, 4095, 0xF000 | 4095], np.uint16)
    path = write_dicom(tmp_path / "u12.dcm", stored, bits_stored=12)
    # y = s * 255 / 4095: 6.23, 31.14, 62.27, 124.54, 186.81 -> 6, 31, 62, 125, 187.
    expected = rows8([0, 6, 31, 62, 125, 187, 255, 255], np.uint8)[..., None]
    assert_same_as_png(tmp_path, path, expected)


def test_signed_16bit_with_rescale(tmp_path):
    stored = rows8([-1000, -500, 0, 250, 500, 1000, 1500, 2000], np.int16)
    path = write_dicom(
        tmp_path / "ct.dcm", stored, signed=True, RescaleSlope=2, RescaleIntercept=-1024
    )
    # m = 2 s - 1024 = -3024 .. 2976; y = (m + 3024) * 255 / 6000 = 0.0425 * (m + 3024):
    # 0, 42.5, 85, 106.25, 127.5, 170, 212.5, 255; halves round up: 43, 128, 213.
    expected = rows8([0, 43, 85, 106, 128, 170, 213, 255], np.uint8)[..., None]
    assert_same_as_png(tmp_path, path, expected)


def test_windowed_16bit_uses_the_first_window(tmp_path):
    stored = rows8([0, 899, 900, 950, 1000, 1050, 1099, 1100], np.uint16)
    path = write_dicom(tmp_path / "win.dcm", stored, WindowCenter=[1000, 50], WindowWidth=[201, 10])
    # LINEAR, c = 1000, w = 201: c1 = 999.5, w1 = 200, so 0 up to 899.5, 255 above
    # 1099.5, else ((s - 999.5) / 200 + 0.5) * 255: 900 -> 0.64, 950 -> 64.39,
    # 1000 -> 128.14, 1050 -> 191.89, 1099 -> 254.36.
    expected = rows8([0, 0, 1, 64, 128, 192, 254, 255], np.uint8)[..., None]
    assert_same_as_png(tmp_path, path, expected)


def test_voi_lut_sequence_longer_than_256_entries(tmp_path):
    item = Dataset()
    item.LUTDescriptor = [512, 0, 8]  # 512 entries, first input 0, 8-bit output
    item.LUTData = [i // 2 for i in range(512)]
    item["LUTDescriptor"].VR = item["LUTData"].VR = "US"
    stored = rows8([0, 1, 255, 256, 300, 511, 600, 10], np.uint16)
    path = write_dicom(tmp_path / "lut.dcm", stored, VOILUTSequence=[item])
    # y = LUT[clip(s, 0, 511)] * 255 / 255 = min(s, 511) // 2 (a uint8 index would wrap
    # 256 round to 0, as pydicom 3.0.2's apply_voi does).
    expected = rows8([0, 0, 127, 128, 150, 255, 255, 5], np.uint8)[..., None]
    assert_same_as_png(tmp_path, path, expected)


def test_float_dicom_uses_the_full_range(tmp_path):
    values = rows8([-1.0, 0.0, 0.5, 1.0, 2.0, 3.0, 4.0, 7.0], np.float32)
    path = write_dicom(tmp_path / "float.dcm", values, FloatPixelData=values.tobytes())
    # y = (m + 1) * 255 / 8: 0, 31.875, 47.81, 63.75, 95.625, 127.5, 159.375, 255.
    expected = rows8([0, 32, 48, 64, 96, 128, 159, 255], np.uint8)[..., None]
    assert_same_as_png(tmp_path, path, expected)


def test_rgb_keeps_its_values(tmp_path):
    rgb = np.zeros((8, 9, 3), np.uint8)
    rgb[..., 0] = np.arange(9) * 30
    rgb[..., 1] = 255 - np.arange(8)[:, None] * 20
    rgb[..., 2] = 7
    path = write_dicom(tmp_path / "rgb.dcm", rgb, photometric="RGB")
    assert_same_as_png(tmp_path, path, rgb)


def test_multi_frame_needs_a_frame(tmp_path):
    frames = np.zeros((3, 8, 8), np.uint8)
    frames[0, 0, 0] = frames[2, 7, 7] = 255
    frames[1] = rows8([0, 1, 2, 3, 4, 5, 6, 51], np.uint8)
    path = write_dicom(tmp_path / "cine.dcm", frames)
    with pytest.raises(ImageError) as err:
        load_image(path)
    assert "cine.dcm" in str(err.value) and "3 frames" in str(err.value)
    # Frame 1 alone: y = s * 255 / 51 = 5 s.
    expected = rows8([0, 5, 10, 15, 20, 25, 30, 255], np.uint8)[..., None]
    assert_same_as_png(tmp_path, path, expected, frame=1)
    for bad in (3, -1):
        with pytest.raises(ImageError, match=f"cine.dcm: frame {bad} out of range"):
            load_image(path, frame=bad)


def test_dicom_found_by_magic_without_suffix(tmp_path):
    path = write_dicom(tmp_path / "scan.img", rows8([0, 0, 0, 0, 0, 0, 0, 5], np.uint8))
    expected = rows8([0, 0, 0, 0, 0, 0, 0, 255], np.uint8)[..., None]
    assert_same_as_png(tmp_path, path, expected)


def test_damaged_compressed_stream_is_refused_naming_the_syntax(tmp_path):
    # pyjpegls decodes JPEG-LS; these bytes are no JPEG-LS stream. A syntax without an
    # installed decoder: tests/test_dicom_colour.py.
    path = write_dicom(
        tmp_path / "jls.dcm",
        np.zeros((8, 8), np.uint8),
        transfer_syntax=JPEGLSLossless,
        PixelData=encapsulate([b"\xff\xd8 not really JPEG-LS \xff\xd9"]),
    )
    message = error_of(path)
    assert "cannot decode the pixel data (JPEG-LS Lossless Image Compression, " in message
    assert str(JPEGLSLossless) in message and "Invalid JPEG-LS stream" in message


def test_missing_pydicom_gives_the_install_hint(tmp_path, monkeypatch):
    path = write_dicom(tmp_path / "m2.dcm", rows8([0, 1, 2, 3, 4, 5, 6, 7], np.uint8))
    monkeypatch.setitem(sys.modules, "pydicom", None)  # makes `import pydicom` fail
    monkeypatch.setitem(sys.modules, "pydicom.pixels", None)
    assert error_of(path) == f"pip install pydicom is needed to read DICOM {path}"


# Refused files --------------------------------------------------------------------------


def error_of(path, **kwargs) -> str:
    with pytest.raises(ImageError) as err:
        load_image(path, **kwargs)
    message = str(err.value)
    assert path.name in message and "\n" not in message, message
    return message


def png_bytes(width: int, height: int, idat: bytes) -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)  # 8-bit grey
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def good_file(tmp_path, name: str, fmt: str) -> bytes:
    image = np.arange(32 * 32 * 3, dtype=np.uint32).reshape(32, 32, 3) % 251
    Image.fromarray(image.astype(np.uint8)).save(tmp_path / name, fmt)
    return (tmp_path / name).read_bytes()


@pytest.mark.parametrize(
    "name, content, word",
    [
        ("empty.png", b"", "empty"),
        ("notes.png", b"these are notes, not pixels\n", "not a recognised image format"),
        ("empty.dcm", b"", "empty"),
    ],
)
def test_not_images(tmp_path, name, content, word):
    (tmp_path / name).write_bytes(content)
    assert word in error_of(tmp_path / name)


@pytest.mark.parametrize("name, fmt", [("cut.png", "PNG"), ("cut.jpg", "JPEG")])
def test_truncated_images(tmp_path, name, fmt):
    data = good_file(tmp_path, name, fmt)
    (tmp_path / name).write_bytes(data[: len(data) // 2])
    assert "truncated" in error_of(tmp_path / name).lower()


def test_truncated_dicom(tmp_path):
    path = write_dicom(tmp_path / "cut.dcm", np.zeros((16, 16), np.uint16))
    path.write_bytes(path.read_bytes()[:-100])
    assert "truncated" in error_of(path)


def test_header_bomb_fails_fast(tmp_path):
    path = tmp_path / "bomb.png"
    path.write_bytes(png_bytes(50_000, 50_000, zlib.compress(b"\0" * 64)))
    start = time.perf_counter()
    message = error_of(path)
    assert time.perf_counter() - start < 0.5
    assert "decompression bomb" in message


def test_dicom_header_bomb(tmp_path):
    tiny = np.zeros((8, 8), np.uint8)
    path = tmp_path / "bomb.dcm"
    write_dicom(path, tiny, Rows=50_000, Columns=50_000, PixelData=tiny.tobytes())
    message = error_of(path)
    assert "50000x50000" in message and "decompression bomb" in message


def test_tiny_image(tmp_path):
    Image.fromarray(np.zeros((1, 1), np.uint8)).save(tmp_path / "dot.png")
    message = error_of(tmp_path / "dot.png")
    assert "1x1 pixels" in message and "minimum side of 8" in message


def test_float_nan(tmp_path):
    values = np.ones((8, 8), np.float32)
    values[3, 4] = np.nan
    Image.fromarray(values, "F").save(tmp_path / "nan.tiff")
    assert "NaN" in error_of(tmp_path / "nan.tiff")
    dicom = write_dicom(tmp_path / "nan.dcm", values, FloatPixelData=values.tobytes())
    assert "NaN" in error_of(dicom)


def test_missing_file_and_bad_frame(tmp_path):
    assert "not found" in error_of(tmp_path / "gone.png")
    good_file(tmp_path, "one.png", "PNG")
    assert "frame 2 out of range" in error_of(tmp_path / "one.png", frame=2)


def test_exif_orientation_is_ignored_as_the_contract_says(tmp_path):
    from deploy.preprocess import load_prepared
    from export.contract_writer import build_contract

    rng = np.random.default_rng(5)
    pixels = Image.fromarray(rng.integers(0, 256, (30, 50, 3), dtype=np.uint8))
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 degrees clockwise to display"
    pixels.save(tmp_path / "tagged.png", exif=exif.tobytes())
    pixels.save(tmp_path / "plain.png")
    assert Image.open(tmp_path / "tagged.png").getexif()[0x0112] == 6
    for load in (load_image, lambda p: load_prepared(p, 64, 3)):
        np.testing.assert_array_equal(load(tmp_path / "tagged.png"), load(tmp_path / "plain.png"))
    assert load_image(tmp_path / "tagged.png").shape == (30, 50, 3)  # not rotated
    decode = build_contract(64, 3, 64, "f" * 16, ["a"], {"onnx": "e.onnx"})["preprocessing"]
    assert decode["decode"]["orientation"].startswith(
        "EXIF (and PNG eXIf) orientation tags are ignored"
    )
