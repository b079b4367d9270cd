"""The device runtime end to end: exported encoder -> codes -> index -> search, no TensorFlow.

One tiny YNet is exported once per session (``export.exporter.export_encoder``) on a
16-image phantom dataset (14 train, 2 test). Its Keras bits, computed from the images as
training prepares them, are the reference for everything the runtime returns.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from index_files import read_ids

from deploy import cli, codes
from deploy.encoder import Encoder, EncoderError
from deploy.index import HammingIndex

REPO = Path(__file__).resolve().parents[1]
K = 5


def run_cli(capsys, *argv) -> tuple[int, str, str]:
    rc = cli.main([str(a) for a in argv])
    out = capsys.readouterr()
    return rc, out.out, out.err


def search_json(capsys, index, encoder, image, k=K) -> list[dict]:
    rc, out, err = run_cli(
        capsys,
        "search",
        "--index",
        index,
        "--encoder",
        encoder,
        "--image",
        image,
        "-k",
        k,
        "--json",
    )
    assert rc == 0, err
    return json.loads(out)["results"]


def brute_force(art, query_ids, db_ids, k):
    """Exact top-k by Keras codes: Hamming distance, ties by database order."""
    q = np.stack([art["bits"][i] for i in query_ids])
    d = np.stack([art["bits"][i] for i in db_ids])
    dist = codes.hamming_distance_matrix(q, d)
    order = np.argsort(dist, axis=1, kind="stable")[:, :k]
    return [[(db_ids[j], int(dist[r, j])) for j in row] for r, row in enumerate(order)]


# Encoder ------------------------------------------------------------------------------


@pytest.mark.parametrize("model_file", ["encoder.onnx", "encoder.tflite"])
def test_float_encoders_give_the_keras_bits(art, model_file):
    encoder = Encoder.open(art["dir"] / model_file)
    assert (encoder.bits, encoder.image_size, encoder.channels) == (64, 64, 1)
    assert encoder.fingerprint == art["fingerprint"]
    result = encoder.encode_files(art["paths"], batch_size=5, progress=False, ids=art["ids"])
    assert result.failures == [] and result.ids == art["ids"]
    np.testing.assert_array_equal(result.bits, np.stack(list(art["bits"].values())))
    np.testing.assert_array_equal(result.packed, codes.pack_bits(result.bits))
    assert result.bits.dtype == result.packed.dtype == np.uint8
    assert result.packed.shape == (16, 8)
    odd = encoder.encode_files(art["odd_paths"], progress=False)
    np.testing.assert_array_equal(odd.bits, art["odd_bits"])


def test_int8_encoder_agrees_as_the_export_measured(art):
    encoder = Encoder.open(art["dir"] / "encoder_int8.tflite")
    result = encoder.encode_files(art["paths"], progress=False)
    assert result.bits.shape == (16, 64)
    agreement = np.mean(result.bits == np.stack(list(art["bits"].values())))
    assert agreement == pytest.approx(art["int8_agreement"], abs=1e-12)


def test_encode_arrays_equals_encode_files(art):
    encoder = Encoder.open(art["dir"])  # a folder opens its ONNX model
    assert encoder.model_path.name == "encoder.onnx"
    images = np.stack([encoder.prepare(p) for p in art["paths"][:3]])
    assert images.shape == (3, 64, 64, 1) and images.dtype == np.uint8
    result = encoder.encode_arrays(images, batch_size=2)
    assert result.ids == [0, 1, 2]
    np.testing.assert_array_equal(result.bits, encoder.encode_files(art["paths"][:3]).bits)
    np.testing.assert_array_equal(encoder.encode_file(art["paths"][0]), result.bits[0])
    with pytest.raises(ValueError, match=r"uint8 \(N, 64, 64, 1\)"):
        encoder.encode_arrays(images.astype(np.float32))


def test_bad_files_are_skipped_and_reported(art, tmp_path):
    truncated = tmp_path / "truncated.png"
    truncated.write_bytes(art["paths"][0].read_bytes()[:80])
    paths = [art["paths"][0], tmp_path / "missing.png", truncated, art["paths"][1]]
    result = Encoder.open(art["dir"] / "encoder.onnx").encode_files(paths, progress=False)
    assert result.ids == [str(art["paths"][0]), str(art["paths"][1])]
    assert [p for p, _ in result.failures] == [str(tmp_path / "missing.png"), str(truncated)]
    assert "not found" in result.failures[0][1]
    np.testing.assert_array_equal(result.bits[1], art["bits"][art["ids"][1]])


def test_model_that_does_not_fit_its_contract_is_refused(art, tmp_path):
    shutil.copy(art["dir"] / "encoder.onnx", tmp_path)
    contract = json.loads((art["dir"] / "encoder.json").read_text())
    contract["bits"] = 32
    contract["outputs"]["hash"]["shape"] = [None, 32]
    contract["outputs"]["code"]["shape"] = [None, 4]
    contract.pop("hash_grid")  # the 64-bit layout; a 32-bit contract has its own or none
    (tmp_path / "encoder.json").write_text(json.dumps(contract))
    with pytest.raises(EncoderError) as err:
        Encoder.open(tmp_path / "encoder.onnx")
    message = str(err.value)
    assert str(tmp_path / "encoder.onnx") in message and str(tmp_path / "encoder.json") in message
    assert "output 'hash' shape [N, 64], expected [N, 32]" in message


def test_model_without_its_contract_is_refused(art, tmp_path):
    shutil.copy(art["dir"] / "encoder.onnx", tmp_path)
    with pytest.raises(EncoderError, match="encoder contract not found"):
        Encoder.open(tmp_path / "encoder.onnx")


# Command line ---------------------------------------------------------------------------


@pytest.mark.parametrize("backend", ["exact", "annoy"])
def test_index_search_equals_brute_force_over_keras_codes(art, tmp_path, capsys, backend):
    onnx, index = art["dir"] / "encoder.onnx", tmp_path / "index"
    rc, out, err = run_cli(
        capsys, "index", "build", "--encoder", onnx, "--data", art["data"], "--out", index,
        "--backend", backend, "--n-trees", 10,
    )  # fmt: skip
    assert rc == 0, err
    assert f"indexed 14 images (64 bits, encoder {art['fingerprint']}+float, {backend})" in out
    train = [i for i, s in zip(art["ids"], art["split"], strict=True) if s == "train"]
    expected = brute_force(art, art["ids"], train, K)
    for path, want in zip(art["paths"], expected, strict=True):
        hits = search_json(capsys, index, onnx, path)
        assert [(h["id"], h["distance"]) for h in hits] == want
        assert [h["rank"] for h in hits] == [1, 2, 3, 4, 5]
        assert all(h["label"] in ("glaucoma", "normal") for h in hits)
        assert all(Path(h["path"]).name == f"{h['id']}.png" for h in hits)


def test_table_output_and_k_larger_than_the_index(art, tmp_path, capsys):
    onnx, index = art["dir"] / "encoder.onnx", tmp_path / "index"
    assert run_cli(capsys, "index", "build", "--encoder", onnx, "--data", art["data"],
                   "--split", "test", "--out", index)[0] == 0  # fmt: skip
    query = art["paths"][art["split"].index("test")]
    rc, out, _ = run_cli(
        capsys, "search", "--index", index, "--encoder", onnx, "--image", query, "-k", 50
    )
    lines = out.splitlines()
    assert rc == 0 and lines[0].split() == ["rank", "id", "distance", "label", "path"]
    assert len(lines) == 1 + 2  # both test images, though 50 were asked for
    assert lines[1].split()[:3] == ["1", Path(query).stem, "0"]


def test_add_goes_to_the_delta_and_is_found(art, tmp_path, capsys):
    onnx, index = art["dir"] / "encoder.onnx", tmp_path / "index"
    build = ["index", "build", "--encoder", onnx, "--data", art["data"], "--out", index]
    assert run_cli(capsys, *build, "--backend", "annoy", "--n-trees", 10)[0] == 0
    rc, out, err = run_cli(capsys, "index", "add", "--index", index, "--encoder", onnx,
                           "--data", art["data"], "--split", "test")  # fmt: skip
    assert rc == 0, err
    assert "added 2 image(s)" in out and "16 items, 2 in the Annoy delta" in out
    sidecar = json.loads((index / "index.json").read_text())
    assert (sidecar["n_annoy"], sidecar["n_delta"]) == (14, 2)
    order = [
        i
        for s in ("train", "test")
        for i, sp in zip(art["ids"], art["split"], strict=True)
        if sp == s
    ]
    test_ids = order[14:]
    for query_id, want in zip(test_ids, brute_force(art, test_ids, order, 16), strict=True):
        hits = search_json(capsys, index, onnx, art["paths"][art["ids"].index(query_id)], k=16)
        assert [(h["id"], h["distance"]) for h in hits] == want
        assert (query_id, 0) in want
    # The same ids again are refused, and nothing changes on disk.
    rc, _, err = run_cli(capsys, "index", "add", "--index", index, "--encoder", onnx,
                         "--data", art["data"], "--split", "test")  # fmt: skip
    assert rc == 1 and "already in" in err
    # Single files, then --compact folds the delta into the forest.
    new = tmp_path / "new.png"
    shutil.copy(art["paths"][0], new)
    rc, out, err = run_cli(
        capsys, "index", "add", "--index", index, "--encoder", onnx, new, "--compact"
    )
    assert rc == 0, err
    sidecar = json.loads((index / "index.json").read_text())
    assert (sidecar["count"], sidecar["n_annoy"], sidecar["n_delta"]) == (17, 17, 0)
    hits = search_json(capsys, index, onnx, new, k=2)
    assert [(h["id"], h["distance"]) for h in hits] == [(art["ids"][0], 0), (str(new), 0)]


def test_index_of_another_encoder_is_refused(art, tmp_path, capsys):
    onnx, query = art["dir"] / "encoder.onnx", art["paths"][0]
    for name, bits, fingerprint, expected in (
        ("other", 64, "0123456789abcdef", "made by encoder '0123456789abcdef'"),
        ("short", 32, art["fingerprint"], "holds 32-bit codes, expected 64"),
    ):
        index = HammingIndex(bits=bits, fingerprint=fingerprint)
        index.add(np.zeros(bits, np.uint8), id="a")
        index.save(tmp_path / name)
        for argv in (
            ["search", "--index", tmp_path / name, "--encoder", onnx, "--image", query],
            ["index", "add", "--index", tmp_path / name, "--encoder", onnx, query],
        ):
            rc, out, err = run_cli(capsys, *argv)
            assert rc == 1 and out == ""
            assert err.startswith("error: ") and err.count("\n") == 1
            assert expected in err and str(onnx) in err and "Traceback" not in err


def test_bad_image_in_a_folder_is_skipped_and_reported(art, tmp_path, capsys):
    folder = tmp_path / "images"
    (folder / "sub").mkdir(parents=True)
    for name, source in (("a.png", 0), ("sub/b.png", 1), ("c.png", 2)):
        shutil.copy(art["paths"][source], folder / name)
    (folder / "sub" / "bad.png").write_bytes(b"not a png")
    (folder / "notes.txt").write_text("ignored")
    onnx, index = art["dir"] / "encoder.onnx", tmp_path / "index"
    rc, out, err = run_cli(
        capsys, "index", "build", "--encoder", onnx, "--images", folder, "--out", index,
        "--skip-bad",
    )  # fmt: skip
    assert rc == 0
    assert "skipped 1 bad file(s):" in err and str(folder / "sub" / "bad.png") in err
    assert read_ids(index) == ["a.png", "c.png", "sub/b.png"]
    # Building over an existing index needs --overwrite.
    rc, _, err = run_cli(
        capsys, "index", "build", "--encoder", onnx, "--images", folder, "--out", index
    )
    assert rc == 1 and "--overwrite" in err


def test_errors_are_one_line_unless_debug(art, tmp_path, capsys):
    argv = ["search", "--index", tmp_path / "none", "--encoder", art["dir"] / "encoder.onnx",
            "--image", art["paths"][0]]  # fmt: skip
    rc, _, err = run_cli(capsys, *argv)
    assert rc == 1 and err == f"error: no index at {tmp_path / 'none'}: index.json is missing\n"
    with pytest.raises(FileNotFoundError):
        cli.main([str(a) for a in [*argv, "--debug"]])


def test_device_path_never_imports_tensorflow(art, tmp_path, capsys):
    onnx, index = art["dir"] / "encoder.onnx", tmp_path / "index"
    assert (
        run_cli(capsys, "index", "build", "--encoder", onnx, "--data", art["data"], "--out", index)[
            0
        ]
        == 0
    )
    script = """
import json, sys
import deploy.encoder, deploy.cli, deploy.index
index, folder, image = sys.argv[1:]
rcs = [
    deploy.cli.main(["search", "--index", index, "--encoder", f"{folder}/{name}", "--image", image, "--json"])
    for name in ("encoder.onnx", "encoder.tflite")
]
loaded = sorted(m for m in sys.modules if m.split(".")[0] in ("tensorflow", "keras", "keras_ynet"))
print("RESULT", json.dumps({"rcs": rcs, "loaded": loaded}))
"""
    argv = [sys.executable, "-c", script, str(index), str(art["dir"]), str(art["paths"][0])]
    done = subprocess.run(argv, capture_output=True, text=True, cwd=REPO, timeout=120)
    assert done.returncode == 0, done.stderr
    printed, result = done.stdout.rsplit("RESULT", 1)
    assert json.loads(result) == {"rcs": [0, 0], "loaded": []}
    first = json.loads(printed[: printed.index("\n}\n") + 2])  # the ONNX search's JSON
    assert first["results"][0] == {
        "rank": 1, "id": art["ids"][0], "distance": 0, "label": "glaucoma", "path": str(art["paths"][0]),
    }  # fmt: skip


# What the codes are: file hashes and float / int8 ------------------------------------------


def copy_art(art, tmp_path) -> Path:
    folder = tmp_path / "art"
    shutil.copytree(art["dir"], folder)
    return folder


@pytest.mark.parametrize("model_file", ["encoder.onnx", "encoder_int8.tflite"])
def test_altered_model_file_is_refused_naming_it(art, tmp_path, capsys, model_file):
    folder = copy_art(art, tmp_path)
    model = folder / model_file
    data = bytearray(model.read_bytes())
    data[len(data) // 2] ^= 0x01  # one bit of a weight: the model still loads and runs
    model.write_bytes(bytes(data))
    with pytest.raises(EncoderError) as err:
        Encoder.open(model)
    message = str(err.value)
    assert message.startswith(f"{model} was altered or replaced: its sha256 ")
    assert f"that {folder / 'encoder.json'} records" in message and "\n" not in message
    rc, out, err_text = run_cli(
        capsys, "search", "--index", tmp_path / "none", "--encoder", model, "--image",
        art["paths"][0],
    )  # fmt: skip
    assert rc == 1 and err_text.count("\n") == 1 and f"{model} was altered" in err_text


def test_contract_without_file_hashes_is_refused(art, tmp_path):
    folder = copy_art(art, tmp_path)
    contract = json.loads((folder / "encoder.json").read_text())
    del contract["artifacts"]
    (folder / "encoder.json").write_text(json.dumps(contract))
    with pytest.raises(EncoderError, match=r"records no sha256 for encoder\.onnx .*re-export"):
        Encoder.open(folder / "encoder.onnx")


def test_int8_encoder_cannot_search_or_extend_a_float_index(art, tmp_path, capsys):
    folder, index = art["dir"], tmp_path / "index"
    onnx, tflite, int8 = (
        folder / n for n in ("encoder.onnx", "encoder.tflite", "encoder_int8.tflite")
    )
    rc, _, err = run_cli(capsys, "index", "build", "--encoder", onnx, "--data", art["data"],
                         "--out", index)  # fmt: skip
    assert rc == 0, err
    sidecar = json.loads((index / "index.json").read_text())
    assert sidecar["fingerprint"] == f"{art['fingerprint']}+float"
    assert Encoder.open(int8).codes_id == f"{art['fingerprint']}+int8"
    first = art["split"].index("train")
    query = art["paths"][first]
    for argv in (
        ["search", "--index", index, "--encoder", int8, "--image", query],
        ["index", "add", "--index", index, "--encoder", int8, art["odd_paths"][0]],
    ):
        rc, out, err = run_cli(capsys, *argv)
        assert rc == 1 and out == "" and err.count("\n") == 1
        assert (
            f"was made by encoder '{art['fingerprint']}+float', expected "
            f"'{art['fingerprint']}+int8'" in err
        )
        assert "the index holds float codes of this model, the encoder makes int8 codes" in err
    assert json.loads((index / "index.json").read_text())["count"] == sidecar["count"]
    # The float LiteRT model gives the Keras bits too (parity), so it shares the index.
    hits = search_json(capsys, index, tflite, query, k=1)
    assert [(h["id"], h["distance"]) for h in hits] == [(art["ids"][first], 0)]
