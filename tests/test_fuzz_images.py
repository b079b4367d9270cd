"""Property tests of deploy.preprocess.load_image: damaged files only ever give an
ImageError, and valid PNGs of any size and mode give the documented conversion."""

from __future__ import annotations

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage

from deploy.preprocess import ImageError, load_image

# Each example writes one small file into tmp_path (overwritten by the next example).
FAST = settings(
    max_examples=50,
    deadline=2000,  # ms; generous, as the test machine may be busy
    derandomize=True,  # the same examples on every run
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)


def small_png(path) -> bytes:
    image = (np.arange(12 * 10 * 3).reshape(12, 10, 3) * 7 % 256).astype(np.uint8)
    Image.fromarray(image).save(path)
    return path.read_bytes()


def small_dicom(path) -> bytes:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    meta.MediaStorageSOPInstanceUID = "1.2.3.4"
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = SecondaryCaptureImageStorage, "1.2.3.4"
    ds.Rows, ds.Columns, ds.SamplesPerPixel = 10, 9, 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    ds.RescaleSlope, ds.RescaleIntercept = 1, -1024
    ds.WindowCenter, ds.WindowWidth = 40, 400
    ds.PixelData = (np.arange(90, dtype=np.uint16) * 45).tobytes()
    ds.save_as(path, enforce_file_format=True)
    return path.read_bytes()


def check_outcome(path) -> None:
    """load_image gives a uint8 (H, W, 1 or 3) image or an ImageError; nothing else."""
    try:
        image = load_image(path)
    except ImageError as err:
        assert str(path) in str(err) and "\n" not in str(err)
        return
    assert image.dtype == np.uint8 and image.ndim == 3 and image.shape[-1] in (1, 3)


def mutate(data: bytes, edits, cut) -> bytes:
    buf = bytearray(data)
    for position, value in edits:
        buf[position % len(buf)] = value
    return bytes(buf[:cut] if cut is not None else buf)


edits = st.lists(st.tuples(st.integers(0, 10**6), st.integers(0, 255)), max_size=8)
cuts = st.none() | st.integers(0, 2000)


@FAST
@given(data=st.binary(max_size=600), suffix=st.sampled_from([".png", ".jpg", ".dcm", ".bin"]))
def test_random_bytes(tmp_path, data, suffix):
    path = tmp_path / f"random{suffix}"
    path.write_bytes(data)
    check_outcome(path)


@FAST
@given(edits=edits, cut=cuts)
def test_mutated_png(tmp_path, edits, cut):
    path = tmp_path / "mutated.png"
    path.write_bytes(mutate(small_png(tmp_path / "good.png"), edits, cut))
    check_outcome(path)


@FAST
@given(edits=edits, cut=cuts, suffix=st.sampled_from([".dcm", ".img"]))
def test_mutated_dicom(tmp_path, edits, cut, suffix):
    path = tmp_path / f"mutated{suffix}"
    path.write_bytes(mutate(small_dicom(tmp_path / "good.dcm"), edits, cut))
    check_outcome(path)


MODES = ["L", "LA", "RGB", "RGBA", "I;16", "P"]


@FAST
@given(
    mode=st.sampled_from(MODES),
    height=st.integers(8, 24),
    width=st.integers(8, 24),
    seed=st.integers(0, 2**32 - 1),
)
def test_valid_pngs_round_trip(tmp_path, mode, height, width, seed):
    rng = np.random.default_rng(seed)
    if mode == "I;16":
        pixels = rng.integers(0, 65536, (height, width), dtype=np.uint16)
        image = Image.fromarray(pixels)
        expected = np.floor(pixels / 257 + 0.5).astype(np.uint8)[..., None]
    elif mode == "P":
        index = rng.integers(0, 256, (height, width), dtype=np.uint8)
        palette = rng.integers(0, 256, (256, 3), dtype=np.uint8)
        image = Image.fromarray(index, "L")
        image.putpalette(palette.tobytes())  # an L image with a palette becomes P
        expected = palette[index]
    else:
        channels = {"L": 1, "LA": 2, "RGB": 3, "RGBA": 4}[mode]
        pixels = rng.integers(0, 256, (height, width, channels), dtype=np.uint8)
        image = Image.fromarray(pixels[..., 0] if channels == 1 else pixels, mode)
        expected = pixels[..., :1] if channels <= 2 else pixels[..., :3]  # alpha dropped
    path = tmp_path / "valid.png"
    image.save(path)
    assert Image.open(path).mode == mode
    np.testing.assert_array_equal(load_image(path), expected)
