"""Cine loops and ultrasound regions in ``index build/add``: the frame policy
(``--frames``/``--frame``), no silent skips (``--skip-bad``), ``--us-region``."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pydicom
import pytest
from PIL import Image
from pydicom.dataset import Dataset
from test_archive_build import contents, interrupt_after
from test_deploy import run_cli
from test_image_formats import write_dicom

from deploy import cine
from deploy.encoder import Encoder
from deploy.index import HammingIndex
from deploy.sources import Item
from deploy.staging import staging_path


@pytest.mark.parametrize(
    ("count", "representative", "policy", "expected"),
    [
        (5, 3, "representative", [3]),
        (5, None, "representative", [2]),  # no Representative Frame Number: the middle
        (4, None, "middle", [2]),
        (4, 0, "middle", [2]),
        (3, None, "all", [0, 1, 2]),
        (3, None, 1, [1]),
    ],
)
def test_choose(count, representative, policy, expected):
    assert cine.choose(count, representative, policy) == expected


@pytest.mark.parametrize(("text", "policy"), [("all", "all"), ("middle", "middle"), ("7", 7)])
def test_parse_policy(text, policy):
    assert cine.parse_policy(text) == policy


@pytest.mark.parametrize("text", ["-1", "last", "1.5"])
def test_parse_policy_refuses(text):
    with pytest.raises(ValueError, match=f"--frames '{text}': expected representative"):
        cine.parse_policy(text)


def cine_file(path, frames, representative=None):
    """A multi-frame grey DICOM whose window shows the stored values as they are."""
    tags = {"WindowCenter": 128, "WindowWidth": 256}
    if representative is not None:
        tags["RepresentativeFrameNumber"] = representative  # 1-based in the file
    return write_dicom(path, np.stack(frames).astype(np.uint8), **tags)


def test_expand_reads_the_representative_frame_and_reports_bad_headers(tmp_path):
    frames = [np.full((16, 16), v, np.uint8) for v in (10, 20, 30, 40)]
    loop = cine_file(tmp_path / "loop.dcm", frames, representative=2)
    bad = cine_file(tmp_path / "bad.dcm", frames[:2])
    ds = pydicom.dcmread(bad)
    ds.NumberOfFrames = -2
    ds.save_as(bad)
    png = tmp_path / "a.png"
    Image.fromarray(frames[0]).save(png)
    items = [Item("loop", loop), Item("bad", bad), Item("a", png)]
    kept, failures = cine.expand(items, "representative")
    assert [(i.id, i.frame) for i in kept] == [("loop", 1), ("a", None)]
    assert failures == [(str(bad), f"cannot read DICOM {bad}: NumberOfFrames -2 is not positive")]
    kept, _ = cine.expand(items, "all")
    assert [(i.id, i.frame) for i in kept][:4] == [
        ("loop#frame=0", 0), ("loop#frame=1", 1), ("loop#frame=2", 2), ("loop#frame=3", 3)
    ]  # fmt: skip
    kept, failures = cine.expand(items, 4)
    assert [i.id for i in kept] == ["a"]
    assert failures[0] == (
        str(loop),
        f"cannot read DICOM {loop}: frame 4 out of range: the file has 4 frame(s)",
    )


@pytest.fixture
def folder(art, tmp_path):
    """Two train PNGs and a 3-frame loop of the third train image (frames: inverted,
    itself, halved; Representative Frame Number 2 = frame 1)."""
    train = [p for p, s in zip(art["paths"], art["split"], strict=True) if s == "train"]
    images = tmp_path / "images"
    images.mkdir()
    for name, source in (("a.png", train[0]), ("b.png", train[1])):
        shutil.copy(source, images / name)
    grey = np.asarray(Image.open(train[2]).convert("L"), np.uint8)
    cine_file(images / "loop.dcm", [255 - grey, grey, grey // 2], representative=2)
    return images


@pytest.mark.slow
@pytest.mark.parametrize(
    ("flags", "loop_entries"),
    [
        ([], [("loop.dcm", 1)]),
        (["--frames", "middle"], [("loop.dcm", 1)]),
        (["--frame", "2"], [("loop.dcm", 2)]),
        (
            ["--frames", "all"],
            [("loop.dcm#frame=0", 0), ("loop.dcm#frame=1", 1), ("loop.dcm#frame=2", 2)],
        ),
    ],  # fmt: skip
)
def test_build_encodes_the_policys_frames(art, folder, tmp_path, capsys, flags, loop_entries):
    onnx, index = art["dir"] / "encoder.onnx", tmp_path / "idx"
    rc, out, err = run_cli(capsys, "index", "build", "--encoder", onnx, "--images", folder,
                           "--out", index, "--json", *flags)  # fmt: skip
    assert rc == 0, err
    summary = json.loads(out)
    assert summary["skipped"] == [] and summary["indexed"] == 2 + len(loop_entries)
    loaded = HammingIndex.load(index)
    entries = dict(loaded.entries())
    stored = [(i, entries[i]["dicom"]["frame"]) for i in loaded.ids if "loop" in str(i)]
    assert stored == loop_entries
    encoder = Encoder.open(onnx)
    for item_id, frame in loop_entries:
        code = encoder.encode_file(folder / "loop.dcm", frame)
        assert [(h.id, h.distance) for h in loaded.lookup(code, 1)] == [(item_id, 0)]


@pytest.mark.slow
def test_a_frame_a_loop_lacks_fails_the_build_unless_skip_bad(art, folder, tmp_path, capsys):
    onnx, index = art["dir"] / "encoder.onnx", tmp_path / "idx"
    argv = ["index", "build", "--encoder", onnx, "--images", folder, "--out", index, "--json"]
    rc, out, err = run_cli(capsys, *argv, "--frame", "3")
    problem = f"cannot read DICOM {folder / 'loop.dcm'}: frame 3 out of range: the file has 3"
    assert rc == 1 and out == "" and problem in err
    assert "error: 1 of 3 images could not be read (listed above)" in err
    # No index; the journal keeps the two PNGs, so the rerun encodes nothing again.
    assert not index.exists()
    journal = staging_path(index) / "journal.jsonl"
    assert [json.loads(line)["id"] for line in journal.open()] == ["a.png", "b.png"]
    rc, out, err = run_cli(capsys, *argv, "--frame", "3", "--skip-bad")
    assert rc == 0, err
    summary = json.loads(out)
    assert summary["indexed"] == 2 and summary["frames"] == 3 and summary["resumed_after"] == 2
    assert [s["path"] for s in summary["skipped"]] == [str(folder / "loop.dcm")]
    assert HammingIndex.load(index).ids == ["a.png", "b.png"]


def us_file(path, source):
    """A DICOM of ``source`` (grey) inside a frame of text-like noise, declaring the
    ultrasound region where the image is; returns the path and the image's shape."""
    grey = np.asarray(Image.open(source).convert("L"), np.uint8)
    height, width = grey.shape
    framed = np.random.default_rng(0).integers(0, 256, (height + 20, width + 30), np.uint8)
    framed[12 : 12 + height, 20 : 20 + width] = grey
    us = write_dicom(path, framed, WindowCenter=128, WindowWidth=256)
    item = Dataset()
    item.RegionSpatialFormat = 1
    item.RegionLocationMinX0, item.RegionLocationMinY0 = 20, 12
    item.RegionLocationMaxX1, item.RegionLocationMaxY1 = 20 + width - 1, 12 + height - 1
    ds = pydicom.dcmread(us)
    ds.SequenceOfUltrasoundRegions = [item]
    ds.save_as(us)
    return us, (height, width)


@pytest.mark.slow
def test_us_region_is_encoded_stored_and_searched_alike(art, folder, tmp_path, capsys):
    train = [p for p, s in zip(art["paths"], art["split"], strict=True) if s == "train"]
    us, (height, width) = us_file(folder / "us.dcm", train[3])
    onnx, index = art["dir"] / "encoder.onnx", tmp_path / "idx"
    rc, out, err = run_cli(capsys, "index", "build", "--encoder", onnx, "--images", folder,
                           "--out", index, "--us-region", "--json")  # fmt: skip
    assert rc == 0, err
    assert json.loads(out)["us_region"] is True
    entries = dict(HammingIndex.load(index).entries())
    assert entries["us.dcm"]["us_region"] == [20, 12, 20 + width - 1, 12 + height - 1]
    assert entries["a.png"].get("us_region") is None  # not a DICOM: used whole
    # The cropped DICOM encodes as the plain image does.
    encoder = Encoder.open(onnx)
    np.testing.assert_array_equal(
        encoder.encode_file(train[3]), Encoder.open(onnx).encode_files(
            [us], progress=False, us_region=True
        ).bits[0]
    )  # fmt: skip
    search = ["search", "--index", index, "--encoder", onnx, "--image", us, "--json", "-k", "1"]
    rc, out, err = run_cli(capsys, *search, "--us-region")
    assert rc == 0 and err == ""
    assert [(r["id"], r["distance"]) for r in json.loads(out)["results"]] == [("us.dcm", 0)]
    rc, out, err = run_cli(capsys, *search)  # the whole frame against region codes
    assert rc == 0 and err == (
        "warning: the DICOM hits were indexed with --us-region, the query is not (add "
        "--us-region); distances compare unlike images\n"
    )


LOOP_IDS = ["a.png", "b.png", "loop.dcm#frame=0", "loop.dcm#frame=1", "loop.dcm#frame=2"]


def build_all_frames(art, folder, out, capsys, *more):
    rc, stdout, err = run_cli(capsys, "index", "build", "--encoder", art["dir"] / "encoder.onnx",
                              "--images", folder, "--out", out, "--frames", "all",
                              "--batch-size", 2, "--no-progress", "--json", *more)  # fmt: skip
    return rc, stdout, err


@pytest.mark.slow  # two worker processes, each importing ONNX Runtime
def test_worker_processes_encode_each_frame_as_one_process_does(art, folder, tmp_path, capsys):
    train = [p for p, s in zip(art["paths"], art["split"], strict=True) if s == "train"]
    us, _ = us_file(folder / "us.dcm", train[3])
    built = {}
    for workers in (1, 2):
        out = tmp_path / f"w{workers}"
        rc, stdout, err = build_all_frames(
            art, folder, out, capsys, "--workers", workers, "--us-region"
        )
        assert rc == 0, err
        assert json.loads(stdout)["workers"] == workers
        built[workers] = contents(out)
    assert built[2] == built[1]  # codes, ids and metadata, byte for byte
    packed, ids, metadata = built[2]
    assert ids == [*LOOP_IDS, "us.dcm"]
    assert [m.get("dicom", {}).get("frame") for m in metadata] == [None, None, 0, 1, 2, None]
    loaded, encoder = HammingIndex.load(tmp_path / "w2"), Encoder.open(art["dir"] / "encoder.onnx")
    for frame in (0, 1, 2):  # each entry is its own frame's code
        code = encoder.encode_file(folder / "loop.dcm", frame)
        assert [(h.id, h.distance) for h in loaded.lookup(code, 1)] == [
            (f"loop.dcm#frame={frame}", 0)
        ]
    # The workers cropped the DICOM to its region: its code is the plain image's.
    code = encoder.encode_file(train[3])
    assert [(h.id, h.distance) for h in loaded.lookup(code, 1)] == [("us.dcm", 0)]


@pytest.mark.slow
def test_an_interrupted_all_frames_build_resumes_by_frame(
    art, folder, tmp_path, capsys, monkeypatch
):
    reference = tmp_path / "ref"
    assert build_all_frames(art, folder, reference, capsys)[0] == 0
    out = tmp_path / "idx"
    asked = interrupt_after(monkeypatch, 2)  # batches [a, b], [loop#0, loop#1] committed
    rc, _, err = build_all_frames(art, folder, out, capsys)
    assert rc == 130, err
    # Another frame policy would give the journal's ids other images: refused.
    rc, _, err = build_all_frames(art, folder, out, capsys, "--frames", "middle")
    assert rc == 1 and "holds an unfinished build with other frames" in err
    asked.clear()
    rc, stdout, err = build_all_frames(art, folder, out, capsys)
    assert rc == 0, err
    assert asked == [["loop.dcm#frame=2"]]  # only the frame the journal lacks
    assert json.loads(stdout)["resumed_after"] == 4
    assert contents(out) == contents(reference)
