"""The "why it matched" report: agreement maps, HTML, contact sheet, both command lines.

Unit tests use literal bits and solid-colour images; the end-to-end tests reuse the tiny
export of tests/test_deploy.py (a 64 px YNet: core node 2 x 2, so 64 bits are a 2 x 2
grid with 16 bits per cell).
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from test_deploy import brute_force

from deploy import cli, report
from deploy.contract import ContractError, validate_contract
from deploy.report import Entry, HashGrid, Report, cell_agreement
from deploy.report_render import GAP, LINE, TILE, sheet_size
from export.contract_writer import build_contract

REPO = Path(__file__).resolve().parents[1]
CHROMIUM = Path("/usr/bin/chromium")
TINY_GRID = {"rows": 2, "cols": 2, "bits_per_cell": 16}  # hash_grid(2, 2, 64) of TINY


# Agreement ------------------------------------------------------------------------------


def test_cell_agreement_by_hand():
    # Bits 2i and 2i + 1 belong to cell i; cells row-major over 2 x 2.
    query = np.array([1, 1, 0, 0, 1, 0, 0, 1], np.uint8)
    hit = np.array([1, 1, 1, 1, 1, 1, 0, 0], np.uint8)
    # cell 0: both agree; cell 1: neither; cells 2 and 3: one of two.
    np.testing.assert_array_equal(
        cell_agreement(query, hit, HashGrid(2, 2, 2)), [[1.0, 0.0], [0.5, 0.5]]
    )
    # One bit per cell on a 2 x 4 grid: bit 5 is row 1, column 1.
    flipped = np.zeros(8, np.uint8)
    flipped[5] = 1
    expected = np.ones((2, 4))
    expected[1, 1] = 0.0
    np.testing.assert_array_equal(cell_agreement(np.zeros(8), flipped, HashGrid(2, 4, 1)), expected)
    # Four bits per cell, three agreeing in the first cell: 3/4.
    agreement = cell_agreement([1, 1, 1, 0, 0, 0, 0, 0], [1, 1, 1, 1] + [0] * 4, HashGrid(1, 2, 4))
    np.testing.assert_array_equal(agreement, [[0.75, 1.0]])
    with pytest.raises(ValueError, match="8-bit grid"):
        cell_agreement(np.zeros(6), np.zeros(6), HashGrid(2, 2, 2))
    # Four unmapped bits first (all disagreeing), then one bit per cell of 1 x 4: bit 6
    # is cell 2. The unmapped bits do not enter the map.
    query, hit = np.zeros(8, np.uint8), np.array([1, 1, 1, 1, 0, 0, 1, 0], np.uint8)
    np.testing.assert_array_equal(
        cell_agreement(query, hit, HashGrid(1, 4, 1, first_bit=4)), [[1.0, 1.0, 0.0, 1.0]]
    )
    with pytest.raises(ValueError, match="8-bit grid"):
        cell_agreement(np.zeros(4), np.zeros(4), HashGrid(1, 4, 1, first_bit=4))


def contract(hash_grid=None) -> dict:
    return build_contract(64, 1, 64, "0123456789abcdef", ["a", "b"], {"onnx": "e.onnx"}, hash_grid)


def test_contract_records_the_bit_layout():
    written = contract((2, 2, 16, 0))
    assert {k: written["hash_grid"][k] for k in TINY_GRID} == TINY_GRID
    assert "first_bit" not in written["hash_grid"]  # a grid head's contract reads as before
    parsed = validate_contract(json.loads(json.dumps(written)))
    assert parsed.hash_grid == (2, 2, 16, 0)
    assert HashGrid.from_contract(parsed) == HashGrid(2, 2, 16)
    # The combined head: 32 bits from the whole image, then 2 x 2 cells of 8 bits.
    combined = contract((2, 2, 8, 32))
    assert combined["hash_grid"]["first_bit"] == 32
    assert validate_contract(json.loads(json.dumps(combined))).hash_grid == (2, 2, 8, 32)
    with pytest.raises(ContractError, match="32 unmapped bits \\+ 2 x 2 cells x 16 bits"):
        contract((2, 2, 16, 32))
    with pytest.raises(ContractError, match="first_bit must be an integer >= 0, got -1"):
        validate_contract({**contract(), "hash_grid": {**TINY_GRID, "first_bit": -1}})
    older = validate_contract(contract())  # contracts from before the layout still load
    assert "hash_grid" not in contract() and older.hash_grid is None
    assert HashGrid.from_contract(older) is None
    with pytest.raises(ContractError, match="is not the 64 bits"):
        contract((4, 4, 2, 0))
    with pytest.raises(ContractError, match="must be positive integers"):
        validate_contract({**contract(), "hash_grid": {"rows": 8, "cols": 8, "bits_per_cell": "1"}})


def test_model_hash_grid_is_the_hash_heads_layout():
    import keras
    from conftest import TINY

    from keras_ynet.hash_head import hash_grid, model_hash_grid
    from keras_ynet.model import YNet

    for bits in (64, 32):
        model = YNet(**TINY, bits=bits)  # core node 2 x 2
        assert model_hash_grid(model) == (*hash_grid(2, 2, bits)[2:], 0) == (2, 2, bits // 4, 0)
    # The bits are the (rows, cols, c) grid flattened in C order: bit i is cell i // c.
    layer = model.get_layer("hash_flatten")
    images = np.random.default_rng(0).uniform(0, 255, (2, 64, 64, 1)).astype(np.float32)
    grid_values, flat = keras.Model(model.input, [layer.input, layer.output]).predict(
        images, verbose=0
    )
    assert grid_values.shape == (2, 2, 2, 8)
    np.testing.assert_array_equal(flat[:, 8 * 3 + 5], grid_values[:, 1, 1, 5])  # cell 3 = (1, 1)
    np.testing.assert_array_equal(flat, grid_values.reshape(2, -1))


# HTML and contact sheet --------------------------------------------------------------


def solid(path: Path, colour) -> Path:
    Image.new("RGB", (40, 30), colour).save(path)
    return path


GRID = HashGrid(2, 2, 2)


def literal_report(tmp_path: Path, grid=GRID, n_hits=3) -> Report:
    """Query 10101010 (blue); hits at distance 0, 2, 4, ...; the last hit's file is gone."""
    query_bits = np.array([1, 0] * 4, np.uint8)
    hits = []
    for i in range(n_hits):
        bits = query_bits.copy()
        bits[: 2 * i] ^= 1
        path = solid(tmp_path / f"hit{i}.png", (200, 180, 40))
        distance = int(np.sum(bits != query_bits))
        hits.append(Entry(f"hit<{i}>&", path, bits, i + 1, distance, ["x", ""][i % 2]))
    hits[-1].path.unlink()
    query = Entry("query.png", solid(tmp_path / "query.png", (0, 0, 255)), query_bits)
    return Report(query, hits, grid, grid_note="no grid in this contract", source="test")


def test_html_is_self_contained_and_lists_every_hit(tmp_path):
    content = literal_report(tmp_path)
    html_path, sheet_path = tmp_path / "out" / "why.html", tmp_path / "out" / "why.png"
    assert report.write_report(content, html_path, sheet_path) == [html_path, sheet_path]
    page = html_path.read_text(encoding="utf-8")
    for hit in content.hits:
        assert f"<dd>hit&lt;{hit.rank - 1}&gt;&amp;</dd>" in page  # ids are escaped
        assert f"distance {hit.distance}</h2>" in page
        assert f"{8 - hit.distance} of 8 bits" in page
    assert not re.search(r"hit<\d", page)
    assert page.count("<dd>-</dd>") == 2  # unknown labels: the query and hit 2
    assert page.count("image not shown") == 1 and "not found" in page
    # Nothing outside the file: every image is an inline PNG, no links, scripts or URLs.
    sources = re.findall(r"src='([^']*)'", page)
    assert len(sources) == 1 + 3 * 3 and all(
        s.startswith("data:image/png;base64,") for s in sources
    )
    assert not re.search(r"https?:|ftp:|file:|url\(|<link|<script|@import", page)
    # Over a grey copy of the blue query, all-agree cells are green, none-agree cells red.
    assert "2 x 2 grid" in page and "2 bit(s) per cell" in page


def test_a_grid_after_unmapped_bits_maps_only_its_own(tmp_path):
    # 8 bits: 4 from the whole image, then 1 x 2 cells of 2 bits (the combined head's form).
    # Hit 2 differs from the query in bits 0-3 only: its map agrees everywhere.
    content = literal_report(tmp_path, grid=HashGrid(1, 2, 2, first_bit=4))
    hit = content.hits[2]
    assert hit.distance == 4
    np.testing.assert_array_equal(
        cell_agreement(content.query.bits, hit.bits, content.grid), [[1.0, 1.0]]
    )
    html_path = tmp_path / "why.html"
    report.write_report(content, html_path, tmp_path / "why.png")
    page = html_path.read_text(encoding="utf-8")
    assert "Bits 4 to 7 come from the cells of a 1 x 2 grid" in page
    assert "bits 0 to 3 come from the whole image and are not mapped" in page


def test_sheet_layout(tmp_path):
    # A block: 4 caption lines, then the hit, the map over the hit and the map over the
    # query: 4 * 14 + 3 * 160 + 2 * 8 = 552 px. A header of 2 lines (28 px) and 8 px gaps.
    for n_hits, size in (
        (3, (4 * 168 + 8, 28 + 552 + 2 * 8)),
        (7, (6 * 168 + 8, 28 + 2 * 552 + 3 * 8)),
    ):
        assert sheet_size(n_hits, with_grid=True) == size  # 8 blocks: 2 rows of 6
        report.write_report(literal_report(tmp_path, n_hits=n_hits), None, tmp_path / "s.png")
        assert Image.open(tmp_path / "s.png").size == size
    assert size == (1016, 1156)
    sheet = np.asarray(Image.open(tmp_path / "s.png").convert("RGB")).astype(int)
    top = 2 * LINE + GAP + 4 * LINE  # the first row of tiles
    assert tuple(sheet[top + 80, GAP + 80]) == (0, 0, 255)  # the query, as it is
    # Column 3 is hit 3: it differs from the query on both bits of cells 0 and 1 (the top
    # row of the 2 x 2 grid) and agrees on cells 2 and 3: red above, green below, over
    # the grey of its yellow: (0.4 * 170 + 0.6 * 220, 0.4 * 170, 0.4 * 170) and so on.
    x, y = GAP + 3 * (TILE + GAP), top + TILE + GAP
    np.testing.assert_allclose(sheet[y + 60, x + 10], (200, 68, 68), atol=2)
    np.testing.assert_allclose(sheet[y + 100, x + 150], (68, 170, 68), atol=2)
    # Without a grid: one tile per block and a third header line saying why.
    report.write_report(
        literal_report(tmp_path, grid=None), tmp_path / "n.html", tmp_path / "n.png"
    )
    assert Image.open(tmp_path / "n.png").size == (4 * 168 + 8, 42 + (56 + 160) + 2 * 8)
    page = (tmp_path / "n.html").read_text()
    assert "No bit-agreement map: no grid in this contract" in page and page.count("src=") == 4


# Command lines --------------------------------------------------------------------------


@pytest.fixture
def tiny(art):  # the session's tiny export (tests/conftest.py)
    return art


@pytest.fixture
def indexed(tiny, tmp_path, capsys):
    """A copy of the dataset indexed with labels (train split), its export with the grid."""
    data, export = tmp_path / "data", tmp_path / "art"
    shutil.copytree(tiny["data"], data)
    shutil.copytree(tiny["dir"], export)
    encoder_json = export / "encoder.json"
    written = json.loads(encoder_json.read_text())
    # the exporter records the layout: it must be TINY's
    assert {k: written["hash_grid"][k] for k in TINY_GRID} == TINY_GRID
    older = json.dumps({k: v for k, v in written.items() if k != "hash_grid"})
    index = tmp_path / "index"
    argv = ["index", "build", "--encoder", export / "encoder.onnx", "--data", data, "--out", index]
    assert cli.main([str(a) for a in argv]) == 0
    capsys.readouterr()
    return {"data": data, "onnx": export / "encoder.onnx", "index": index, "older": older}


def test_search_report_end_to_end_without_tensorflow(tiny, indexed, tmp_path):
    test_ids = [i for i, s in zip(tiny["ids"], tiny["split"], strict=True) if s == "test"]
    train = [i for i, s in zip(tiny["ids"], tiny["split"], strict=True) if s == "train"]
    query = indexed["data"] / "images" / f"{test_ids[0]}.png"
    want = brute_force(tiny, test_ids[:1], train, 5)[0]
    (indexed["data"] / "images" / f"{want[1][0]}.png").unlink()  # hit 2's file is gone
    out = tmp_path / "reports" / "why.html"
    script = """
import sys, deploy.cli
rc = deploy.cli.main(sys.argv[1:])
loaded = sorted(m for m in sys.modules if m.split(".")[0] in ("tensorflow", "keras", "keras_ynet"))
print("RESULT", rc, loaded)
"""
    argv = ["search", "--index", indexed["index"], "--encoder", indexed["onnx"], "--image", query,
            "-k", 5, "--report", out, "--json"]  # fmt: skip
    done = subprocess.run([sys.executable, "-c", script, *map(str, argv)], capture_output=True,
                          text=True, cwd=REPO, timeout=120)  # fmt: skip
    assert done.returncode == 0, done.stderr
    printed, result = done.stdout.rsplit("RESULT", 1)
    assert result.split() == ["0", "[]"]  # exit 0, no TensorFlow, Keras or keras_ynet
    hits = json.loads(printed)["results"]  # stdout stays JSON; the paths go to stderr
    assert [(h["id"], h["distance"]) for h in hits] == want
    assert f"wrote {out} and {out.with_suffix('.png')}" in done.stderr
    page = out.read_text()
    assert re.findall(r"<dt>id</dt><dd>([^<]*)</dd>", page) == [query.name] + [
        h["id"] for h in hits
    ]
    for h in hits:
        assert (
            f"distance {h['distance']}</h2>" in page and f"{64 - h['distance']} of 64 bits" in page
        )
        assert f"<dd>{h['label']}</dd>" in page and h["label"] in ("glaucoma", "normal")
    assert page.count("image not shown") == 1 and f"{want[1][0]}.png" in page
    assert "2 x 2 grid" in page and "16 bit(s) per cell" in page
    assert Image.open(out.with_suffix(".png")).size == sheet_size(5, with_grid=True)


def test_search_report_of_an_older_contract_says_why_there_is_no_map(
    tiny, indexed, tmp_path, capsys
):
    (indexed["onnx"].parent / "encoder.json").write_text(indexed["older"])
    query, sheet = tiny["paths"][0], tmp_path / "sheet.png"
    argv = ["search", "--index", indexed["index"], "--encoder", indexed["onnx"], "--image", query,
            "-k", 3]  # fmt: skip
    assert (
        cli.main([str(a) for a in [*argv, "--report", tmp_path / "why.html", "--sheet", sheet]])
        == 0
    )
    out = capsys.readouterr().out
    assert out.splitlines()[-1] == f"wrote {tmp_path / 'why.html'} and {sheet}"
    page = (tmp_path / "why.html").read_text()
    assert "does not record the bit layout (hash_grid)" in page and "re-export" in page
    assert Image.open(sheet).size == sheet_size(3, with_grid=False)
    # A report named .png: the sheet would overwrite it.
    assert cli.main([str(a) for a in [*argv, "--report", tmp_path / "same.png"]]) == 1
    assert "same file" in capsys.readouterr().err


def test_explain_ranks_with_keras_and_draws_masks(tiny, tmp_path, capsys):
    from keras_ynet import explain

    model = tiny["dir"].parent / "model.keras"
    test_ids = [i for i, s in zip(tiny["ids"], tiny["split"], strict=True) if s == "test"]
    train = [i for i, s in zip(tiny["ids"], tiny["split"], strict=True) if s == "train"]
    query = tiny["paths"][tiny["ids"].index(test_ids[0])]
    out = tmp_path / "explain.html"
    argv = ["--model", model, "--image", query, "--data", tiny["data"], "-k", 4, "--out", out]
    assert explain.main([str(a) for a in argv]) == 0
    captured = capsys.readouterr()
    assert f"wrote {out} and {out.with_suffix('.png')}" in captured.out
    assert "encoding 14 train images" in captured.err
    page = out.read_text()
    want = brute_force(tiny, test_ids[:1], train, 4)[0]
    assert re.findall(r"<dt>id</dt><dd>([^<]*)</dd>", page) == test_ids[:1] + [i for i, _ in want]
    assert all(f"distance {d}</h2>" in page for _, d in want)
    assert "Predicted segmentation" in page and "</span>disc" in page and "</span>cup" in page
    assert Image.open(out.with_suffix(".png")).size == sheet_size(4, with_grid=True)
    # Bad arguments: one error line, exit 1.
    argv[1] = tmp_path / "missing.keras"
    assert explain.main([str(a) for a in argv]) == 1
    err = capsys.readouterr().err
    assert err.splitlines()[0].startswith("loading ")  # progress, then one error line
    assert err.splitlines()[1:] == [f"error: {argv[1]}: model file not found"]
    with pytest.raises(FileNotFoundError):
        explain.main([str(a) for a in [*argv, "--debug"]])


# A real browser --------------------------------------------------------------------------


@pytest.mark.skipif(not CHROMIUM.exists(), reason=f"{CHROMIUM} not installed (make browser)")
def test_report_renders_in_headless_chromium(tmp_path):
    report.write_report(literal_report(tmp_path), tmp_path / "why.html")
    (tmp_path / "blank.html").write_text("<!DOCTYPE html><html><body></body></html>")
    check = [sys.executable, str(REPO / "scripts" / "check_report_chromium.py")]
    done = subprocess.run([*check, tmp_path / "why.html", "--screenshot", tmp_path / "shot.png"],
                          capture_output=True, text=True, timeout=180)  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    assert "not blank" in done.stdout and Image.open(tmp_path / "shot.png").size == (1200, 1600)
    done = subprocess.run([*check, tmp_path / "blank.html"], capture_output=True, text=True,
                          timeout=180)  # fmt: skip
    assert done.returncode == 1 and "rendered blank" in done.stderr
