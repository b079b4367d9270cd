"""Scale paths of the index: memory-mapped codes, sharded threads, several folders as one."""

import numpy as np
import pytest

from deploy import codes
from deploy.exact import exact_topk
from deploy.index import HammingIndex, IndexFormatError, IndexMismatchError
from deploy.mapped_index import MappedIndex, MultiIndex, map_codes
from deploy.sharded import merge_topk, shard_bounds, sharded_topk


def clustered(rng, n, bits=64, n_centres=5, flip=0.05):
    centres = rng.integers(0, 2, (n_centres, bits), dtype=np.uint8)
    picked = centres[rng.integers(0, n_centres, n)]
    return picked ^ (rng.random(picked.shape) < flip).astype(np.uint8)


def saved(folder, bits_rows, ids, fingerprint="fp"):
    index = HammingIndex(bits=bits_rows.shape[1], fingerprint=fingerprint, backend="exact")
    index.batch_add(bits_rows, ids, [{"path": f"/img/{i}.png", "label": str(i)} for i in ids])
    index.save(folder)
    return index


def as_tuples(hits):
    return [[(h.rank, h.id, h.distance, h.position, h.metadata) for h in row] for row in hits]


def test_merge_topk_literal():
    # Distances tie at 2 across parts: the lower global position (3 < 7) comes first.
    a = (np.array([[0, 3]]), np.array([[1, 2]]))
    b = (np.array([[5, 7]]), np.array([[0, 2]]))
    positions, distances = merge_topk([a, b], 3)
    assert positions.tolist() == [[5, 0, 3]]
    assert distances.tolist() == [[0, 1, 2]]


def test_shard_bounds_cover_everything_once():
    assert shard_bounds(10, 3, min_rows=2) == [(0, 3), (3, 6), (6, 10)]
    assert shard_bounds(10, 3, min_rows=6) == [(0, 10)]
    assert shard_bounds(0, 4) == [(0, 0)]


@pytest.mark.parametrize("threads", [2, 3, 7])
@pytest.mark.parametrize("bits", [32, 64, 128])
def test_sharded_equals_single_thread(threads, bits):
    # Few centres and few flipped bits: many exact ties, which must keep index order.
    rng = np.random.default_rng(threads * bits)
    db = codes.packed_to_words(codes.pack_bits(clustered(rng, 5000, bits)))
    queries = codes.packed_to_words(codes.pack_bits(clustered(rng, 40, bits)))
    expected = exact_topk(queries, db, 25)
    got = sharded_topk(queries, db, 25, threads=threads, min_shard_rows=100)
    assert np.array_equal(got[0], expected[0])
    assert np.array_equal(got[1], expected[1])


def test_sharded_k_larger_than_a_shard():
    rng = np.random.default_rng(1)
    db = codes.packed_to_words(codes.pack_bits(clustered(rng, 300)))
    q = db[:3]
    expected = exact_topk(q, db, 250)
    got = sharded_topk(q, db, 250, threads=4, min_shard_rows=50)
    assert np.array_equal(got[0], expected[0]) and np.array_equal(got[1], expected[1])


@pytest.mark.parametrize("threads", [0, -1, 1.5, True])
def test_sharded_refuses_bad_threads(threads):
    db = np.zeros((4, 1), np.uint64)
    with pytest.raises(ValueError, match="threads must be an integer >= 1"):
        sharded_topk(db[:1], db, 1, threads=threads)


@pytest.mark.parametrize("bits", [32, 64, 256])
def test_mapped_index_equals_loaded_index(tmp_path, bits):
    rng = np.random.default_rng(bits)
    db = clustered(rng, 3000, bits)
    ids = [f"x{i}" for i in range(len(db))]
    saved(tmp_path / "idx", db, ids)
    loaded = HammingIndex.load(tmp_path / "idx")
    mapped = MappedIndex.open(tmp_path / "idx", threads=2)
    queries = clustered(rng, 20, bits)
    assert as_tuples(mapped.batch_lookup(queries, 15)) == as_tuples(
        loaded.batch_lookup(queries, 15)
    )
    if bits != 32:  # whole words: the scan reads the map itself, no copy
        assert isinstance(mapped._words.base, np.memmap) or isinstance(mapped._words, np.memmap)
    assert np.array_equal(mapped.packed_codes([5, 0]), codes.pack_bits(db[[5, 0]]))


def test_mapped_index_literal_hits(tmp_path):
    db = np.eye(64, dtype=np.uint8)[:4]  # code i has bit i set; all pairs at distance 2
    saved(tmp_path / "idx", db, ["a", "b", "c", "d"])
    hits = MappedIndex.open(tmp_path / "idx").lookup(db[2], k=3)
    assert [(h.rank, h.id, h.distance, h.position) for h in hits] == [
        (1, "c", 0, 2),
        (2, "a", 2, 0),
        (3, "b", 2, 1),
    ]


def test_multi_index_equals_one_index_holding_all(tmp_path):
    rng = np.random.default_rng(7)
    parts = [clustered(rng, n) for n in (700, 1, 1300)]
    folders, all_ids = [], []
    for site, part in enumerate(parts):
        ids = [f"s{site}-{i}" for i in range(len(part))]
        saved(tmp_path / f"site{site}", part, ids)
        folders.append(tmp_path / f"site{site}")
        all_ids += ids
    whole = HammingIndex(bits=64, fingerprint="fp", backend="exact")
    whole.batch_add(
        np.concatenate(parts),
        all_ids,
        [{"path": f"/img/{i}.png", "label": str(i)} for i in all_ids],
    )
    multi = MultiIndex.open(folders, threads=2)
    queries = clustered(rng, 30)
    for k in (1, 10, 2001, 5000):
        assert as_tuples(multi.batch_lookup(queries, k)) == as_tuples(
            whole.batch_lookup(queries, k)
        )
    hit = multi.lookup(queries[0], 5)[2]
    assert multi.locate(hit.position)[0] == int(hit.id[1])  # "s<site>-..."
    assert np.array_equal(multi.packed_codes([hit.position]), whole.packed_codes([hit.position]))


def test_multi_index_refuses_another_encoder(tmp_path):
    db = np.eye(64, dtype=np.uint8)[:2]
    saved(tmp_path / "a", db, ["a0", "a1"], fingerprint="fp1")
    saved(tmp_path / "b", db, ["b0", "b1"], fingerprint="fp2")
    with pytest.raises(IndexMismatchError, match="only codes of one encoder"):
        MultiIndex.open([tmp_path / "a", tmp_path / "b"])


def test_multi_index_refuses_a_folder_twice(tmp_path):
    saved(tmp_path / "a", np.eye(64, dtype=np.uint8)[:2], ["a0", "a1"])
    with pytest.raises(ValueError, match="given twice"):
        MultiIndex.open([tmp_path / "a", tmp_path / "a"])


def test_map_codes_refuses_a_short_file(tmp_path):
    saved(tmp_path / "idx", np.eye(64, dtype=np.uint8)[:4], ["a", "b", "c", "d"])
    path = tmp_path / "idx" / "codes.npy"
    path.write_bytes(path.read_bytes()[:-3])
    with pytest.raises(IndexFormatError, match="codes.npy is missing, truncated or corrupted"):
        MappedIndex.open(tmp_path / "idx")


def test_map_codes_refuses_another_shape(tmp_path):
    np.save(tmp_path / "codes.npy", np.zeros((4, 8), np.uint8))
    with pytest.raises(IndexFormatError, match=r"expected C-order uint8 \(5, 8\)"):
        map_codes(tmp_path / "codes.npy", 5, 8)


def test_mapped_open_checks_expected_bits(tmp_path):
    saved(tmp_path / "idx", np.eye(64, dtype=np.uint8)[:2], ["a", "b"])
    with pytest.raises(IndexMismatchError, match="holds 64-bit codes, expected 128"):
        MappedIndex.open(tmp_path / "idx", expected_bits=128)
