"""deploy.index.HammingIndex: results, delta, compact, save/load and every misuse error."""

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
from index_files import edit_items, read_ids

from deploy import codes, index_store
from deploy.index import HammingIndex, Hit, IndexFormatError, IndexMismatchError


def clustered(rng, n, centres, flip=0.1):
    picked = centres[rng.integers(0, len(centres), n)]
    return picked ^ (rng.random(picked.shape) < flip).astype(np.uint8)


def brute_force(queries, db, k):
    dist = codes.hamming_distance_matrix(queries, db)
    idx = np.argsort(dist, axis=1, kind="stable")[:, :k]  # ties by insertion order
    return idx, np.take_along_axis(dist, idx, axis=1)


def data(kind, n, n_queries=30, bits=64, seed=0):
    rng = np.random.default_rng(seed)
    if kind == "random":
        return (
            rng.integers(0, 2, (n, bits), dtype=np.uint8),
            rng.integers(0, 2, (n_queries, bits), dtype=np.uint8),
        )
    centres = rng.integers(0, 2, (10, bits), dtype=np.uint8)
    return clustered(rng, n, centres), clustered(rng, n_queries, centres)


def make(db, **kwargs):
    index = HammingIndex(db.shape[1], "enc-1", **kwargs)
    index.batch_add(
        db, [f"img{i}" for i in range(len(db))], [{"label": i % 3} for i in range(len(db))]
    )
    return index


def test_literal_lookup_returns_hits():
    index = HammingIndex(bits=32, fingerprint="enc-1")
    index.add([0] * 32, id="a", metadata={"path": "a.png", "label": 1})
    index.add(np.uint8([1] * 32), id=7)
    index.add(codes.pack_bits(np.uint8([0] * 31 + [1])), id="c")  # packed form
    hits = index.lookup([0] * 32, k=2)
    assert hits == [
        Hit(rank=1, id="a", distance=0, position=0, metadata={"path": "a.png", "label": 1}),
        Hit(rank=2, id="c", distance=1, position=2, metadata={}),
    ]
    assert [h.id for h in index.lookup([1] * 32, k=10)] == [7, "c", "a"]  # k > len: all
    assert len(index) == 3


@pytest.mark.parametrize("kind", ["random", "clustered"])
def test_default_backend_equals_brute_force(kind):
    db, queries = data(kind, 1200)
    index = make(db)
    index.build()
    expected_idx, expected_dist = brute_force(queries, db, 10)
    positions, distances = index.search(queries, 10)
    np.testing.assert_array_equal(positions, expected_idx)
    np.testing.assert_array_equal(distances, expected_dist)
    hits = index.batch_lookup(queries, 10)
    assert [[h.position for h in row] for row in hits] == expected_idx.tolist()
    assert hits[0][0].id == f"img{expected_idx[0, 0]}"
    assert [index.lookup(q, 10) for q in queries[:5]] == hits[:5]  # batch == single


@pytest.mark.parametrize("kind", ["random", "clustered"])
def test_annoy_exhaustive_with_delta_equals_brute_force(kind):
    db, queries = data(kind, 400)
    # search_k = n_trees * len makes Annoy visit every leaf: re-ranking, tie order and
    # the merge with the delta must then give exactly the brute-force top-k.
    index = make(db[:300], backend="annoy", n_trees=5, search_k=5 * 400)
    index.build()
    index.batch_add(db[300:], [f"img{i}" for i in range(300, 400)])  # after build: delta
    assert index._n_annoy == 300 and len(index) == 400
    for k in (1, 10, 500):
        expected_idx, expected_dist = brute_force(queries, db, k)
        positions, distances = index.search(queries, k)
        np.testing.assert_array_equal(positions, expected_idx)
        np.testing.assert_array_equal(distances, expected_dist)
    index.compact()
    assert index._n_annoy == 400
    np.testing.assert_array_equal(index.search(queries, 10)[0], brute_force(queries, db, 10)[0])


def test_annoy_default_search_k_reports_exact_distances_in_order():
    db, queries = data("clustered", 2000)
    index = make(db, backend="annoy", n_trees=10)
    index.build()
    index.batch_add(db[:50] ^ 1, [f"new{i}" for i in range(50)])  # a delta as well
    all_db = np.concatenate([db, db[:50] ^ 1])
    positions, distances = index.search(queries, 10)
    true = codes.hamming_distance_matrix(queries, all_db)
    np.testing.assert_array_equal(distances, np.take_along_axis(true, positions, axis=1))
    keys = distances.astype(np.int64) * len(all_db) + positions  # (distance, position)
    assert (np.diff(keys, axis=1) > 0).all()
    # Approximate: never better than exact at any rank; recall is 0.77 with this seed.
    assert (distances >= brute_force(queries, all_db, 10)[1]).all()
    expected = brute_force(queries, all_db, 10)[0]
    recall = np.mean([len(set(p) & set(e)) / 10 for p, e in zip(positions, expected, strict=True)])
    assert recall > 0.5


def test_auto_uses_annoy_only_from_annoy_min_items():
    db, _ = data("random", 100)
    assert not make(db).uses_annoy()  # default: never
    small = make(db[:99], annoy_min_items=100)
    small.build()
    assert not small.uses_annoy() and small._annoy is None
    large = make(db, annoy_min_items=100, n_trees=3)
    large.build()
    assert large.uses_annoy() and large._n_annoy == 100


@pytest.mark.parametrize("backend", ["exact", "annoy"])
def test_save_load_round_trip(tmp_path, backend):
    db, queries = data("clustered", 300)
    index = make(db[:250], backend=backend, n_trees=4)
    index.build()
    index.batch_add(
        db[250:], [f"late{i}" for i in range(50)], [{"path": f"p{i}.png"} for i in range(50)]
    )
    index.save(tmp_path / "idx")
    loaded = HammingIndex.load(tmp_path / "idx", expected_fingerprint="enc-1", expected_bits=64)
    assert loaded.get_config() == index.get_config()
    assert len(loaded) == 300
    assert loaded.batch_lookup(queries, 7) == index.batch_lookup(queries, 7)
    assert loaded.lookup(db[260], 1)[0].metadata == {"path": "p10.png"}
    sidecar = json.loads((tmp_path / "idx" / "index.json").read_text())
    expected_annoy = 250 if backend == "annoy" else 0
    assert (sidecar["n_annoy"], sidecar["n_delta"]) == (expected_annoy, 300 - expected_annoy)
    assert sidecar["metric"] == "hamming" and sidecar["format_version"] == 2
    assert read_ids(tmp_path / "idx")[:2] == ["img0", "img1"]
    assert (tmp_path / "idx" / "index.ann").exists() == (backend == "annoy")
    loaded.save(tmp_path / "idx")  # overwrite the folder its own forest is mapped from
    reloaded = HammingIndex.load(tmp_path / "idx")
    assert reloaded.batch_lookup(queries, 3) == index.batch_lookup(queries, 3)
    assert sorted(os.listdir(tmp_path)) == ["idx"]


@pytest.mark.parametrize(
    "expected, match",
    [
        ({"expected_fingerprint": "enc-2"}, r"idx.*'enc-1'.*'enc-2'"),
        ({"expected_bits": 128}, r"idx.*64-bit.*expected 128"),
    ],
    ids=["other_encoder", "other_bits"],
)
def test_load_refuses_other_encoder_or_bits(tmp_path, expected, match):
    db, _ = data("random", 20)
    make(db).save(tmp_path / "idx")
    with pytest.raises(IndexMismatchError, match=match) as err:
        HammingIndex.load(tmp_path / "idx", **expected)
    assert (err.value.fingerprint, err.value.bits) == ("enc-1", 64)  # what the index holds


def test_crash_mid_save_keeps_previous_index(tmp_path, monkeypatch):
    db, queries = data("random", 40)
    make(db[:30]).save(tmp_path / "idx")

    def crash(*args):  # raised after codes.npy is written, before the sidecar
        raise RuntimeError("power cut")

    monkeypatch.setattr(index_store, "_sidecar", crash)
    with pytest.raises(RuntimeError, match="power cut"):
        make(db).save(tmp_path / "idx")
    loaded = HammingIndex.load(tmp_path / "idx")
    assert len(loaded) == 30
    np.testing.assert_array_equal(loaded.search(queries, 5)[0], brute_force(queries, db[:30], 5)[0])
    assert os.listdir(tmp_path) == ["idx"]


def test_load_recovers_backup_after_crash_during_swap(tmp_path):
    db, _ = data("random", 10)
    make(db).save(tmp_path / "idx")
    os.rename(tmp_path / "idx", tmp_path / ".idx.backup")  # crash between the renames
    assert len(HammingIndex.load(tmp_path / "idx")) == 10


def _truncate(folder, name, cut):
    data = (folder / name).read_bytes()
    (folder / name).write_bytes(data[: len(data) // 2] if cut is None else data[:-cut])


def _flip_last_byte(folder, name):
    data = bytearray((folder / name).read_bytes())
    data[-1] ^= 1
    (folder / name).write_bytes(bytes(data))


def _edit_sidecar(folder, edit):
    meta = json.loads((folder / "index.json").read_text())
    edit(meta)
    (folder / "index.json").write_text(json.dumps(meta))


def _duplicate_ids(ids, metadata):
    ids[1] = ids[0]


CORRUPTIONS = {
    "sidecar_truncated": (
        lambda f: _truncate(f, "index.json", None),
        r"index\.json is corrupted or truncated",
    ),
    "codes_truncated": (
        lambda f: _truncate(f, "codes.npy", 5),
        r"codes\.npy is missing, truncated or corrupted",
    ),
    "codes_flipped": (
        lambda f: _flip_last_byte(f, "codes.npy"),
        r"codes\.npy is corrupted: its sha256",
    ),
    "annoy_truncated": (
        lambda f: _truncate(f, "index.ann", 64),
        r"index\.ann is missing, truncated or corrupted",
    ),
    "duplicate_ids": (
        lambda f: edit_items(f, _duplicate_ids),
        r"items\.jsonl lists duplicate ids",
    ),
    "bad_bits": (
        lambda f: _edit_sidecar(f, lambda m: m.update(bits=48)),
        r"index\.json is corrupted: bits must be one of",
    ),
    "items_hash_missing": (
        lambda f: _edit_sidecar(f, lambda m: m.pop("items_sha256")),
        r"index\.json is corrupted: 'items_sha256' missing",
    ),
    "items_flipped": (
        lambda f: _flip_last_byte(f, "items.jsonl"),
        r"items\.jsonl is corrupted: its sha256",
    ),
    "offsets_truncated": (
        lambda f: _truncate(f, "items_offsets.npy", 8),
        r"items_offsets\.npy has \d+ bytes, the sidecar says",
    ),
}


@pytest.fixture(scope="module")
def saved_annoy_index(tmp_path_factory):
    db, _ = data("random", 10)
    index = make(db, backend="annoy", n_trees=2)
    index.build()
    folder = tmp_path_factory.mktemp("saved") / "idx"
    index.save(folder)
    return folder


@pytest.mark.parametrize("corrupt, match", CORRUPTIONS.values(), ids=CORRUPTIONS.keys())
def test_corrupted_files_name_the_file(saved_annoy_index, tmp_path, corrupt, match):
    folder = tmp_path / "idx"
    shutil.copytree(saved_annoy_index, folder)
    corrupt(folder)
    with pytest.raises(IndexFormatError, match=match):
        HammingIndex.load(folder)


def test_missing_index_names_the_sidecar(tmp_path):
    with pytest.raises(FileNotFoundError, match="index.json is missing"):
        HammingIndex.load(tmp_path / "nowhere")


def _index_with_a():
    index = HammingIndex(bits=64, fingerprint="enc-1")
    index.add([0] * 64, id="a")
    return index


# One misuse per case: (what to call on an index holding "a", the error it gives).
MISUSES = {
    "k_zero": (lambda i: i.lookup([0] * 64, 0), "k must be an integer >= 1"),
    "add_63_values": (lambda i: i.add([0] * 63, id="b"), "63 values per code.*64 bits.*8 packed"),
    "lookup_63_values": (lambda i: i.lookup([0] * 63, 1), "63 values per code"),
    "add_not_0_1": (lambda i: i.add([2] + [0] * 63, id="b"), "not 0/1 bits.*0 or 1"),
    "add_raw_tanh": (
        lambda i: i.add(np.tanh(np.linspace(-1, 1, 64)), id="b"),
        "not 0/1 bits.*signs_to_bits",
    ),
    "add_packed_int64": (lambda i: i.add(np.zeros(8, np.int64), id="b"), "packed uint8"),
    "duplicate_id": (lambda i: i.add([1] * 64, id="a"), "duplicate id 'a'"),
    "duplicate_in_batch": (
        lambda i: i.batch_add(np.zeros((2, 64), np.uint8), ["x", "x"]),
        "duplicate id 'x'",
    ),
    "float_id": (lambda i: i.add([1] * 64, id=1.5), "ids must be str or int"),
    "metadata_not_json": (
        lambda i: i.add([1] * 64, id="m", metadata={"array": np.zeros(2)}),
        "JSON-serialisable",
    ),
    "fewer_ids_than_codes": (
        lambda i: i.batch_add(np.zeros((2, 64), np.uint8), ["y"]),
        "2 codes but 1 ids",
    ),
}


@pytest.mark.parametrize("misuse, match", MISUSES.values(), ids=MISUSES.keys())
def test_misuse_errors(misuse, match):
    index = _index_with_a()
    with pytest.raises(ValueError, match=match):
        misuse(index)
    assert index.ids == ["a"]  # nothing was added by the failed call


@pytest.mark.parametrize("call", ["lookup", "build"])
def test_empty_index_refuses(call):
    index = HammingIndex(bits=64, fingerprint="enc-1")
    with pytest.raises(ValueError, match="empty index"):
        index.lookup([0] * 64, 1) if call == "lookup" else index.build()


@pytest.mark.parametrize(
    "config, match",
    [
        ({"bits": 48}, "bits must be one of"),
        ({"bits": 64, "backend": "faiss"}, "backend must be one of"),
    ],
    ids=["bits", "backend"],
)
def test_bad_construction_is_refused(config, match):
    with pytest.raises(ValueError, match=match):
        HammingIndex(fingerprint="enc-1", **config)


def test_deploy_imports_no_tensorflow():
    probe = (
        "import sys; import deploy.index, deploy.exact, deploy.atomic, deploy.codes; "
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in "
        "{'tensorflow', 'keras', 'keras_ynet'}); print(bad); sys.exit(bool(bad))"
    )
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    result = subprocess.run([sys.executable, "-c", probe], cwd=root, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
