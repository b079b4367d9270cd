"""The search service takes the command line's image options: ``frame`` (cine loops) and
``us_region`` (ultrasound regions), with the same hits, warning and stored entries."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from PIL import Image
from starlette.testclient import TestClient
from test_deploy import run_cli
from test_dicom_cine import cine_file, us_file

from deploy.index import HammingIndex
from deploy.search_service import SearchService
from deploy.serve_app import create_app


@pytest.fixture
def site(art, tmp_path):
    """Two train PNGs, a 3-frame loop of the third (inverted, itself, halved;
    Representative Frame Number 2 = frame 1) and an ultrasound DICOM of the fourth."""
    train = [p for p, s in zip(art["paths"], art["split"], strict=True) if s == "train"]
    images = tmp_path / "images"
    images.mkdir()
    for name, source in (("a.png", train[0]), ("b.png", train[1])):
        shutil.copy(source, images / name)
    grey = np.asarray(Image.open(train[2]).convert("L"), np.uint8)
    loop = cine_file(images / "loop.dcm", [255 - grey, grey, grey // 2], representative=2)
    us, (height, width) = us_file(images / "us.dcm", train[3])
    return {"images": images, "loop": loop, "us": us, "encoder": art["dir"] / "encoder.onnx",
            "us_box": [20, 12, 20 + width - 1, 12 + height - 1]}  # fmt: skip


def build(site, index, capsys, *flags):
    rc, _, err = run_cli(capsys, "index", "build", "--encoder", site["encoder"], "--images",
                         site["images"], "--out", index, *flags)  # fmt: skip
    assert rc == 0, err
    return TestClient(create_app(SearchService(index, site["encoder"])))


def cli_search(site, index, capsys, image, *flags) -> tuple[list[dict], str]:
    rc, out, err = run_cli(capsys, "search", "--index", index, "--encoder", site["encoder"],
                           "--image", image, "-k", "5", "--json", *flags)  # fmt: skip
    assert rc == 0, err
    return json.loads(out)["results"], err


def upload(path):
    return {"file": (path.name, path.read_bytes(), "application/octet-stream")}


FIELDS = ("rank", "id", "distance", "label", "path", "dicom")


def served_hits(document) -> list[dict]:
    return [{f: h[f] for f in FIELDS if f in h} for h in document["results"]]


@pytest.mark.parametrize(
    ("form", "flags", "warning"),
    [
        ({"us_region": "1"}, ["--us-region"], None),
        (
            {},
            [],
            "the DICOM hits were indexed with us_region=1, the query is not (add "
            "us_region=1); distances compare unlike images",
        ),
    ],
)
def test_us_region_search_equals_the_command_lines(site, tmp_path, capsys, form, flags, warning):
    index = tmp_path / "idx"
    api = build(site, index, capsys, "--us-region")
    want, err = cli_search(site, index, capsys, site["us"], *flags)
    assert ("warning:" in err) == (warning is not None)
    got = api.post("/api/search", files=upload(site["us"]), data={"k": "5", **form}).json()
    assert served_hits(got) == want
    assert got.get("warning") == warning
    if form:
        assert (want[0]["id"], want[0]["distance"]) == ("us.dcm", 0)


def test_a_frame_is_searched_and_reported_as_the_command_line_does(site, tmp_path, capsys):
    index = tmp_path / "idx"
    api = build(site, index, capsys, "--frames", "all")
    want, _ = cli_search(site, index, capsys, site["loop"], "--frame", "2")
    data = {"k": "5", "frame": "2", "report": "1"}
    got = api.post("/api/search", files=upload(site["loop"]), data=data).json()
    assert served_hits(got) == want
    assert (want[0]["id"], want[0]["distance"]) == ("loop.dcm#frame=2", 0)
    assert got["query_dicom"]["frame"] == 2
    # Query and loop hits drawn from their own frames: every image is shown.
    assert got["report_html"].count("image not shown") == 0
    response = api.post("/api/search", files=upload(site["loop"]), data={"k": "5"})
    assert response.status_code == 422
    assert response.json()["error"] == (
        "cannot read DICOM upload 'loop.dcm': multi-frame file with 3 frames; choose one "
        "with frame=0..2 (--frame)"
    )


@pytest.mark.parametrize(
    ("name", "form", "frame", "flags"),
    [
        ("loop", {}, 1, ["--frame", "1"]),  # index add's default: the representative one
        ("loop", {"frame": "2"}, 2, ["--frame", "2"]),
        ("us", {"us_region": "1"}, None, ["--us-region"]),
    ],
)
def test_an_add_stores_what_index_add_stores(site, tmp_path, capsys, name, form, frame, flags):
    index = tmp_path / "idx"
    api = build(site, index, capsys)
    response = api.post("/api/items", files=upload(site[name]), data={"id": "new", **form})
    assert response.status_code == 201, response.text
    entry = dict(HammingIndex.load(index).entries())["new"]
    assert entry["dicom"]["frame"] == frame
    assert entry.get("us_region") == (site["us_box"] if "us_region" in form else None)
    # The stored code is the one the command line gives the same file and options.
    hits, _ = cli_search(site, index, capsys, site[name], *flags)
    assert [(h["id"], h["distance"]) for h in hits if h["id"] == "new"] == [("new", 0)]
