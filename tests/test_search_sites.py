"""``python -m deploy search --index A B``: several site folders searched as one index."""

from __future__ import annotations

import json

import numpy as np

from deploy import cli, codes


def run_cli(capsys, *argv) -> tuple[int, str, str]:
    rc = cli.main([str(a) for a in argv])
    out = capsys.readouterr()
    return rc, out.out, out.err


def test_two_sites_equal_brute_force_over_both_in_order(art, tmp_path, capsys):
    onnx = art["dir"] / "encoder.onnx"
    for site, split in (("site_a", "train"), ("site_b", "test")):
        rc, _, err = run_cli(capsys, "index", "build", "--encoder", onnx, "--data", art["data"],
                             "--split", split, "--out", tmp_path / site)  # fmt: skip
        assert rc == 0, err
    # One index holding both: site A's items, then site B's; ties by that order.
    db_ids = [i for i, s in zip(art["ids"], art["split"], strict=True) if s == "train"]
    db_ids += [i for i, s in zip(art["ids"], art["split"], strict=True) if s == "test"]
    db = np.stack([art["bits"][i] for i in db_ids])
    for query_id, path in zip(art["ids"][:4], art["paths"][:4], strict=True):
        rc, out, err = run_cli(capsys, "search", "--index", tmp_path / "site_a",
                               tmp_path / "site_b", "--encoder", onnx, "--image", path,
                               "-k", 16, "--json")  # fmt: skip
        assert rc == 0, err
        hits = json.loads(out)["results"]
        dist = codes.hamming_distance_matrix(art["bits"][query_id][None], db)[0]
        order = np.argsort(dist, kind="stable")
        assert [(h["id"], h["distance"]) for h in hits] == [
            (db_ids[j], int(dist[j])) for j in order
        ]
        split_of = dict(zip(art["ids"], art["split"], strict=True))
        site = {"train": "site_a", "test": "site_b"}
        assert [h["index"].rsplit("/", 1)[-1] for h in hits] == [
            site[split_of[h["id"]]] for h in hits
        ]


def test_report_over_two_sites(art, tmp_path, capsys):
    onnx = art["dir"] / "encoder.onnx"
    for site, split in (("site_a", "train"), ("site_b", "test")):
        run_cli(capsys, "index", "build", "--encoder", onnx, "--data", art["data"],
                "--split", split, "--out", tmp_path / site)  # fmt: skip
    query = art["paths"][art["split"].index("test")]  # in site B: distance 0, rank 1
    rc, out, err = run_cli(capsys, "search", "--index", tmp_path / "site_a", tmp_path / "site_b",
                           "--encoder", onnx, "--image", query, "-k", 3,
                           "--report", tmp_path / "why.html")  # fmt: skip
    assert rc == 0, err
    assert out.splitlines()[1].split()[:3] == ["1", art["ids"][art["split"].index("test")], "0"]
    page = (tmp_path / "why.html").read_text()
    assert f"index {tmp_path / 'site_a'}, {tmp_path / 'site_b'}" in page
    assert (tmp_path / "why.png").is_file()


def test_sites_of_another_encoder_are_refused(art, tmp_path, capsys):
    onnx = art["dir"] / "encoder.onnx"
    run_cli(capsys, "index", "build", "--encoder", onnx, "--data", art["data"],
            "--out", tmp_path / "a")  # fmt: skip
    sidecar = tmp_path / "a" / "index.json"
    meta = json.loads(sidecar.read_text())
    meta["fingerprint"] = "other+float"
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "index.json").write_text(json.dumps(meta))
    (tmp_path / "b" / "codes.npy").write_bytes((tmp_path / "a" / "codes.npy").read_bytes())
    rc, _, err = run_cli(capsys, "search", "--index", tmp_path / "a", tmp_path / "b",
                         "--encoder", onnx, "--image", art["paths"][0])  # fmt: skip
    assert rc == 1
    assert "was made by encoder 'other+float'" in err and str(tmp_path / "b") in err
