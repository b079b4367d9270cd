"""deploy.exact.exact_topk against brute force: all distances, then a stable argsort."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from deploy import codes
from deploy.exact import exact_topk


def words(bits: np.ndarray) -> np.ndarray:
    return codes.packed_to_words(codes.pack_bits(bits))


def brute_force(queries: np.ndarray, db: np.ndarray, k: int):
    dist = codes.hamming_distance_matrix(queries, db)
    idx = np.argsort(dist, axis=1, kind="stable")[:, :k]  # ties: lower index first
    return idx, np.take_along_axis(dist, idx, axis=1)


def clustered(rng, n: int, centres: np.ndarray, flip: float) -> np.ndarray:
    picked = centres[rng.integers(0, len(centres), n)]
    return picked ^ (rng.random(picked.shape) < flip).astype(np.uint8)


def test_literal_example():
    # Code i has only bit i set: distance 0 to itself, 2 to every other code.
    db = np.eye(64, dtype=np.uint8)
    idx, dist = exact_topk(words(db[[5]]), words(db), k=4)
    assert idx.tolist() == [[5, 0, 1, 2]]
    assert dist.tolist() == [[0, 2, 2, 2]]
    assert idx.dtype == np.int64 and dist.dtype == np.int32


@pytest.mark.parametrize("bits", [32, 64, 128, 256])
@pytest.mark.parametrize("kind", ["random", "clustered", "duplicates"])
@pytest.mark.parametrize("k", [1, 10])
def test_matches_brute_force(bits, kind, k):
    rng = np.random.default_rng(bits + k)
    if kind == "random":
        db = rng.integers(0, 2, (1500, bits), dtype=np.uint8)
        queries = rng.integers(0, 2, (40, bits), dtype=np.uint8)
    elif kind == "clustered":  # small flip rate: many equal distances
        centres = rng.integers(0, 2, (5, bits), dtype=np.uint8)
        db = clustered(rng, 1500, centres, 0.02)
        queries = clustered(rng, 40, centres, 0.02)
    else:  # 4 distinct codes: every distance is tied hundreds of times
        db = rng.integers(0, 2, (4, bits), dtype=np.uint8)[rng.integers(0, 4, 1500)]
        queries = db[:40]
    expected = brute_force(queries, db, k)
    # Small blocks force many chunks, a short last chunk and partial query batches.
    for query_batch, block_pairs in [(128, 1 << 19), (7, 7 * 97), (1, 300)]:
        idx, dist = exact_topk(
            words(queries), words(db), k, query_batch=query_batch, block_pairs=block_pairs
        )
        np.testing.assert_array_equal(idx, expected[0])
        np.testing.assert_array_equal(dist, expected[1])


def test_database_ordered_far_to_near():
    # Every chunk beats all earlier ones: many candidates per chunk (the path that cuts a
    # chunk to its own k best), and ties in runs of 16 codes at each distance.
    ones = np.repeat(np.arange(64, 0, -1), 16)  # 1024 codes, 64 ones down to 1
    db = (np.arange(64)[None, :] < ones[:, None]).astype(np.uint8)
    queries = np.zeros((3, 64), np.uint8)
    for k in (1, 10, 40):
        idx, dist = exact_topk(words(queries), words(db), k, query_batch=2, block_pairs=2 * 200)
        expected_idx, expected_dist = brute_force(queries, db, k)
        np.testing.assert_array_equal(idx, expected_idx)
        np.testing.assert_array_equal(dist, expected_dist)
    assert idx[0, :3].tolist() == [1008, 1009, 1010] and dist[0, 0] == 1


def test_k_larger_than_database_returns_everything_sorted():
    db = np.array([[1] * 32, [0] * 32, [1] * 16 + [0] * 16], np.uint8)
    idx, dist = exact_topk(words(db[[1]]), words(db), k=10)
    assert idx.tolist() == [[1, 2, 0]]
    assert dist.tolist() == [[0, 16, 32]]


def test_batch_equals_single_queries():
    rng = np.random.default_rng(3)
    db = rng.integers(0, 2, (500, 64), dtype=np.uint8)
    queries = rng.integers(0, 2, (9, 64), dtype=np.uint8)
    batch_idx, batch_dist = exact_topk(words(queries), words(db), 5)
    for j in range(len(queries)):
        idx, dist = exact_topk(words(queries[j : j + 1]), words(db), 5)
        np.testing.assert_array_equal(idx[0], batch_idx[j])
        np.testing.assert_array_equal(dist[0], batch_dist[j])


def test_errors():
    db = words(np.zeros((3, 64), np.uint8))
    with pytest.raises(ValueError, match="k must be"):
        exact_topk(db, db, 0)
    with pytest.raises(ValueError, match="uint64"):
        exact_topk(np.zeros((1, 8), np.uint8), db, 1)
    with pytest.raises(ValueError, match="words"):
        exact_topk(words(np.zeros((1, 128), np.uint8)), db, 1)
    with pytest.raises(ValueError, match="empty"):
        exact_topk(db, db[:0], 1)


@settings(max_examples=60, deadline=None, derandomize=True)
@given(
    seed=st.integers(0, 2**32 - 1),
    n=st.integers(1, 60),
    n_distinct=st.integers(1, 8),
    k=st.integers(1, 70),
    block_pairs=st.integers(1, 200),
    query_batch=st.integers(1, 5),
)
def test_property_matches_brute_force(seed, n, n_distinct, k, block_pairs, query_batch):
    rng = np.random.default_rng(seed)
    distinct = rng.integers(0, 2, (n_distinct, 64), dtype=np.uint8)
    db = distinct[rng.integers(0, n_distinct, n)]
    queries = rng.integers(0, 2, (6, 64), dtype=np.uint8)
    idx, dist = exact_topk(
        words(queries), words(db), k, query_batch=query_batch, block_pairs=block_pairs
    )
    expected_idx, expected_dist = brute_force(queries, db, k)
    np.testing.assert_array_equal(idx, expected_idx)
    np.testing.assert_array_equal(dist, expected_dist)
