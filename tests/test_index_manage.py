"""An index that lives for years: remove / replace by id, info, verify, DICOM identifiers,
and the command line convention (--json everywhere, a quick --help)."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import time

import numpy as np
import pytest
from PIL import Image
from test_deploy import REPO, run_cli
from test_image_formats import write_dicom

from deploy import cine, cli, items_file, sources
from deploy.index import BACKENDS, HammingIndex, IndexFormatError
from deploy.index_info import index_info, verify_index


def eye_index(n=6, **kwargs):
    """Item i has only bit i set: distances are 0 (itself) or 2 (any other), so ties
    show the order rule. Query zero: every item at distance 1."""
    index = HammingIndex(bits=64, fingerprint="enc-1+float", **kwargs)
    index.batch_add(np.eye(64, dtype=np.uint8)[:n], [f"i{i}" for i in range(n)],
                    [{"n": i} for i in range(n)])  # fmt: skip
    return index


def test_remove_keeps_the_order_of_the_others():
    index = eye_index()
    assert index.remove(["i1", "i4"]) == 2
    assert index.ids == ["i0", "i2", "i3", "i5"]
    hits = index.lookup([0] * 64, k=10)
    assert [(h.id, h.distance, h.position, h.metadata) for h in hits] == [
        ("i0", 1, 0, {"n": 0}), ("i2", 1, 1, {"n": 2}), ("i3", 1, 2, {"n": 3}),
        ("i5", 1, 3, {"n": 5}),
    ]  # fmt: skip
    assert "i1" not in index and len(index) == 4
    index.add(np.eye(64, dtype=np.uint8)[1], id="i1")  # the id is free again
    assert index.ids[-1] == "i1" and index.lookup(np.eye(64, dtype=np.uint8)[1], 1)[0].id == "i1"


def test_remove_unknown_id_removes_nothing():
    index = eye_index()
    with pytest.raises(KeyError, match="'nope' is not in the index"):
        index.remove(["i0", "nope"])
    assert index.ids == [f"i{i}" for i in range(6)]


def test_replace_gives_a_new_code_and_makes_the_item_newest():
    index = eye_index()
    index.replace(np.eye(64, dtype=np.uint8)[5], "i2", {"n": 22})
    assert index.ids == ["i0", "i1", "i3", "i4", "i5", "i2"]
    hits = index.lookup(np.eye(64, dtype=np.uint8)[5], k=2)
    assert [(h.id, h.distance, h.metadata) for h in hits] == [("i5", 0, {"n": 5}),
                                                              ("i2", 0, {"n": 22})]  # fmt: skip
    with pytest.raises(KeyError, match="'zz'"):
        index.replace([0] * 64, "zz")
    with pytest.raises(ValueError, match="63 values per code"):
        index.replace([0] * 63, "i0")
    assert len(index) == 6 and "i0" in index  # a bad code removes nothing


def test_removing_a_forest_item_drops_the_forest_and_stays_exact(tmp_path):
    index = eye_index(backend="annoy", n_trees=2)
    index.build()
    index.add(np.eye(64, dtype=np.uint8)[10], id="late")
    index.remove(["late"])  # only the delta: the forest stays
    assert (index.n_delta, len(index)) == (0, 6)
    index.remove(["i0"])
    assert (index.n_delta, len(index), index._annoy) == (5, 5, None)
    assert [h.id for h in index.lookup([0] * 64, k=3)] == ["i1", "i2", "i3"]
    index.save(tmp_path / "idx")
    info = index_info(tmp_path / "idx")
    assert (info["search"], info["stale_forest"], info["n_annoy"]) == ("exact", True, 0)
    assert not (tmp_path / "idx" / "index.ann").exists()
    index.compact()
    assert index.n_delta == 0
    index.save(tmp_path / "idx")
    assert index_info(tmp_path / "idx")["stale_forest"] is False


def test_created_is_kept_and_modified_moves(tmp_path, monkeypatch):
    index = eye_index()
    index.save(tmp_path / "idx")
    sidecar = json.loads((tmp_path / "idx" / "index.json").read_text())
    created = sidecar["created"]
    assert sidecar["modified"] == created and created.endswith("+00:00")
    # A later save of the loaded index: created from the first save, modified now.
    sidecar["created"] = "2020-01-02T03:04:05+00:00"
    (tmp_path / "idx" / "index.json").write_text(json.dumps(sidecar))
    loaded = HammingIndex.load(tmp_path / "idx")
    loaded.remove(["i0"])
    loaded.save(tmp_path / "idx")
    info = index_info(tmp_path / "idx")
    assert info["created"] == "2020-01-02T03:04:05+00:00"
    assert info["modified"] >= created


def test_info_and_verify_report_the_files(tmp_path):
    index = eye_index(backend="annoy", n_trees=2)
    index.build()
    index.save(tmp_path / "idx")
    info = index_info(tmp_path / "idx")
    sizes = {name: os.path.getsize(tmp_path / "idx" / name)
             for name in ("index.json", "codes.npy", "items.jsonl", "items_offsets.npy",
                          "index.ann")}  # fmt: skip
    assert {k: info[k] for k in ("items", "bits", "backend", "search", "n_annoy", "n_delta",
                                 "codes", "fingerprint", "code_kind", "format_version")} == {
        "items": 6, "bits": 64, "backend": "annoy", "search": "annoy", "n_annoy": 6,
        "n_delta": 0, "codes": "enc-1+float", "fingerprint": "enc-1", "code_kind": "float",
        "format_version": 2,
    }  # fmt: skip
    assert info["files"] == sizes and info["bytes"] == sum(sizes.values())
    assert sizes["codes.npy"] == 128 + 6 * 8  # the .npy v1.0 header is 128 bytes here
    result = verify_index(tmp_path / "idx")
    assert result["ok"] is True
    packed = np.packbits(np.eye(64, dtype=np.uint8)[:6], axis=-1)  # bytes 0x80, 0x40, ...
    assert result["codes_sha256"] == hashlib.sha256(packed.tobytes()).hexdigest()
    lines = "".join(f'{{"id":"i{i}","meta":{{"n":{i}}}}}\n' for i in range(6)).encode()
    assert (tmp_path / "idx" / "items.jsonl").read_bytes() == lines
    assert result["items_sha256"] == hashlib.sha256(lines).hexdigest()
    offsets = np.load(tmp_path / "idx" / "items_offsets.npy")
    assert offsets.dtype == np.dtype("<u8") and offsets.tolist() == [0] + [
        sum(len(f'{{"id":"i{i}","meta":{{"n":{i}}}}}\n') for i in range(j + 1)) for j in range(6)
    ]
    assert (
        result["offsets_sha256"]
        == hashlib.sha256((tmp_path / "idx" / "items_offsets.npy").read_bytes()).hexdigest()
    )


def test_verify_finds_a_forest_of_other_codes(tmp_path):
    good = eye_index(backend="annoy", n_trees=2)
    good.build()
    good.save(tmp_path / "idx")
    other = HammingIndex(bits=64, fingerprint="enc-1+float", backend="annoy", n_trees=2)
    other.batch_add(np.eye(64, dtype=np.uint8)[10:16], [f"o{i}" for i in range(6)])
    other.build()
    other.save(tmp_path / "other")
    # Both forests have the same size; swap one in and record its sha256: every file
    # check passes, only the comparison of the forest with the codes can tell.
    shutil.copy(tmp_path / "other" / "index.ann", tmp_path / "idx" / "index.ann")
    sidecar = json.loads((tmp_path / "idx" / "index.json").read_text())
    sidecar["annoy_sha256"] = items_file.file_sha256(tmp_path / "idx" / "index.ann")
    (tmp_path / "idx" / "index.json").write_text(json.dumps(sidecar))
    HammingIndex.load(tmp_path / "idx")  # loads: the files agree with the sidecar
    with pytest.raises(IndexFormatError, match=r"idx/index\.ann holds another code for item 0"):
        verify_index(tmp_path / "idx")


def test_verify_finds_a_stray_forest(tmp_path):
    eye_index().save(tmp_path / "idx")
    (tmp_path / "idx" / "index.ann").write_bytes(b"x")
    with pytest.raises(IndexFormatError, match=r"index\.ann is present, but .*records no forest"):
        verify_index(tmp_path / "idx")


# Command line ---------------------------------------------------------------------------


@pytest.fixture
def built(art, tmp_path, capsys):
    """An index of the 14 train images (ids im..., exact) and its encoder."""
    onnx, index = art["dir"] / "encoder.onnx", tmp_path / "index"
    rc, out, err = run_cli(capsys, "index", "build", "--encoder", onnx, "--data", art["data"],
                           "--out", index, "--json")  # fmt: skip
    assert rc == 0, err
    assert json.loads(out) == {
        "index": str(index), "indexed": 14, "items": 14, "bits": 64,
        "codes": f"{art['fingerprint']}+float", "search": "exact", "resumed_after": 0,
        "workers": 1, "frames": "representative", "us_region": False, "skipped": [],
    }  # fmt: skip
    train = [i for i, s in zip(art["ids"], art["split"], strict=True) if s == "train"]
    return onnx, index, train


def test_cli_remove_then_search_and_info(art, built, capsys):
    onnx, index, train = built
    rc, out, err = run_cli(capsys, "index", "remove", "--index", index, "--id", train[0],
                           train[3], train[0], "--json")  # fmt: skip
    assert rc == 0, err
    assert json.loads(out) == {"index": str(index), "removed": 2, "items": 12, "n_delta": 12,
                               "forest_dropped": False}  # fmt: skip
    rc, out, _ = run_cli(capsys, "search", "--index", index, "--encoder", onnx, "--image",
                         art["paths"][art["ids"].index(train[0])], "-k", 20, "--json")  # fmt: skip
    ids = [h["id"] for h in json.loads(out)["results"]]
    assert ids == sorted(ids, key=lambda i: ids.index(i)) and len(ids) == 12
    assert train[0] not in ids and train[3] not in ids
    rc, _, err = run_cli(capsys, "index", "remove", "--index", index, "--id", "nope")
    assert rc == 1 and err == (
        f"error: {index}: 1 id(s) not in the index, e.g. 'nope'; nothing was removed\n"
    )
    rc, out, _ = run_cli(capsys, "index", "info", "--index", index)
    lines = out.splitlines()
    assert rc == 0 and lines[1:5] == [
        "items     12", "bits      64", "backend   auto; searches: exact",
        f"encoder   {art['fingerprint']} (float codes)",
    ]  # fmt: skip
    rc, out, _ = run_cli(capsys, "index", "verify", "--index", index)
    assert rc == 0 and out == (f"ok: {index}: 12 items, every stored sha256 and count checked\n")


def test_cli_verify_names_the_bad_file(built, capsys):
    _, index, _ = built
    data = bytearray((index / "codes.npy").read_bytes())
    data[-1] ^= 1
    (index / "codes.npy").write_bytes(bytes(data))
    rc, out, err = run_cli(capsys, "index", "verify", "--index", index, "--json")
    assert (rc, out) == (1, "")
    assert err == (
        f"error: codes file {index}/codes.npy is corrupted: its sha256 differs from the sidecar's\n"
    )


def test_cli_add_replace(art, tmp_path, capsys):
    onnx, first, second = art["dir"] / "encoder.onnx", tmp_path / "a", tmp_path / "b"
    first.mkdir(), second.mkdir()
    for name, source in zip("abc", art["paths"][:3], strict=True):
        shutil.copy(source, first / f"{name}.png")
    shutil.copy(art["paths"][2], second / "b.png")  # b.png, now with c's image
    index = tmp_path / "idx"
    rc, _, err = run_cli(capsys, "index", "build", "--encoder", onnx, "--images", first,
                         "--out", index)  # fmt: skip
    assert rc == 0, err
    add = ["index", "add", "--index", index, "--encoder", onnx, "--images", second]
    rc, _, err = run_cli(capsys, *add)
    assert rc == 1 and err == (
        f"error: 1 id(s) already in {index}, e.g. 'b.png'; nothing was added (--replace "
        "gives them their new code)\n"
    )
    rc, out, err = run_cli(capsys, *add, "--replace", "--json")
    assert rc == 0, err
    assert json.loads(out) == {"index": str(index), "added": 0, "replaced": 1, "items": 3,
                               "n_delta": 3, "frames": "representative",
                               "us_region": False, "skipped": []}  # fmt: skip
    loaded = HammingIndex.load(index)
    assert loaded.ids == ["a.png", "c.png", "b.png"]
    assert dict(loaded.entries())["b.png"]["path"] == str(second / "b.png")
    np.testing.assert_array_equal(loaded.packed_codes([2]), loaded.packed_codes([1]))


def test_dicom_identifiers_are_stored_and_returned(art, tmp_path, capsys):
    folder = tmp_path / "dcm"
    folder.mkdir()
    grey = np.asarray(Image.open(art["paths"][0]).convert("L"), np.uint8)
    uids = {"StudyInstanceUID": "1.2.826.0.1.7", "SeriesInstanceUID": "1.2.826.0.1.7.1"}
    write_dicom(folder / "one.dcm", grey, WindowCenter=128, WindowWidth=256,
                SOPInstanceUID="1.2.826.0.1.7.1.1", **uids)  # fmt: skip
    write_dicom(folder / "two.dcm", 255 - grey, WindowCenter=128, WindowWidth=256,
                SOPInstanceUID="1.2.826.0.1.7.1.2", **uids)  # fmt: skip
    Image.fromarray(grey).save(folder / "three.png")
    enc = art["dir"] / "encoder.onnx"
    rc, _, err = run_cli(capsys, "index", "build", "--encoder", enc, "--images", folder,
                         "--out", tmp_path / "idx")  # fmt: skip
    assert rc == 0, err
    rc, out, err = run_cli(capsys, "search", "--index", tmp_path / "idx", "--encoder", enc,
                           "--image", folder / "one.dcm", "-k", "3", "--json")  # fmt: skip
    assert rc == 0, err
    document = json.loads(out)

    def ids(sop):
        return {"study_instance_uid": "1.2.826.0.1.7", "series_instance_uid": "1.2.826.0.1.7.1",
                "sop_instance_uid": sop, "frame": None}  # fmt: skip

    assert document["query_dicom"] == ids("1.2.826.0.1.7.1.1")
    by_id = {h["id"]: h.get("dicom") for h in document["results"]}
    assert by_id == {"one.dcm": ids("1.2.826.0.1.7.1.1"), "two.dcm": ids("1.2.826.0.1.7.1.2"),
                     "three.png": None}  # fmt: skip
    assert [h["distance"] for h in document["results"]][:1] == [0]
    stored = dict(HammingIndex.load(tmp_path / "idx").entries())
    assert stored["two.dcm"]["dicom"] == ids("1.2.826.0.1.7.1.2")


def test_every_command_has_json(art, built, capsys):
    parser = cli.build_parser()
    commands = parser._subparsers._group_actions[0].choices
    actions = commands["index"]._subparsers._group_actions[0].choices
    for name, sub in [("search", commands["search"]), ("serve", commands["serve"]),
                      *actions.items()]:  # fmt: skip
        assert "--json" in sub._option_string_actions, name
    assert sorted(actions) == ["add", "build", "export-engine", "info", "remove", "verify"]
    assert cli.BACKENDS == BACKENDS and cli.SPLIT_CHOICES is sources.SPLIT_CHOICES
    assert cli.CINE_DEFAULT == cine.DEFAULT


def test_help_is_quick_and_imports_nothing_heavy():
    probe = (
        "import sys, time, contextlib, io; t = time.perf_counter()\n"
        "from deploy import cli\n"
        "with contextlib.suppress(SystemExit), contextlib.redirect_stdout(io.StringIO()):\n"
        "    cli.main(['--help'])\n"
        "heavy = sorted(m for m in sys.modules if m.split('.')[0] in {'tensorflow', 'keras', "
        "'keras_ynet', 'numpy', 'annoy', 'onnxruntime', 'PIL', 'ai_edge_litert'})\n"
        "print(heavy, time.perf_counter() - t)"
    )
    result = subprocess.run([sys.executable, "-c", probe], cwd=REPO, capture_output=True,
                            text=True, check=True)  # fmt: skip
    heavy, seconds = result.stdout.rsplit(" ", 1)
    assert heavy == "[]"
    assert float(seconds) < 1.0
    start = time.perf_counter()
    result = subprocess.run([sys.executable, "-m", "deploy", "--help"], cwd=REPO,
                            capture_output=True, text=True)  # fmt: skip
    assert result.returncode == 0 and "index" in result.stdout
    assert time.perf_counter() - start < 1.0  # the whole process, interpreter start included


def test_cli_remove_takes_the_writer_lock(tmp_path, capsys):
    from test_index_safety import lock_held_by_another_process

    idx = tmp_path / "idx"
    eye_index().save(idx)
    with lock_held_by_another_process(idx) as holder:
        rc, _, err = run_cli(capsys, "index", "remove", "--index", idx, "--id", "i0",
                             "--lock-timeout", "0.3")  # fmt: skip
    assert (
        rc == 1
        and err.splitlines()[0] == f"waiting for process {holder.pid}, which is writing {idx}"
    )
    assert "gave up waiting after 0.3 s" in err.splitlines()[1]
    assert HammingIndex.load(idx).ids == [f"i{i}" for i in range(6)]  # nothing removed
    assert run_cli(capsys, "index", "remove", "--index", idx, "--id", "i0")[0] == 0
    assert HammingIndex.load(idx).ids == [f"i{i}" for i in range(1, 6)]
