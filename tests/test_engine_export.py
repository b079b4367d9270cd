"""``index export-engine``: bulk NDJSON + mapping in the documented OpenSearch and
Elasticsearch binary-vector formats, checked byte by byte on a hand-worked code."""

from __future__ import annotations

import json

import numpy as np
import pytest

from deploy import cli, engine_export
from deploy.index import HammingIndex

# Hand-checked 32-bit code. Bits, first to last:
#   0110 1100 | 1000 1100 | 1000 0001 | 0111 1111
# bytes (first bit = most significant): 0x6c = 108, 0x8c = 140, 0x81 = 129, 0x7f = 127;
# as signed int8 (OpenSearch): 108, 140 - 256 = -116, 129 - 256 = -127, 127;
# as hex (Elasticsearch): "6c8c817f". The first 16 bits are the OpenSearch
# documentation's own example ([0,1,1,0,1,1,0,0,1,0,0,0,1,1,0,0] -> [108, -116]).
BITS = [0, 1, 1, 0, 1, 1, 0, 0, 1, 0, 0, 0, 1, 1, 0, 0,
        1, 0, 0, 0, 0, 0, 0, 1, 0, 1, 1, 1, 1, 1, 1, 1]  # fmt: skip
SECOND = [0] * 31 + [1]  # bytes 00 00 00 01


@pytest.fixture
def index_folder(tmp_path):
    index = HammingIndex(bits=32, fingerprint="enc1+float", backend="exact")
    index.batch_add(np.array([BITS, SECOND], np.uint8), ["scan-1", 7], [{"label": "benign"}, {}])
    index.save(tmp_path / "Site_A")
    return tmp_path / "Site_A"


def run_cli(capsys, *argv):
    rc = cli.main([str(a) for a in argv])
    out = capsys.readouterr()
    return rc, out.out, out.err


def export(capsys, folder, engine, out, *more):
    rc, stdout, err = run_cli(capsys, "index", "export-engine", "--index", folder,
                              "--format", engine, "--out", out, "--json", *more)  # fmt: skip
    assert rc == 0, err
    return json.loads(stdout)


def read_ndjson(path):
    text = path.read_text(encoding="utf-8")
    assert text.endswith("\n")
    return [json.loads(line) for line in text.splitlines()]


@pytest.mark.parametrize(
    ("engine", "first", "second"),
    [
        ("opensearch", [108, -116, -127, 127], [0, 0, 0, 1]),
        ("elasticsearch", "6c8c817f", "00000001"),
    ],
)
def test_bulk_lines_follow_the_documented_format(
    index_folder, tmp_path, capsys, engine, first, second
):
    result = export(capsys, index_folder, engine, tmp_path / "bulk.ndjson")
    assert result["name"] == "site_a" and result["items"] == 2
    assert read_ndjson(tmp_path / "bulk.ndjson") == [
        {"index": {"_index": "site_a", "_id": "scan-1"}},
        {"code": first, "item_id": "scan-1", "position": 0, "metadata": {"label": "benign"}},
        {"index": {"_index": "site_a", "_id": "7"}},
        {"code": second, "item_id": "7", "position": 1, "metadata": {}},
    ]


def test_opensearch_mapping(index_folder, tmp_path, capsys):
    export(capsys, index_folder, "opensearch", tmp_path / "os.ndjson", "--name", "pacs-1")
    body = json.loads((tmp_path / "os.ndjson.mapping.json").read_text())
    assert body == {
        "settings": {"index": {"knn": True}},
        "mappings": {
            "_meta": {"codes": "enc1+float", "bits": 32, "metric": "hamming"},
            "properties": {
                "code": {"type": "knn_vector", "dimension": 32, "data_type": "binary",
                         "space_type": "hamming", "method": {"name": "hnsw", "engine": "faiss"}},
                "item_id": {"type": "keyword"},
                "position": {"type": "long"},
                "metadata": {"type": "object", "enabled": False},
            },
        },
    }  # fmt: skip
    assert read_ndjson(tmp_path / "os.ndjson")[0] == {
        "index": {"_index": "pacs-1", "_id": "scan-1"}
    }


def test_elasticsearch_mapping(index_folder, tmp_path, capsys):
    export(capsys, index_folder, "elasticsearch", tmp_path / "es.ndjson")
    body = json.loads((tmp_path / "es.ndjson.mapping.json").read_text())
    assert body["mappings"]["properties"]["code"] == {
        "type": "dense_vector", "dims": 32, "element_type": "bit", "index": True,
        "similarity": "l2_norm", "index_options": {"type": "flat"},
    }  # fmt: skip
    assert "settings" not in body


def test_packing_matches_numpy_packbits_as_the_docs_show():
    # The OpenSearch docs pack with np.packbits(bits).astype(np.int8); the Elasticsearch
    # docs' hex string is the same bytes: "8100012a7f" is [-127, 0, 1, 42, 127].
    rng = np.random.default_rng(0)
    bits = rng.integers(0, 2, (20, 64), dtype=np.uint8)
    for row in bits:
        packed = np.packbits(row)
        assert engine_export.encode_code("opensearch", packed) == packed.astype(np.int8).tolist()
        assert bytes.fromhex(engine_export.encode_code("elasticsearch", packed)) == packed.tobytes()
    es = np.frombuffer(bytes.fromhex("8100012a7f"), np.int8).tolist()
    assert es == [-127, 0, 1, 42, 127]


def test_existing_output_needs_overwrite(index_folder, tmp_path, capsys):
    (tmp_path / "bulk.ndjson").write_text("keep")
    rc, _, err = run_cli(capsys, "index", "export-engine", "--index", index_folder, "--format",
                         "opensearch", "--out", tmp_path / "bulk.ndjson")  # fmt: skip
    assert rc == 1 and "bulk.ndjson exists; add --overwrite" in err
    assert (tmp_path / "bulk.ndjson").read_text() == "keep"


@pytest.mark.parametrize("name", ["Upper", "_x", "a b", "a/b", ".."])
def test_invalid_engine_index_name_is_refused(index_folder, tmp_path, capsys, name):
    rc, _, err = run_cli(capsys, "index", "export-engine", "--index", index_folder, "--format",
                         "elasticsearch", "--out", tmp_path / "b.ndjson", "--name", name)  # fmt: skip
    assert rc == 1 and f"engine index name {name!r} is not valid" in err
    assert not (tmp_path / "b.ndjson").exists()


def test_formats_kept_in_step_with_the_parser():
    assert cli.ENGINE_FORMATS == engine_export.FORMATS
