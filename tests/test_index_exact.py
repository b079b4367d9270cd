"""deploy.exact.exact_topk against brute force: all distances, then a stable argsort.

Both scans are checked: the compiled kernel (deploy/exact_kernel.py) and the numpy one,
forced through ``YNET_EXACT_SCAN``; the kernel's cases are skipped without numba.
"""

import contextlib
import importlib.util
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from deploy import codes, exact
from deploy.exact import SCAN_ENV, exact_topk

ROOT = Path(__file__).resolve().parents[1]
HAS_NUMBA = importlib.util.find_spec("numba") is not None
SCANS = [
    pytest.param("numba", marks=pytest.mark.skipif(not HAS_NUMBA, reason="numba not installed")),
    "numpy",
]


@contextlib.contextmanager
def forced(scan: str):
    """Runs the block with exact_topk forced onto one scan (a context manager rather
    than monkeypatch, which Hypothesis tests cannot take as a fixture)."""
    old = os.environ.get(SCAN_ENV)
    os.environ[SCAN_ENV] = scan
    try:
        assert exact.scan_path() == scan
        yield
    finally:
        if old is None:
            del os.environ[SCAN_ENV]
        else:
            os.environ[SCAN_ENV] = old


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


@pytest.mark.parametrize("scan", SCANS)
@pytest.mark.parametrize("bits", [32, 64, 128, 256])
@pytest.mark.parametrize("kind", ["random", "clustered", "duplicates"])
@pytest.mark.parametrize("k", [1, 10])
def test_matches_brute_force(bits, kind, k, scan):
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
        with forced(scan):
            idx, dist = exact_topk(
                words(queries), words(db), k, query_batch=query_batch, block_pairs=block_pairs
            )
        np.testing.assert_array_equal(idx, expected[0])
        np.testing.assert_array_equal(dist, expected[1])


@pytest.mark.parametrize("scan", SCANS)
def test_database_ordered_far_to_near(scan):
    # Every chunk beats all earlier ones: many candidates per chunk (the path that cuts a
    # chunk to its own k best), and ties in runs of 16 codes at each distance.
    ones = np.repeat(np.arange(64, 0, -1), 16)  # 1024 codes, 64 ones down to 1
    db = (np.arange(64)[None, :] < ones[:, None]).astype(np.uint8)
    queries = np.zeros((3, 64), np.uint8)
    for k in (1, 10, 40):
        with forced(scan):
            idx, dist = exact_topk(words(queries), words(db), k, query_batch=2, block_pairs=2 * 200)
        expected_idx, expected_dist = brute_force(queries, db, k)
        np.testing.assert_array_equal(idx, expected_idx)
        np.testing.assert_array_equal(dist, expected_dist)
    assert idx[0, :3].tolist() == [1008, 1009, 1010] and dist[0, 0] == 1


@pytest.mark.parametrize("scan", SCANS)
def test_k_larger_than_database_returns_everything_sorted(scan):
    db = np.array([[1] * 32, [0] * 32, [1] * 16 + [0] * 16], np.uint8)
    with forced(scan):
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


@pytest.mark.parametrize("scan", SCANS)
def test_errors(scan, monkeypatch):
    monkeypatch.setenv(SCAN_ENV, scan)
    db = words(np.zeros((3, 64), np.uint8))
    with pytest.raises(ValueError, match="k must be"):
        exact_topk(db, db, 0)
    with pytest.raises(ValueError, match="uint64"):
        exact_topk(np.zeros((1, 8), np.uint8), db, 1)
    with pytest.raises(ValueError, match="words"):
        exact_topk(words(np.zeros((1, 128), np.uint8)), db, 1)
    with pytest.raises(ValueError, match="empty"):
        exact_topk(db, db[:0], 1)


@pytest.mark.parametrize("scan", SCANS)
@settings(max_examples=60, deadline=None, derandomize=True)
@given(
    seed=st.integers(0, 2**32 - 1),
    n=st.integers(1, 60),
    n_distinct=st.integers(1, 8),
    k=st.integers(1, 70),
    block_pairs=st.integers(1, 200),
    query_batch=st.integers(1, 5),
)
def test_property_matches_brute_force(scan, seed, n, n_distinct, k, block_pairs, query_batch):
    rng = np.random.default_rng(seed)
    distinct = rng.integers(0, 2, (n_distinct, 64), dtype=np.uint8)
    db = distinct[rng.integers(0, n_distinct, n)]
    queries = rng.integers(0, 2, (6, 64), dtype=np.uint8)
    with forced(scan):
        idx, dist = exact_topk(
            words(queries), words(db), k, query_batch=query_batch, block_pairs=block_pairs
        )
    expected_idx, expected_dist = brute_force(queries, db, k)
    np.testing.assert_array_equal(idx, expected_idx)
    np.testing.assert_array_equal(dist, expected_dist)


def kernel_and_numpy(queries, db, k, **kwargs):
    with forced("numba"):
        got = exact_topk(queries, db, k, **kwargs)
    with forced("numpy"):
        expected = exact_topk(queries, db, k, **kwargs)
    assert got[0].dtype == np.int64 and got[1].dtype == np.int32
    return got, expected


@pytest.mark.skipif(not HAS_NUMBA, reason="numba not installed")
@pytest.mark.parametrize("n_words", [1, 2, 3, 4])
@pytest.mark.parametrize("kind", ["random", "clustered", "duplicates"])
@pytest.mark.parametrize("k", [1, 10, "past the end"])
@pytest.mark.parametrize("n", [300, 9000])
def test_kernel_identical_to_numpy(n_words, kind, k, n):
    # 300 codes: shorter than a chunk (and than a 512-code block); 9000: several 4096-code
    # chunks and a short last one. 131 queries: a batch of 128 and a partial one. W = 3
    # is no contract length; it runs the kernel's general (not written-out) loop.
    rng = np.random.default_rng(n_words * 1000 + n)
    if kind == "random":
        db = rng.integers(0, 2**64, (n, n_words), dtype=np.uint64, endpoint=False)
        queries = rng.integers(0, 2**64, (131, n_words), dtype=np.uint64, endpoint=False)
    elif kind == "clustered":  # codes near 5 centres: many equal distances
        centres = rng.integers(0, 2**64, (5, n_words), dtype=np.uint64, endpoint=False)
        flips = rng.integers(0, 2**64, (3, n + 131, n_words), dtype=np.uint64, endpoint=False)
        near = centres[rng.integers(0, 5, n + 131)] ^ (flips[0] & flips[1] & flips[2])
        db, queries = near[:n], near[n:]
    else:  # 3 distinct codes: every distance tied about n / 3 times
        distinct = rng.integers(0, 2**64, (3, n_words), dtype=np.uint64, endpoint=False)
        db = distinct[rng.integers(0, 3, n)]
        queries = np.concatenate([db[:128], distinct])
    k = n + 5 if k == "past the end" else k
    got, expected = kernel_and_numpy(queries, db, k)
    np.testing.assert_array_equal(got[0], expected[0])
    np.testing.assert_array_equal(got[1], expected[1])
    assert got[0].shape == (len(queries), min(k, n))


@pytest.mark.skipif(not HAS_NUMBA, reason="numba not installed")
def test_kernel_literal_ties_keep_lower_index():
    # 600 copies of code 0, then one code at distance 1 (in the second 512-code block):
    # it comes first, then the tied zeros in index order.
    db = np.zeros((601, 1), np.uint64)
    db[600, 0] = np.uint64(2**64 - 2)  # 63 ones: distance 1 to the all-ones query
    query = np.full((1, 1), 2**64 - 1, np.uint64)
    with forced("numba"):
        idx, dist = exact_topk(query, db, 3)
    assert idx.tolist() == [[600, 0, 1]]
    assert dist.tolist() == [[1, 64, 64]]


@pytest.mark.skipif(not HAS_NUMBA, reason="numba not installed")
def test_kernel_reads_a_read_only_memory_map(tmp_path):
    rng = np.random.default_rng(5)
    db = rng.integers(0, 2**64, (5000, 2), dtype=np.uint64, endpoint=False)
    np.save(tmp_path / "codes.npy", db)
    mapped = np.load(tmp_path / "codes.npy", mmap_mode="r")
    got, expected = kernel_and_numpy(db[:20], mapped, 7)
    np.testing.assert_array_equal(got[0], expected[0])
    assert got[0][:, 0].tolist() == list(range(20))  # each query finds itself first


@pytest.mark.parametrize("value", ["fast", "NUMBA", ""])
def test_scan_switch_refuses_unknown_values(value, monkeypatch):
    monkeypatch.setenv(SCAN_ENV, value)
    db = words(np.zeros((3, 64), np.uint8))
    with pytest.raises(ValueError, match=f"{SCAN_ENV} must be one of"):
        exact_topk(db, db, 1)


def run_python(code: str, env: dict, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    inherited = {key: value for key, value in os.environ.items() if key != SCAN_ENV}
    env = {**inherited, "PYTHONPATH": str(cwd), **env}
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


SEARCH = """
    import numpy as np
    from deploy import exact
    db = np.arange(700, dtype=np.uint64)[:, None]
    idx, dist = exact.exact_topk(db[[3]], db, 4)
    print(exact.scan_path(), idx.tolist(), dist.tolist())
"""


def test_without_numba_the_numpy_scan_runs():
    # numba made unimportable, as on a device without it.
    block = "import sys; sys.modules['numba'] = None\n"
    done = run_python(block + textwrap.dedent(SEARCH), {})
    assert done.returncode == 0, done.stderr
    assert done.stdout.split()[0] == "numpy"
    assert done.stdout.strip().endswith("[[3, 1, 2, 7]] [[0, 1, 1, 1]]")
    forced_run = run_python(block + textwrap.dedent(SEARCH), {SCAN_ENV: "numba"})
    assert forced_run.returncode != 0
    assert f"{SCAN_ENV}=numba, but the compiled scan is not available" in forced_run.stderr


@pytest.mark.slow
@pytest.mark.skipif(not HAS_NUMBA, reason="numba not installed")
@pytest.mark.parametrize("numba_cache_dir", [False, True])
def test_kernel_when_the_package_folder_is_not_writable(tmp_path, numba_cache_dir):
    # A copy of the scan modules whose __pycache__ is a file (no cache can go next to
    # them, as in a read-only install) and a home whose .cache is a file: numba finds
    # no cache folder and compiles without one; with NUMBA_CACHE_DIR the cache goes there.
    package = tmp_path / "pkg" / "deploy"
    package.mkdir(parents=True)
    for name in ("__init__.py", "exact.py", "exact_numpy.py", "exact_kernel.py"):
        shutil.copy(ROOT / "deploy" / name, package / name)
    (package / "__pycache__").write_text("not a folder")
    blocked = tmp_path / "blocked"
    blocked.write_text("not a folder")
    env = {"HOME": str(blocked), "XDG_CACHE_HOME": str(blocked)}
    if numba_cache_dir:
        env["NUMBA_CACHE_DIR"] = str(tmp_path / "numba_cache")
    done = run_python(SEARCH, env, cwd=tmp_path / "pkg")
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "numba [[3, 1, 2, 7]] [[0, 1, 1, 1]]"
    cached = sorted(p.name for p in (tmp_path / "numba_cache").rglob("*.nbi"))
    if numba_cache_dir:
        assert "no locator available" not in done.stderr
        assert any(name.startswith("exact_kernel.scan_topk") for name in cached)
    else:
        assert "no locator available" in done.stderr and "compiling without a cache" in done.stderr
        assert cached == []


@pytest.mark.slow
@pytest.mark.skipif(not HAS_NUMBA, reason="numba not installed")
def test_a_damaged_cache_falls_back_to_numpy(tmp_path):
    env = {"NUMBA_CACHE_DIR": str(tmp_path / "numba_cache")}
    first = run_python(SEARCH, env)
    assert first.stdout.strip() == "numba [[3, 1, 2, 7]] [[0, 1, 1, 1]]", first.stderr
    damaged = list((tmp_path / "numba_cache").rglob("*.nbc"))
    assert damaged
    for path in damaged:
        path.write_bytes(b"\x80\x05 not a pickle")
    second = run_python(SEARCH, env)
    assert second.returncode == 0, second.stderr
    assert second.stdout.strip() == "numpy [[3, 1, 2, 7]] [[0, 1, 1, 1]]"
    assert "the compiled Hamming scan failed" in second.stderr
