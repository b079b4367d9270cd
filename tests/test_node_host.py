"""The Node.js host (deploy/node) gives the same packed codes as Python + ONNX Runtime.

Grey JSRT X-rays (256 px, resized to the 64 px model) and RGB phantoms (48 px, enlarged)
go through a grey and an RGB model, so every decoding, resizing and channel path runs.
"""

from __future__ import annotations

import json
import shutil
import subprocess

import numpy as np
import pytest
from conftest import REPO, SHARED_DATA, TINY
from PIL import Image
from test_image_formats import png_bytes

from deploy import codes
from deploy.index import HammingIndex
from deploy.preprocess import load_image, prepare_image
from export.contract_writer import build_contract, write_contract
from export.onnx_export import export_onnx, run_onnx
from export.serving_graph import EncoderModule
from keras_ynet.fingerprint import model_fingerprint
from keras_ynet.model import YNet
from keras_ynet.phantoms import make_phantoms
from keras_ynet.ynet_codes import calibrate_bit_thresholds

NODE_DIR = REPO / "deploy" / "node"
SIZE = 64

pytestmark = pytest.mark.skipif(
    shutil.which("node") is None or not (NODE_DIR / "node_modules").is_dir(),
    reason="needs node and deploy/node/node_modules (make node)",
)


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    jsrt = SHARED_DATA / "jsrt" / "images"
    if not jsrt.is_dir():
        pytest.skip(f"{jsrt} is absent")
    grey = sorted(jsrt.glob("*.png"))[:3]
    spec = make_phantoms(tmp_path_factory.mktemp("ph") / "ph", n_per_class=2, image_size=48)
    return grey + [r.image for r in spec.records[:3]]


def export_tiny(folder, channels, images):
    """A tiny YNet with thresholds fitted on ``images``, as encoder.onnx + encoder.json."""
    model = YNet(**{**TINY, "input_shape": (SIZE, SIZE, channels)}, class_names=["a", "b"])
    calibrate_bit_thresholds(model, images)
    export_onnx(EncoderModule(model), folder / "encoder.onnx", {"note": "test"})
    contract = build_contract(
        SIZE, channels, 64, model_fingerprint(model), ["a", "b"], {"onnx": "encoder.onnx"}
    )
    return write_contract(folder, contract)


def run_node(*args):
    return subprocess.run(
        ["node", str(NODE_DIR / "encode.js"), *map(str, args)],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip


@pytest.mark.parametrize("channels", [1, 3])
def test_node_codes_equal_python_onnxruntime(images, tmp_path, channels):
    prepared = np.stack([prepare_image(load_image(p), SIZE, channels) for p in images])
    contract = export_tiny(tmp_path, channels, prepared)
    result = run_node("--contract", contract, "--dump-inputs", tmp_path / "in", *images)
    assert result.returncode == 0, result.stderr
    lines = [line.rsplit(" ", 1) for line in result.stdout.splitlines()]
    assert [path for path, _ in lines] == [str(p) for p in images]

    expected = run_onnx(tmp_path / "encoder.onnx", prepared)["code"]
    assert [bytes.fromhex(code) for _, code in lines] == [row.tobytes() for row in expected]
    assert len({code for _, code in lines}) > 1  # not a constant code

    # The Node host's model input equals deploy.preprocess's, byte for byte.
    for i, path in enumerate(images):
        node_input = np.fromfile(tmp_path / "in" / f"{i}.u8", np.uint8)
        np.testing.assert_array_equal(node_input.reshape(prepared[i].shape), prepared[i], str(path))


def test_node_host_errors_name_the_file(images, tmp_path):
    two_images = np.stack(
        [np.zeros((SIZE, SIZE, 1), np.uint8), np.full((SIZE, SIZE, 1), 9, np.uint8)]
    )
    contract = export_tiny(tmp_path, 1, two_images)
    not_png = tmp_path / "scan.png"
    not_png.write_bytes(b"not a png")
    result = run_node("--contract", contract, not_png)
    assert result.returncode == 1
    assert result.stderr.strip().startswith(f"error: {not_png}: not a readable PNG")
    result = run_node("--contract", tmp_path / "missing.json", images[0])
    assert (
        result.returncode == 1 and "missing.json: cannot read the encoder contract" in result.stderr
    )


def test_node_host_refuses_bombs_and_tiny_images_from_the_header(images, tmp_path):
    contract = export_tiny(tmp_path, 1, np.zeros((2, SIZE, SIZE, 1), np.uint8))
    bomb, tiny = tmp_path / "bomb.png", tmp_path / "tiny.png"
    bomb.write_bytes(png_bytes(50000, 50000, b""))  # the header alone claims 2.5e9 pixels
    Image.fromarray(np.zeros((1, 1), np.uint8)).save(tiny)
    result = run_node("--contract", contract, bomb)
    assert result.returncode == 1 and result.stderr.count("\n") == 1
    assert f"{bomb}: 50000x50000 pixels is more than" in result.stderr
    result = run_node("--contract", contract, tiny)
    assert result.returncode == 1 and f"{tiny}: 1x1 pixels: a side is under 8" in result.stderr


def test_node_host_refuses_an_altered_model(tmp_path):
    contract = export_tiny(tmp_path, 1, np.zeros((2, SIZE, SIZE, 1), np.uint8))
    image = tmp_path / "a.png"
    Image.fromarray(np.full((SIZE, SIZE), 90, np.uint8)).save(image)
    assert run_node("--contract", contract, image).returncode == 0
    model = tmp_path / "encoder.onnx"
    data = bytearray(model.read_bytes())
    data[len(data) // 2] ^= 0x01
    model.write_bytes(bytes(data))
    result = run_node("--contract", contract, image)
    assert result.returncode == 1 and result.stderr.count("\n") == 1
    assert result.stderr.startswith(f"error: {model} was altered or replaced: its sha256 ")
    raw = json.loads(contract.read_text())
    del raw["artifacts"]
    contract.write_text(json.dumps(raw))
    result = run_node("--contract", contract, image)
    assert result.returncode == 1 and result.stderr == (
        f"error: {contract} records no sha256 for encoder.onnx (exported before model files "
        "were hashed): re-export the model\n"
    )


# Search and golden vectors ----------------------------------------------------------------


def run_search(*args):
    return subprocess.run(
        ["node", str(NODE_DIR / "search.js"), *map(str, args)],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip


def test_node_search_equals_python(art, tmp_path, capsys):
    from test_deploy import run_cli

    onnx, index = art["dir"] / "encoder.onnx", tmp_path / "idx"
    rc, _, err = run_cli(capsys, "index", "build", "--encoder", onnx, "--data", art["data"],
                         "--split", "all", "--out", index)  # fmt: skip
    assert rc == 0, err
    distances = set()
    for path in art["paths"][:6]:
        rc, out, err = run_cli(capsys, "search", "--index", index, "--encoder", onnx,
                               "--image", path, "-k", 16, "--json")  # fmt: skip
        assert rc == 0, err
        python = json.loads(out)["results"]
        result = run_search("--index", index, "--contract", art["dir"] / "encoder.json",
                            "-k", 16, "--json", path)  # fmt: skip
        assert result.returncode == 0, result.stderr
        node = json.loads(result.stdout)
        assert node["results"] == python  # ids, distances, ranks, labels, paths; tie order
        distances.update(h["distance"] for h in python)
        by_code = run_search("--index", index, "-k", 3,
                             "--code", codes.pack_bits(art["bits"][path.stem][None])[0].tobytes().hex())  # fmt: skip
        assert by_code.stdout.splitlines() == [
            f"{h['rank']} {h['id']} {h['distance']}" for h in python[:3]
        ]
    assert len(distances) > 3  # not a degenerate index
    # A damaged codes file is refused, naming it, as in Python.
    data = bytearray((index / "codes.npy").read_bytes())
    data[-1] ^= 1
    (index / "codes.npy").write_bytes(bytes(data))
    result = run_search("--index", index, "--code", "00" * 8)
    assert result.returncode == 1 and result.stderr == (
        f"error: codes file {index}/codes.npy is corrupted: its sha256 differs from the sidecar's\n"
    )


def test_node_host_checks_itself_against_golden_json(art, tmp_path):
    golden = art["dir"] / "golden.json"
    result = run_search("--check", golden, "--data", art["data"])
    assert result.returncode == 0, result.stderr
    assert result.stdout == "ok: 8 image(s) and 8 search(es) as golden.json\n"
    result = run_search("--check", golden)
    assert result.stdout == (
        "ok: 6 image(s) and 8 search(es) as golden.json (2 dataset image(s) not checked: "
        "give --data)\n"
    )
    # A wrong expected code is found and named.
    folder = tmp_path / "art"
    shutil.copytree(art["dir"], folder)
    document = json.loads((folder / "golden.json").read_text())
    first = document["images"][0]
    first["code"] = f"{int(first['code'][:2], 16) ^ 1:02x}" + first["code"][2:]
    (folder / "golden.json").write_text(json.dumps(document))
    result = run_search("--check", folder / "golden.json")
    assert result.returncode == 1
    assert result.stderr.startswith(
        f"error: {folder}/golden.json: image golden/g0_grey_exact.png: code "
    )


FORMAT1 = REPO / "tests" / "data" / "index_format1"


def test_node_search_reads_format_1_and_2_as_python(tmp_path):
    """The format-1 fixture and its format-2 save give Python's hits; a damaged line of
    items.jsonl is named with its position, as in Python."""
    from deploy.mapped_index import MappedIndex
    from deploy.search_report import hit_json

    HammingIndex.load(FORMAT1).save(tmp_path / "v2")
    query = "f63ed9a6ee155bc9"  # item 0's code
    python = [hit_json(h) for h in MappedIndex.open(FORMAT1).lookup(
        np.frombuffer(bytes.fromhex(query), np.uint8), 6)]  # fmt: skip
    assert [(h["id"], h["distance"]) for h in python] == [
        ("case-001", 0),
        (7, 31),
        ("café/ü.png", 32),
        ("case-002", 34),
        (42, 34),
        ("case-005", 35),
    ]  # a tie at 34: position order
    for folder in (FORMAT1, tmp_path / "v2"):
        result = run_search("--index", folder, "--code", query, "-k", 6, "--json")
        assert result.returncode == 0, result.stderr
        assert json.loads(result.stdout)["results"] == python
    lines = (tmp_path / "v2" / "items.jsonl").read_bytes().split(b"\n")
    lines[2] = b"#" * len(lines[2])  # item 2 (id 7, the second hit): same size, not JSON
    (tmp_path / "v2" / "items.jsonl").write_bytes(b"\n".join(lines))
    result = run_search("--index", tmp_path / "v2", "--code", query, "-k", 1)
    assert (result.returncode, result.stdout) == (0, "1 case-001 0\n")  # item 2 is not read
    result = run_search("--index", tmp_path / "v2", "--code", query, "-k", 2)
    assert result.returncode == 1 and result.stderr.startswith(
        f"error: items file {tmp_path / 'v2' / 'items.jsonl'} is corrupted at item 2 (line 3): "
        "not JSON"
    )
