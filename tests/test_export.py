"""Encoder export: contract, named ONNX interface, int64-free packing, parity, atomicity."""

from __future__ import annotations

import datetime
import hashlib
import json

import numpy as np
import onnx
import pytest
from conftest import TINY

from deploy.codes import pack_bits, signs_to_bits
from deploy.contract import ContractError, load_contract
from export import exporter
from export import parity as export_parity
from export.__main__ import main
from export.onnx_export import packing_path_dtypes, read_metadata, run_onnx
from export.parity import ParityError, compare_float, prepare_records
from keras_ynet.fingerprint import model_fingerprint
from keras_ynet.model import YNet
from keras_ynet.phantoms import make_phantoms
from keras_ynet.saving import load_ynet, save_ynet
from keras_ynet.ynet_codes import calibrate_bit_thresholds

RGB_TINY = {**TINY, "input_shape": (64, 64, 3)}


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """A tiny RGB YNet with balanced bits, exported once by the CLI on 16 phantoms."""
    root = tmp_path_factory.mktemp("export")
    spec = make_phantoms(root / "data", n_per_class=8, image_size=64, seed=0)
    train = prepare_records(spec.split("train"), 64, 3)
    model = YNet(**RGB_TINY, class_names=spec.class_names)
    calibrate_bit_thresholds(model, train)
    model_path = save_ynet(model, root / "run" / "model.keras")
    assert (
        main(
            [
                "--model",
                str(model_path),
                "--data",
                str(spec.root),
                "--out",
                str(root / "art"),
                "--keep-flagged-int8",
            ]
        )  # fmt: skip
        == 0
    )
    return {"root": root, "spec": spec, "model_path": model_path, "art": root / "art"}


def images_of(spec):
    return prepare_records(spec.records, 64, 3)


def test_artifacts_and_contract(exported):
    art = exported["art"]
    names = {"encoder.onnx", "encoder.tflite", "encoder_int8.tflite", "encoder.json", "parity.json",
             "golden.json", "golden"}  # fmt: skip
    assert {p.name for p in art.iterdir()} == names
    contract = load_contract(art, check_files=True)
    assert (contract.image_size, contract.channels, contract.bits) == (64, 3, 64)
    assert contract.code_bytes == 8
    assert contract.class_names == ["glaucoma", "normal"]
    assert contract.fingerprint == model_fingerprint(load_ynet(exported["model_path"]))
    assert contract.files == {
        "onnx": "encoder.onnx", "tflite": "encoder.tflite", "tflite_int8": "encoder_int8.tflite"
    }  # fmt: skip
    raw = contract.raw
    assert raw["input"] | {"note": None} == {
        "name": "image", "shape": [None, 64, 64, 3], "dtype": "uint8", "layout": "NHWC",
        "channels": 3, "colour": "rgb", "value_range": [0, 255], "note": None,
    }  # fmt: skip
    resize = raw["preprocessing"]["resize"]
    assert (resize["method"], resize["antialias_when_shrinking"], resize["keep_aspect"]) == (
        "bilinear", True, False
    )  # fmt: skip
    assert resize["size"] == [64, 64]
    assert raw["preprocessing"]["channels"]["rgb_to_grey"]["weights"] == [0.299, 0.587, 0.114]
    assert (raw["bit_rule"], raw["bit_order"]) == ("hash > 0 -> 1", "msb_first")
    assert raw["outputs"]["hash"]["shape"] == [None, 64]
    assert raw["outputs"]["code"] == {
        **raw["outputs"]["code"],
        "shape": [None, 8],
        "dtype": "uint8",
    }


def test_onnx_interface_is_named_with_dynamic_batch(exported):
    model = onnx.load(str(exported["art"] / "encoder.onnx"))
    assert model.opset_import[0].version == 17
    (inp,) = model.graph.input
    assert inp.name == "image"
    assert inp.type.tensor_type.elem_type == onnx.TensorProto.UINT8
    outputs = {o.name: o.type.tensor_type for o in model.graph.output}
    assert set(outputs) == {"hash", "code"}
    assert outputs["hash"].elem_type == onnx.TensorProto.FLOAT
    assert outputs["code"].elem_type == onnx.TensorProto.UINT8
    for value in [inp, *model.graph.output]:
        assert value.type.tensor_type.shape.dim[0].dim_param == "batch"


def test_no_int64_between_hash_and_code(exported):
    dtypes = packing_path_dtypes(onnx.load(str(exported["art"] / "encoder.onnx")))
    assert dtypes["hash"] == "FLOAT" and dtypes["code"] == "UINT8"
    assert "INT64" not in dtypes.values()
    assert set(dtypes.values()) <= {"FLOAT", "BOOL", "INT32", "UINT8"}


def test_onnx_metadata_records_provenance(exported):
    meta = read_metadata(exported["art"] / "encoder.onnx")
    contract = load_contract(exported["art"])
    assert meta["fingerprint"] == contract.fingerprint
    assert meta["bits"] == "64"
    assert json.loads(meta["class_names"]) == ["glaucoma", "normal"]
    assert meta["training_data"] == "phantoms-fundus"
    assert meta["keras_ynet_version"] == "0.1.0"
    age = datetime.datetime.now(datetime.UTC) - datetime.datetime.fromisoformat(meta["export_date"])
    assert datetime.timedelta(0) <= age < datetime.timedelta(hours=1)


def test_float_exports_give_keras_bits(exported):
    from export.litert_export import run_tflite

    images = images_of(exported["spec"])
    model = load_ynet(exported["model_path"])
    # The full model (all three branches), not the sub-model the parity check uses.
    keras_bits = signs_to_bits(model.predict(images.astype(np.float32), verbose=0)["hash"])
    assert 0.3 < keras_bits.mean() < 0.7  # calibrated: not all ones
    for out in (
        run_onnx(exported["art"] / "encoder.onnx", images, batch_size=5),
        run_tflite(exported["art"] / "encoder.tflite", images, batch_size=5),
    ):
        np.testing.assert_array_equal(signs_to_bits(out["hash"]), keras_bits)
        np.testing.assert_array_equal(out["code"], pack_bits(keras_bits))


def test_parity_report_and_int8_agreement(exported):
    report = json.loads((exported["art"] / "parity.json").read_text())
    assert report["images"] == {"test": 2, "train": 14}
    for name in ("encoder.onnx", "encoder.tflite"):
        assert report["float"][name]["bits_identical"] is True
        assert report["float"][name]["mismatching_images"] == []
        assert report["float"][name]["code_equals_pack_bits"] is True
    int8 = report["int8"]
    assert int8["images"] == 16
    # The agreement it reports is the one measured here: int8 bits against Keras bits.
    from export.litert_export import run_tflite

    images = images_of(exported["spec"])
    model = load_ynet(exported["model_path"])
    keras_bits = signs_to_bits(model.predict(images.astype(np.float32), verbose=0)["hash"])
    int8_out = run_tflite(exported["art"] / "encoder_int8.tflite", images, batch_size=5)
    measured = np.mean(signs_to_bits(int8_out["hash"]) == keras_bits)
    assert int8["bit_agreement"] == pytest.approx(measured)
    assert report["int8_flagged"] == (int8["bit_agreement"] < 0.99)
    assert int8["map_convention"] == "k"
    assert int8["map_at_10_change"] == pytest.approx(
        int8["map_at_10_int8"] - int8["map_at_10_float"]
    )
    assert int8["code_equals_pack_bits"] is True


def test_pack_sign_bits_matches_numpy_packbits():
    import tensorflow as tf

    from export.serving_graph import pack_sign_bits

    values = np.array(
        [[0.5] + [-0.5] * 7 + [0.0, -0.0, 1e-7, -1e-7, 0.9, 0.9, 0.9, 0.9],  # bytes 0x80, 0x2f
         [0.1] * 8 + [-0.1] * 8],  # bytes 0xff, 0x00
        np.float32,
    )  # fmt: skip
    packed = pack_sign_bits(tf.constant(values)).numpy()
    assert packed.dtype == np.uint8
    np.testing.assert_array_equal(packed, [[0x80, 0x2F], [0xFF, 0x00]])
    np.testing.assert_array_equal(packed, pack_bits(signs_to_bits(values)))


def test_fingerprint_covers_encoder_weights_only(tmp_path):
    model = YNet(**TINY)
    first = model_fingerprint(model)
    assert len(first) == 16 and int(first, 16) >= 0
    assert model_fingerprint(load_ynet(save_ynet(model, tmp_path / "m.keras"))) == first
    rmac = model.get_layer("rmac_conv").kernel  # R-MAC branch: not in the encoder
    rmac.assign(rmac.numpy() + 1.0)
    assert model_fingerprint(model) == first
    model.get_layer("hash").thresholds.assign(np.full(64, 0.25, np.float32))
    assert model_fingerprint(model) != first


def test_float_mismatch_names_file_and_images():
    signs = np.array([[1, -1, 1, 1, -1, -1, -1, 1], [-1] * 8, [1] * 8], np.float32)
    reference = 0.5 * signs  # Keras bits: bytes 0xb1, 0x00, 0xff
    good = {"hash": reference.copy(), "code": np.array([[0xB1], [0x00], [0xFF]], np.uint8)}
    assert compare_float("encoder.onnx", good, reference, ["a", "b", "c"])["bits_identical"]
    flipped = {**good, "hash": good["hash"] * np.array([1, 1, -1])[:, None].astype(np.float32)}
    with pytest.raises(ParityError, match=r"encoder\.onnx: .* on 1 of 3 images \(8 bits, "):
        compare_float("encoder.onnx", flipped, reference, ["a", "b", "c"])
    wrong_code = {**good, "code": good["code"][::-1].copy()}
    with pytest.raises(ParityError, match=r"encoder\.onnx: the code output is not pack_bits"):
        compare_float("encoder.onnx", wrong_code, reference, ["a", "b", "c"])
    nan = {**good, "hash": np.full((3, 8), np.nan, np.float32)}
    with pytest.raises(ParityError, match=r"encoder\.tflite: .*NaN"):
        compare_float("encoder.tflite", nan, reference, ["a", "b", "c"])
    # Bits agree but a value moved by more than rounding: the export computes another thing.
    moved = {**good, "hash": good["hash"] * np.float32(0.99)}
    with pytest.raises(ParityError, match=r"encoder\.onnx: hash values differ .* up to 0\.005"):
        compare_float("encoder.onnx", moved, reference, ["a", "b", "c"])


def test_a_bit_at_its_threshold_may_differ_by_rounding():
    # Image b's bit 7 is 2e-7 from zero in Keras; the runtime rounds it to the other side
    # (1e-6 away: float rounding). The bit differs, the export stands, the tie is counted.
    reference = np.array([[0.5] * 8, [-0.5] * 7 + [2e-7]], np.float32)
    runtime = reference.copy()
    runtime[1, 7] = -8e-7
    outputs = {"hash": runtime, "code": np.array([[0xFF], [0x00]], np.uint8)}
    entry = compare_float("encoder.tflite", outputs, reference, ["a", "b"])
    assert (entry["bits_identical"], entry["mismatching_images"]) == (False, ["b"])
    assert (entry["mismatching_bits"], entry["tie_bits_differing"]) == (1, 1)
    assert entry["max_abs_hash_diff"] == pytest.approx(1e-6)
    # The same flip 0.01 from zero is no tie.
    reference[1, 7], runtime[1, 7] = 0.01, -0.01
    with pytest.raises(ParityError, match=r"on 1 of 2 images \(1 bits, each further than 0\.001"):
        compare_float("encoder.tflite", outputs, reference, ["a", "b"])


@pytest.mark.slow  # measured: several seconds; `make test` runs it
def test_failed_parity_leaves_nothing_behind(exported, monkeypatch, capsys):
    def fail(*args, **kwargs):
        raise ParityError("encoder.tflite: sign bits differ from Keras on 1 of 16 images: x")

    monkeypatch.setattr(exporter, "check_parity", fail)
    root, art = exported["root"], exported["art"]
    before = {p.name: p.read_bytes() for p in art.rglob("*") if p.is_file()}
    argv = ["--model", str(exported["model_path"]), "--data", str(exported["spec"].root)]
    assert main([*argv, "--out", str(root / "new"), "--no-int8"]) == 1
    assert main([*argv, "--out", str(art), "--no-int8"]) == 1  # a previous export stays
    err = capsys.readouterr().err
    assert "error: encoder.tflite: sign bits differ" in err and "Traceback" not in err
    assert not (root / "new").exists()
    assert {p.name: p.read_bytes() for p in art.rglob("*") if p.is_file()} == before
    assert not [p for p in root.iterdir() if p.name.startswith(".")]  # no temporary folders


def test_cli_errors_are_one_line(tmp_path, capsys):
    data = tmp_path / "data"
    data.mkdir()
    missing = tmp_path / "run" / "model.keras"
    assert main(["--model", str(missing), "--data", str(data), "--out", str(tmp_path / "a")]) == 1
    err = capsys.readouterr().err
    assert err.splitlines()[-1] == f"error: {missing}: model file not found"
    assert "Traceback" not in err
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "notes.txt").write_text("keep me")
    assert (
        main(["--model", str(missing), "--data", str(data), "--out", str(tmp_path / "busy")]) == 1
    )
    assert "not an export folder" in capsys.readouterr().err
    assert (tmp_path / "busy" / "notes.txt").read_text() == "keep me"


def test_contract_reader_names_the_file(exported, tmp_path):
    with pytest.raises(ContractError, match="encoder.json: encoder contract not found"):
        load_contract(tmp_path)
    raw = json.loads((exported["art"] / "encoder.json").read_text())
    broken = {**raw, "bits": 48, "bit_order": "lsb_first", "files": {"onnx": "../x.onnx"}}
    path = tmp_path / "encoder.json"
    path.write_text(json.dumps(broken))
    with pytest.raises(ContractError) as info:
        load_contract(path)
    message = str(info.value)
    assert message.startswith(f"{path}: invalid encoder contract")
    for fragment in ("bits: 48", "bit_order", "files.onnx"):
        assert fragment in message
    path.write_text("{not json")
    with pytest.raises(ContractError, match="not a readable JSON file"):
        load_contract(path)


# The embedding head's bits have no image region; the combined head's last 32 come from
# the 2 x 2 core node's cells, 8 bits each, after 32 from the embedding.
@pytest.mark.slow  # measured: several seconds; `make test` runs it
@pytest.mark.parametrize(
    "head, grid",
    [
        ("embedding", None),
        ("combined", {"rows": 2, "cols": 2, "bits_per_cell": 8, "first_bit": 32}),
    ],
)
def test_embedding_heads_export_with_keras_bits_and_their_grid(exported, tmp_path, head, grid):
    spec = exported["spec"]
    model = YNet(**RGB_TINY, hash_head=head, class_names=spec.class_names)
    calibrate_bit_thresholds(model, prepare_records(spec.split("train"), 64, 3))
    model_path = save_ynet(model, tmp_path / "model.keras")
    argv = ["--model", str(model_path), "--data", str(spec.root), "--out", str(tmp_path / "art")]
    assert main([*argv, "--no-int8"]) == 0  # the export checks float bits against Keras
    contract = json.loads((tmp_path / "art" / "encoder.json").read_text())
    if grid is None:
        assert "hash_grid" not in contract
    else:
        assert {k: contract["hash_grid"][k] for k in grid} == grid
    parity = json.loads((tmp_path / "art" / "parity.json").read_text())
    assert parity["passed"] and parity["float"]["encoder.onnx"]["bits_identical"]


@pytest.mark.slow  # measured: several seconds; `make test` runs it
def test_flagged_int8_is_left_out_unless_kept(exported, monkeypatch, capsys):
    # Every int8 model is flagged with a minimum agreement above 100 %.
    monkeypatch.setattr(export_parity, "INT8_MIN_AGREEMENT", 1.01)
    out = exported["root"] / "flagged"
    argv = ["--model", str(exported["model_path"]), "--data", str(exported["spec"].root)]
    assert main([*argv, "--out", str(out)]) == 0
    err = capsys.readouterr().err
    assert "encoder_int8.tflite was not written (--keep-flagged-int8 writes it)" in err
    names = {
        "encoder.onnx",
        "encoder.tflite",
        "encoder.json",
        "parity.json",
        "golden.json",
        "golden",
    }
    assert {p.name for p in out.iterdir()} == names
    contract = load_contract(out, check_files=True)
    assert sorted(contract.files) == sorted(contract.artifacts) == ["onnx", "tflite"]
    parity = json.loads((out / "parity.json").read_text())
    assert (parity["int8_flagged"], parity["int8_written"]) == (True, False)
    assert parity["int8"]["file"] == "encoder_int8.tflite"  # measured, reported, not shipped


def test_contract_records_each_file_hash_and_code_kind(exported):
    art = exported["art"]
    raw = json.loads((art / "encoder.json").read_text())
    fingerprint = raw["fingerprint"]
    assert raw["artifacts"] == {
        kind: {
            "sha256": hashlib.sha256((art / name).read_bytes()).hexdigest(),
            "codes": f"{fingerprint}+{'int8' if kind == 'tflite_int8' else 'float'}",
        }
        for kind, name in raw["files"].items()
    }
    assert json.loads((art / "parity.json").read_text())["int8_written"] is True
