"""DICOM through the whole pipeline: the same codes as the equivalent PNG, on the device
encoder and in a training dataset (the conversion itself: tests/test_image_formats.py)."""

from __future__ import annotations

import json

import numpy as np
from PIL import Image
from test_deploy import run_cli
from test_image_formats import write_dicom

from deploy.encoder import Encoder
from keras_ynet.dataset import load_dataset


def phantom_as_dicoms(source, folder):
    """Two DICOMs of one phantom image and the PNG each must equal after conversion:
    MONOCHROME1 8-bit (window c 128, w 256: y = m exactly, then inverted), and 16-bit
    windowed so that stored v -> v // 4 exactly. Without a window the full min..max range
    would be stretched to 0..255."""
    folder.mkdir()
    grey = np.asarray(Image.open(source).convert("L"), np.uint8)
    inverted = write_dicom(
        folder / "mono1.dcm", 255 - grey, "MONOCHROME1", WindowCenter=128, WindowWidth=256
    )
    # LINEAR window, c = 512, w = 1021: y = ((m - 511.5) / 1020 + 0.5) * 255 = (m + 0.5) / 4
    # for 0 < m <= 1021, so m = 4 g lands on g + 0.125 and rounds to g.
    windowed = write_dicom(
        folder / "win16.dcm", grey.astype(np.uint16) * 4, WindowCenter=512, WindowWidth=1021
    )
    png = folder / "expected.png"
    Image.fromarray(grey).save(png)
    return [inverted, windowed], png


def test_dicom_gives_the_codes_of_the_equivalent_png(art, tmp_path):
    dicoms, png = phantom_as_dicoms(art["paths"][0], tmp_path / "dcm")
    encoder = Encoder.open(art["dir"] / "encoder.onnx")
    result = encoder.encode_files([png, *dicoms], progress=False)
    assert not result.failures
    assert len(result) == 3
    np.testing.assert_array_equal(result.packed[1], result.packed[0])
    np.testing.assert_array_equal(result.packed[2], result.packed[0])


def test_index_build_over_a_folder_takes_dicom(art, tmp_path, capsys):
    dicoms, _ = phantom_as_dicoms(art["paths"][0], tmp_path / "dcm")
    enc = art["dir"] / "encoder.onnx"
    rc, out, err = run_cli(capsys, "index", "build", "--encoder", enc, "--images",
                           tmp_path / "dcm", "--out", tmp_path / "idx")  # fmt: skip
    assert rc == 0, err
    rc, out, err = run_cli(capsys, "search", "--index", tmp_path / "idx", "--encoder", enc,
                           "--image", dicoms[0], "-k", "3", "--json")  # fmt: skip
    assert rc == 0, err
    assert "mono1.dcm" in out and "win16.dcm" in out and "expected.png" in out


def test_training_dataset_of_dicom_images(tmp_path):
    root = tmp_path / "ds"
    root.mkdir()
    lines = ["id,image,mask,label,split"]
    for i in range(6):
        stored = np.full((16, 16), 40 * i, np.uint16)
        write_dicom(root / f"im{i}.dcm", stored, WindowCenter=128, WindowWidth=256)
        Image.fromarray(np.zeros((16, 16), np.uint8)).save(root / f"m{i}.png")
        split = "test" if i >= 4 else "train"
        lines.append(f"i{i},im{i}.dcm,m{i}.png,{'ab'[i % 2]},{split}")
    (root / "labels.csv").write_text("\n".join(lines) + "\n")
    spec = load_dataset(root)
    assert spec.channels == 1 and spec.image_size == (16, 16)
    assert len(spec.split("train")) == 4 and spec.class_names == ["a", "b"]


def test_search_with_a_multi_frame_dicom_query_needs_frame(art, tmp_path, capsys):
    first = art["split"].index("train")  # the index holds the train split
    grey = np.asarray(Image.open(art["paths"][first]).convert("L"), np.uint8)
    frames = np.stack([255 - grey, grey, grey // 2])  # window c 128, w 256: y = stored value
    cine = write_dicom(tmp_path / "cine.dcm", frames, WindowCenter=128, WindowWidth=256)
    enc, index = art["dir"] / "encoder.onnx", tmp_path / "idx"
    assert run_cli(capsys, "index", "build", "--encoder", enc, "--data", art["data"],
                   "--out", index)[0] == 0  # fmt: skip
    search = ["search", "--index", index, "--encoder", enc, "--image", cine, "--json"]
    rc, out, err = run_cli(capsys, *search)
    assert rc == 1 and err.count("\n") == 1 and "cine.dcm" in err and "3 frames" in err
    rc, out, err = run_cli(capsys, *search, "--frame", "1")
    assert rc == 0, err
    Image.fromarray(grey).save(tmp_path / "frame1.png")
    png = ["search", "--index", index, "--encoder", enc, "--image", tmp_path / "frame1.png"]
    rc, png_out, err = run_cli(capsys, *png, "--json")
    assert json.loads(out)["results"] == json.loads(png_out)["results"]  # the same hits
    assert json.loads(out)["results"][0]["distance"] == 0  # the image itself is indexed
