"""Bad input never crashes and never loses data: one case per misuse, over the CLIs and the API.

Every command line keeps one error contract: exit status 1 (2 for a usage error), stderr
exactly one line ``error: ...`` naming the input at fault and the problem, and a
traceback only with ``--debug``. The CLIs run in-process (``main(argv)``); one pair of
subprocesses checks the real process, with and without ``--debug``.

The device cases use a hand-made 8x8-pixel ONNX encoder (:func:`make_encoder`: bit i is
pixel i >= 128), so they need neither TensorFlow nor an export; the Keras cases import
TensorFlow once.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from index_files import edit_items, to_format_1
from onnx import TensorProto, helper, numpy_helper
from PIL import Image

from deploy import cli as deploy_cli
from deploy.encoder import Encoder
from deploy.index import HammingIndex, IndexFormatError
from export.contract_writer import build_contract, write_contract
from keras_ynet.dataset import DatasetError, load_dataset
from keras_ynet.train import main as train_main

REPO = Path(__file__).resolve().parents[1]
SIDE = 16  # dataset images: above preprocess.MIN_SIDE
ENCODER_SIDE = 8  # the hand-made encoder's input: 8 x 8 grey -> 64 bits
FINGERPRINT = "feedc0de00000001"


# Helpers ---------------------------------------------------------------------------------


def make_encoder(folder: Path, fingerprint: str = FINGERPRINT) -> Path:
    """An exported-encoder folder (encoder.onnx + encoder.json) without TensorFlow.

    The graph: uint8 (N, 8, 8, 1) -> hash = tanh(pixel - 127.5) (N, 64) -> code = the signs
    packed MSB first (N, 8), so a code can be checked by hand from the pixels.
    """
    side, bits = ENCODER_SIDE, ENCODER_SIDE * ENCODER_SIDE
    folder.mkdir(parents=True, exist_ok=True)
    constants = {
        "flat_shape": np.array([-1, bits], np.int64),
        "byte_shape": np.array([-1, bits // 8, 8], np.int64),
        "last_axis": np.array([-1], np.int64),
        "place_values": (2.0 ** np.arange(7, -1, -1)).astype(np.float32),
        "half": np.float32(127.5),
        "zero": np.float32(0.0),
    }
    nodes = [
        helper.make_node("Cast", ["image"], ["pixels"], to=TensorProto.FLOAT),
        helper.make_node("Reshape", ["pixels", "flat_shape"], ["flat"]),
        helper.make_node("Sub", ["flat", "half"], ["centred"]),
        helper.make_node("Tanh", ["centred"], ["hash"]),
        helper.make_node("Greater", ["hash", "zero"], ["positive"]),
        helper.make_node("Cast", ["positive"], ["ones"], to=TensorProto.FLOAT),
        helper.make_node("Reshape", ["ones", "byte_shape"], ["grouped"]),
        helper.make_node("Mul", ["grouped", "place_values"], ["weighted"]),
        helper.make_node("ReduceSum", ["weighted", "last_axis"], ["summed"], keepdims=0),
        helper.make_node("Cast", ["summed"], ["code"], to=TensorProto.UINT8),
    ]
    graph = helper.make_graph(
        nodes,
        "hand_made_encoder",
        [helper.make_tensor_value_info("image", TensorProto.UINT8, ["N", side, side, 1])],
        [
            helper.make_tensor_value_info("hash", TensorProto.FLOAT, ["N", bits]),
            helper.make_tensor_value_info("code", TensorProto.UINT8, ["N", bits // 8]),
        ],
        [numpy_helper.from_array(value, name) for name, value in constants.items()],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    helper.set_model_props(model, {"fingerprint": fingerprint})
    onnx.checker.check_model(model)
    onnx.save(model, folder / "encoder.onnx")
    contract = build_contract(
        side, 1, bits, fingerprint, ["sick", "well"], {"onnx": "encoder.onnx"}
    )
    write_contract(folder, contract)
    return folder / "encoder.onnx"


def write_png(path: Path, seed: int, size: tuple[int, int] = (SIDE, SIDE), value=None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    pixels = rng.integers(0, 256, size, dtype=np.uint8) if value is None else np.full(size, value)
    Image.fromarray(pixels.astype(np.uint8)).save(path)
    return path


ROWS = [
    ("a", "sick", "train"),
    ("b", "well", "train"),
    ("c", "sick", "test"),
    ("d", "well", "test"),
]


def write_dataset(root: Path, rows=ROWS, mask_classes=("bg", "fg")) -> Path:
    """A valid dataset: 16x16 grey images, 0/1 masks, train a/b and test c/d."""
    for i, (rid, _, _) in enumerate(rows):
        write_png(root / "images" / f"{rid}.png", seed=i)
        mask = np.zeros((SIDE, SIDE), np.uint8)
        mask[: SIDE // 2] = 1
        (root / "masks").mkdir(exist_ok=True)
        Image.fromarray(mask).save(root / "masks" / f"{rid}.png")
    lines = ["id,image,mask,label,split"]
    lines += [f"{r},images/{r}.png,masks/{r}.png,{label},{split}" for r, label, split in rows]
    (root / "labels.csv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    (root / "dataset.json").write_text(json.dumps({"mask_classes": list(mask_classes)}))
    return root


def assert_one_error(rc: int, err: str, *words, status: int = 1) -> str:
    """The CLI error contract; returns the error line."""
    assert rc == status, err
    assert "Traceback" not in err
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    for word in words:
        assert str(word) in lines[0], f"{word!r} not in {lines[0]!r}"
    return lines[0]


def run(capsys, main, *argv) -> tuple[int, str, str]:
    rc = main([str(a) for a in argv])
    out = capsys.readouterr()
    return rc, out.out, out.err


# Dataset folders: the API lists every problem, every CLI prints one line -----------------


def _rewrite_csv(root: Path, edit) -> None:
    path = root / "labels.csv"
    path.write_text(edit(path.read_text(encoding="utf-8")), encoding="utf-8")


def _mask(root: Path, rid: str, value: int = 1, size=(SIDE, SIDE)) -> None:
    mask = np.zeros(size, np.uint8)
    mask[0, 0] = value
    Image.fromarray(mask).save(root / "masks" / f"{rid}.png")


def _missing_columns(root):
    _rewrite_csv(root, lambda t: t.replace("id,image,mask,label,split", "id,image,mask,lbl,split"))
    return root / "labels.csv", "missing required column(s) label"


def _missing_image(root):
    (root / "images" / "b.png").unlink()
    return root / "images" / "b.png", "image file not found"


def _missing_mask(root):
    (root / "masks" / "c.png").unlink()
    return root / "masks" / "c.png", "mask file not found"


def _duplicate_id(root):
    _rewrite_csv(root, lambda t: t.replace("\nb,", "\na,", 1))
    return root / "labels.csv", "duplicate id (first used in row 1)"


def _unknown_split(root):
    _rewrite_csv(root, lambda t: t.replace("well,train", "well,training"))
    return root / "labels.csv", "unknown split 'training'"


def _no_train_rows(root):
    _rewrite_csv(root, lambda t: t.replace(",train", ",val"))
    return root / "labels.csv", "the train split is empty"


def _no_test_rows(root):
    _rewrite_csv(root, lambda t: t.replace(",test", ",val"))
    return root / "labels.csv", "the test split is empty"


def _class_only_in_test(root):
    _rewrite_csv(
        root,
        lambda t: t.replace("c,images/c.png,masks/c.png,sick", "c,images/c.png,masks/c.png,rare"),
    )
    return root / "labels.csv", "label 'rare' has no train rows"


def _mask_values_outside_classes(root):
    _mask(root, "d", value=7)
    return root / "masks" / "d.png", "has values [7] outside the 2 mask classes"


def _mask_size_differs(root):
    _mask(root, "a", size=(SIDE, SIDE - 4))
    return root / "masks" / "a.png", "is 12x16 but its image is 16x16"


def _labels_empty(root):
    (root / "labels.csv").write_bytes(b"")
    return root / "labels.csv", "empty file"


def _labels_not_utf8(root):
    (root / "labels.csv").write_bytes("id,image,mask,label,split\nä,x,,y,train\n".encode("latin-1"))
    return root / "labels.csv", "is not UTF-8 text"


def _labels_binary_garbage(root):
    shutil.copy(root / "images" / "a.png", root / "labels.csv")  # a PNG saved as labels.csv
    return root / "labels.csv", "is not UTF-8 text"


def _labels_utf16(root):
    text = (root / "labels.csv").read_text(encoding="utf-8")
    (root / "labels.csv").write_bytes(text.encode("utf-16-le"))  # Excel's "Unicode text"
    return root / "labels.csv", "holds NUL bytes"


def _labels_missing(root):
    (root / "labels.csv").unlink()
    return root / "labels.csv", "not found: a dataset folder needs labels.csv"


def _folder_missing(root):
    shutil.rmtree(root)
    return root, "dataset folder not found"


def _folder_is_a_file(root):
    shutil.rmtree(root)
    root.write_text("not a folder")
    return root, "is a file, not a folder"


DATASET_CASES = {
    "missing_columns": _missing_columns,
    "missing_image_file": _missing_image,
    "missing_mask_file": _missing_mask,
    "duplicate_ids": _duplicate_id,
    "unknown_split_name": _unknown_split,
    "no_train_rows": _no_train_rows,
    "no_test_rows": _no_test_rows,
    "class_only_in_test": _class_only_in_test,
    "mask_values_outside_classes": _mask_values_outside_classes,
    "mask_size_differs_from_image": _mask_size_differs,
    "labels_csv_empty": _labels_empty,
    "labels_csv_not_utf8": _labels_not_utf8,
    "labels_csv_binary_garbage": _labels_binary_garbage,
    "labels_csv_utf16": _labels_utf16,
    "labels_csv_missing": _labels_missing,
    "dataset_folder_missing": _folder_missing,
    "dataset_folder_is_a_file": _folder_is_a_file,
}


@pytest.fixture
def dataset(tmp_path) -> Path:
    return write_dataset(tmp_path / "data")


@pytest.fixture(scope="module")
def encoder(tmp_path_factory) -> Path:
    return make_encoder(tmp_path_factory.mktemp("encoder") / "art")


@pytest.mark.parametrize("case", DATASET_CASES)
def test_dataset_api_names_file_and_problem(dataset, case):
    culprit, problem = DATASET_CASES[case](dataset)
    with pytest.raises(DatasetError) as info:
        load_dataset(dataset)
    assert str(culprit) in str(info.value) and problem in str(info.value)
    assert str(culprit) in info.value.summary and problem in info.value.summary
    assert "\n" not in info.value.summary


@pytest.mark.parametrize("case", DATASET_CASES)
def test_dataset_train_cli_prints_one_line(dataset, tmp_path, capsys, case):
    culprit, problem = DATASET_CASES[case](dataset)
    rc, _, err = run(capsys, train_main, "--data", dataset, "--out", tmp_path / "run")
    assert_one_error(rc, err, culprit, problem)
    assert not (tmp_path / "run").exists()  # nothing written before the data is checked


def test_every_bad_row_is_listed_but_the_cli_prints_the_first(dataset, tmp_path, capsys):
    _missing_image(dataset)
    _duplicate_id(dataset)
    _mask_values_outside_classes(dataset)
    with pytest.raises(DatasetError) as info:
        load_dataset(dataset)
    assert len(info.value.problems) == 3 and "3 problem(s)" in str(info.value)
    assert all(p in str(info.value) for p in info.value.problems)
    rc, _, err = run(capsys, train_main, "--data", dataset, "--out", tmp_path / "run")
    line = assert_one_error(rc, err, dataset / "labels.csv", "(and 2 more; see --debug)")
    assert info.value.problems[0] in line


DEVICE_DATASET_CASES = {
    "missing_columns": "missing column(s) label",
    "duplicate_ids": "duplicate id 'a'",
    "unknown_split_name": "unknown split 'training'",
    "labels_csv_not_utf8": "is not UTF-8 text",
    "labels_csv_utf16": "holds NUL bytes",
    "labels_csv_missing": "not found",
    "dataset_folder_missing": "dataset folder not found",
}


@pytest.mark.parametrize("case", DEVICE_DATASET_CASES)
def test_dataset_index_build_cli_prints_one_line(encoder, dataset, tmp_path, capsys, case):
    culprit, _ = DATASET_CASES[case](dataset)
    argv = ["index", "build", "--encoder", encoder, "--data", dataset, "--out", tmp_path / "idx"]
    rc, _, err = run(capsys, deploy_cli.main, *argv)
    assert_one_error(rc, err, culprit, DEVICE_DATASET_CASES[case])
    assert not (tmp_path / "idx").exists()


# Index folders ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> Path:
    """Six good 16x16 grey PNGs."""
    folder = tmp_path_factory.mktemp("images")
    for i in range(6):
        write_png(folder / f"img{i}.png", seed=100 + i)
    return folder


@pytest.fixture
def index(encoder, images, tmp_path, capsys) -> Path:
    out = tmp_path / "idx"
    argv = ["index", "build", "--encoder", encoder, "--images", images, "--out", out]
    rc, _, err = run(capsys, deploy_cli.main, *argv)
    assert rc == 0, err
    return out


def _edit_sidecar(folder: Path, **changes) -> Path:
    path = folder / "index.json"
    meta = json.loads(path.read_text())
    meta.update(changes)
    path.write_text(json.dumps(meta))
    return path


def _sidecar(folder: Path) -> dict:
    return json.loads((folder / "index.json").read_text())


def _wrong_fingerprint(folder):
    _edit_sidecar(folder, fingerprint="0123456789abcdef")  # the codes of another encoder
    return folder, "made by encoder '0123456789abcdef', expected 'feedc0de00000001+float'"


def _wrong_bits(folder):
    index = HammingIndex(bits=32, fingerprint=FINGERPRINT)
    index.add(np.zeros(32, np.uint8), id="x")
    index.save(folder)
    return folder, "holds 32-bit codes, expected 64"


def _codes_truncated(folder):
    data = (folder / "codes.npy").read_bytes()
    (folder / "codes.npy").write_bytes(data[: len(data) - 7])
    return folder / "codes.npy", "is missing, truncated or corrupted"


def _codes_corrupted(folder):
    data = bytearray((folder / "codes.npy").read_bytes())
    data[-1] ^= 0x10
    (folder / "codes.npy").write_bytes(bytes(data))
    return folder / "codes.npy", "its sha256 differs"


def _codes_missing(folder):
    (folder / "codes.npy").unlink()
    return folder / "codes.npy", "is missing, truncated or corrupted"


def _sidecar_not_json(folder):
    (folder / "index.json").write_bytes(b"\x00\xffnot json at all")
    return folder / "index.json", "is corrupted or truncated"


def _sidecar_truncated(folder):
    text = (folder / "index.json").read_text()
    (folder / "index.json").write_text(text[: len(text) // 2])
    return folder / "index.json", "is corrupted or truncated"


def _sidecar_not_an_object(folder):
    (folder / "index.json").write_text("[1, 2, 3]")
    return folder / "index.json", "not a JSON object"


def _sidecar_field_missing(folder):
    meta = _sidecar(folder)
    del meta["items_sha256"]
    (folder / "index.json").write_text(json.dumps(meta))
    return folder / "index.json", "'items_sha256' missing or not str"


def _format_1_ids_missing(folder):
    to_format_1(folder)
    meta = _sidecar(folder)
    del meta["ids"]
    (folder / "index.json").write_text(json.dumps(meta))
    return folder / "index.json", "'ids' missing or not list"


def _sidecar_field_wrong_type(folder):
    return _edit_sidecar(folder, count="6"), "'count' missing or not int"


def _sidecar_other_format(folder):
    return _edit_sidecar(folder, format_version=9), "has format 9"


def _sidecar_bad_config(folder):
    return _edit_sidecar(folder, n_trees=0), "n_trees must be an int >= 1"


def _format_1_ids_fewer_than_count(folder):
    to_format_1(folder)
    return _edit_sidecar(folder, ids=_sidecar(folder)["ids"][:-1]), "5 ids for count 6"


def _items_fewer_than_count(folder):
    edit_items(folder, lambda ids, metadata: (ids.pop(), metadata.pop()))
    return folder / "items_offsets.npy", "expected little-endian uint64 (7,) from the sidecar"


def _items_line_damaged(folder):
    data = bytearray((folder / "items.jsonl").read_bytes())
    data[3] = ord("#")  # inside the first line's "id": found by its sha256
    (folder / "items.jsonl").write_bytes(bytes(data))
    return folder / "items.jsonl", "its sha256 differs from the sidecar's"


def _items_missing(folder):
    (folder / "items.jsonl").unlink()
    return folder / "items.jsonl", "is missing or unreadable"


def _ids_and_count_fewer_than_codes(folder):
    edit_items(folder, lambda ids, metadata: (ids.pop(), metadata.pop()))
    _edit_sidecar(folder, count=5, n_delta=5)
    return folder / "codes.npy", "holds uint8 (6, 8), expected C-order uint8 (5, 8)"


def _sidecar_missing(folder):
    (folder / "index.json").unlink()
    return folder, "index.json is missing"


def _index_folder_missing(folder):
    shutil.rmtree(folder)
    return folder, "no index at"


INDEX_CASES = {
    "wrong_encoder_fingerprint": _wrong_fingerprint,
    "wrong_encoder_bits": _wrong_bits,
    "codes_file_truncated": _codes_truncated,
    "codes_file_missing": _codes_missing,
    "sidecar_not_json": _sidecar_not_json,
    "sidecar_truncated": _sidecar_truncated,
    "sidecar_not_an_object": _sidecar_not_an_object,
    "sidecar_field_missing": _sidecar_field_missing,
    "format_1_ids_missing": _format_1_ids_missing,
    "sidecar_field_wrong_type": _sidecar_field_wrong_type,
    "sidecar_other_format": _sidecar_other_format,
    "sidecar_bad_config": _sidecar_bad_config,
    "format_1_ids_fewer_than_count": _format_1_ids_fewer_than_count,
    "items_fewer_than_count": _items_fewer_than_count,
    "items_missing": _items_missing,
    "ids_and_count_fewer_than_codes": _ids_and_count_fewer_than_codes,
    "sidecar_missing": _sidecar_missing,
    "index_folder_missing": _index_folder_missing,
}


@pytest.mark.parametrize("case", INDEX_CASES)
def test_bad_index_search_cli_prints_one_line(encoder, images, index, capsys, case):
    culprit, problem = INDEX_CASES[case](index)
    argv = ["search", "--index", index, "--encoder", encoder, "--image", images / "img0.png"]
    rc, out, err = run(capsys, deploy_cli.main, *argv)
    assert_one_error(rc, err, culprit, problem)
    assert out == ""


# Damage only the stored sha256 can show. Search hashes a folder of ordinary size on
# every open (deploy.mapped_index.VERIFY_MAX_BYTES); a larger one opens in O(1) and is
# checked by `index verify`, which reads every byte.
HASH_CASES = {
    "codes_file_corrupted": _codes_corrupted,
    "items_line_damaged": _items_line_damaged,
}


@pytest.mark.parametrize("command", ["search", "verify"])
@pytest.mark.parametrize("case", HASH_CASES)
def test_damage_only_a_hash_shows_is_found(encoder, images, index, capsys, case, command):
    culprit, problem = HASH_CASES[case](index)
    if command == "search":
        argv = ["search", "--index", index, "--encoder", encoder, "--image", images / "img0.png"]
    else:
        argv = ["index", "verify", "--index", index]
    rc, out, err = run(capsys, deploy_cli.main, *argv)
    assert_one_error(rc, err, culprit, problem)
    assert out == ""


@pytest.mark.parametrize("case", HASH_CASES)
def test_a_large_folder_opens_without_hashing(index, monkeypatch, case):
    from deploy import mapped_index

    HASH_CASES[case](index)
    monkeypatch.setattr(mapped_index, "VERIFY_MAX_BYTES", 0)  # every folder counts as large
    opened = mapped_index.MappedIndex.open(index)
    assert len(opened) == 6
    with pytest.raises(IndexFormatError, match="sha256 differs"):
        mapped_index.MappedIndex.open(index, verify=True)


def test_wrong_code_dimension_in_sidecar_is_a_format_error(index):
    # The sidecar claims 128-bit codes over a file of 64-bit ones.
    _edit_sidecar(index, bits=128)
    with pytest.raises(
        IndexFormatError, match=r"codes\.npy holds uint8 \(6, 8\), expected uint8 \(6, 16\)"
    ):
        HammingIndex.load(index)


@pytest.mark.parametrize("k", [0, -3])
def test_search_k_below_one_is_an_error(encoder, images, index, capsys, k):
    argv = [
        "search",
        "--index",
        index,
        "--encoder",
        encoder,
        "--image",
        images / "img0.png",
        "-k",
        k,
    ]
    assert_one_error(*run(capsys, deploy_cli.main, *argv)[::2], f"-k must be >= 1, got {k}")


def test_search_k_larger_than_the_index_returns_everything(encoder, images, index, capsys):
    argv = ["search", "--index", index, "--encoder", encoder, "--image", images / "img3.png"]
    rc, out, err = run(capsys, deploy_cli.main, *argv, "-k", 50, "--json")
    assert rc == 0, err
    results = json.loads(out)["results"]
    assert [r["rank"] for r in results] == [1, 2, 3, 4, 5, 6]  # all 6, though 50 were asked
    assert (results[0]["id"], results[0]["distance"]) == ("img3.png", 0)


def test_search_query_image_missing(encoder, index, tmp_path, capsys):
    query = tmp_path / "nowhere.png"
    argv = ["search", "--index", index, "--encoder", encoder, "--image", query]
    assert_one_error(*run(capsys, deploy_cli.main, *argv)[::2], query, "not found")


def test_search_encoder_missing(index, images, tmp_path, capsys):
    argv = ["search", "--index", index, "--encoder", tmp_path / "none" / "encoder.onnx",
            "--image", images / "img0.png"]  # fmt: skip
    assert_one_error(*run(capsys, deploy_cli.main, *argv)[::2], tmp_path / "none", "not found")


def test_build_over_an_index_needs_overwrite(encoder, images, index, capsys):
    before = {p.name: p.read_bytes() for p in index.iterdir()}
    argv = ["index", "build", "--encoder", encoder, "--images", images, "--out", index]
    assert_one_error(*run(capsys, deploy_cli.main, *argv)[::2], index, "--overwrite")
    assert {p.name: p.read_bytes() for p in index.iterdir()} == before


def test_build_never_replaces_a_folder_that_is_not_an_index(encoder, images, tmp_path, capsys):
    folder = tmp_path / "my_documents"
    (folder / "notes.txt").parent.mkdir()
    (folder / "notes.txt").write_text("precious")
    argv = ["index", "build", "--encoder", encoder, "--images", images, "--out", folder]
    assert_one_error(
        *run(capsys, deploy_cli.main, *argv, "--overwrite")[::2], folder, "not an index folder"
    )
    assert [p.name for p in folder.iterdir()] == ["notes.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["my_documents"]


def test_add_skips_bad_files_and_keeps_the_good_ones(encoder, images, index, tmp_path, capsys):
    new = tmp_path / "new"
    write_png(new / "good1.png", seed=7)
    write_png(new / "sub" / "good2.png", seed=8)
    (new / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    (new / "empty.png").write_bytes(b"")
    argv = ["index", "add", "--index", index, "--encoder", encoder, "--images", new]
    before = HammingIndex.load(index).ids
    rc, out, err = run(capsys, deploy_cli.main, *argv)  # without --skip-bad: nothing added
    assert rc == 1 and out == "" and "cannot read 2 bad file(s):" in err
    assert "error: 2 of 4 images could not be read (listed above)" in err
    assert "nothing was written (--skip-bad indexes the others)" in err
    assert HammingIndex.load(index).ids == before
    rc, out, err = run(capsys, deploy_cli.main, *argv, "--skip-bad")
    assert rc == 0, err
    assert "skipped 2 bad file(s)" in err and "Traceback" not in err
    assert str(new / "broken.png") in err and str(new / "empty.png") in err
    assert "added 2 image(s)" in out and "skipped 2 unreadable file(s) (--skip-bad)" in out
    loaded = HammingIndex.load(index, expected_fingerprint=FINGERPRINT + "+float", expected_bits=64)
    assert len(loaded) == 8
    bits = Encoder.open(encoder).encode_file(new / "sub" / "good2.png")
    assert [(h.id, h.distance) for h in loaded.lookup(bits, 1)] == [("sub/good2.png", 0)]


def test_build_over_only_bad_files_writes_nothing(encoder, tmp_path, capsys):
    # Needs deploy/cli.py to raise one line instead of listing the skipped files first.
    bad = tmp_path / "bad"
    bad.mkdir()
    for name in ("a.png", "b.png", "c.png"):
        (bad / name).write_bytes(b"not an image")
    argv = ["index", "build", "--encoder", encoder, "--images", bad, "--out", tmp_path / "idx"]
    assert_one_error(
        *run(capsys, deploy_cli.main, *argv)[::2], "none of the 3 images", bad / "a.png"
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad"]


@pytest.mark.parametrize("command", ["deploy_search", "train"])
def test_usage_errors_exit_2(encoder, capsys, command):
    main, argv, flag = {
        "deploy_search": (deploy_cli.main, ["search", "--encoder", str(encoder)], "--index"),
        "train": (train_main, ["--batch-size", "0"], "--batch-size"),
    }[command]
    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code == 2 and flag in capsys.readouterr().err


# Keras models --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def keras_files(tmp_path_factory):
    """A Sequential (not a YNet), the same truncated, a text file and a Lambda model."""
    import keras

    folder = tmp_path_factory.mktemp("models")
    plain = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
    plain.save(folder / "sequential.keras")
    data = (folder / "sequential.keras").read_bytes()
    (folder / "truncated.keras").write_bytes(data[: len(data) // 2])
    (folder / "text.keras").write_text("this is not a model\n")
    lam = keras.Sequential([keras.Input((4,)), keras.layers.Lambda(lambda x: x * 2)])
    lam.save(folder / "lambda.keras")
    return folder


MODEL_CASES = {
    "missing": ("missing.keras", "model file not found"),
    "not_a_keras_archive": ("text.keras", "not a Keras model archive"),
    "truncated": ("truncated.keras", "not a complete zip file: truncated"),
    "wrong_kind": ("sequential.keras", "holds a Sequential, not a YNet"),
    "lambda_layer": ("lambda.keras", "refused: loading it would run code"),
}


@pytest.mark.parametrize("case", MODEL_CASES)
def test_export_cli_bad_model(keras_files, dataset, tmp_path, capsys, case):
    from export.__main__ import main as export_main

    name, problem = MODEL_CASES[case]
    argv = ["--model", keras_files / name, "--data", dataset, "--out", tmp_path / "art"]
    rc, _, err = run(capsys, export_main, *argv)
    assert_one_error(rc, err, keras_files / name, problem)
    assert not (tmp_path / "art").exists()


@pytest.mark.parametrize("case", ["wrong_kind", "truncated", "missing"])
def test_evaluate_cli_bad_model(keras_files, dataset, capsys, case):
    from keras_ynet.evaluate import main as evaluate_main

    name, problem = MODEL_CASES[case]
    rc, _, err = run(capsys, evaluate_main, "--model", keras_files / name, "--data", dataset)
    assert_one_error(rc, err, keras_files / name, problem)


def test_load_ynet_uses_safe_mode_only(keras_files, monkeypatch):
    import keras

    from keras_ynet.saving import load_ynet

    with pytest.raises(ValueError, match="Lambda"):
        load_ynet(keras_files / "lambda.keras")
    seen = {}

    def spy(path, **kwargs):
        seen.update(kwargs)
        raise ValueError("stop")

    monkeypatch.setattr(keras.saving, "load_model", spy)
    with pytest.raises(ValueError):
        load_ynet(keras_files / "sequential.keras")
    assert seen["safe_mode"] is True


def test_debug_shows_the_traceback_in_a_real_process(tmp_path):
    """The same failure, as the shell sees it: one line and status 1; --debug: traceback."""
    missing = tmp_path / "no_such_folder"
    argv = [
        sys.executable,
        "-m",
        "keras_ynet.train",
        "--data",
        str(missing),
        "--out",
        str(tmp_path),
    ]
    plain = subprocess.run(argv, capture_output=True, text=True, cwd=REPO, timeout=120)
    assert plain.returncode == 1
    assert plain.stderr == f"error: dataset folder not found: {missing}\n"
    debug = subprocess.run(
        [*argv, "--debug"], capture_output=True, text=True, cwd=REPO, timeout=120
    )
    assert debug.returncode == 1
    assert "Traceback" in debug.stderr and "DatasetError: dataset folder not found" in debug.stderr
