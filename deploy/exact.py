"""Exact top-k Hamming search over packed codes held as uint64 words.

Two scans give the same result (bit for bit: indices, distances, tie order):

* the compiled kernel (``deploy/exact_kernel.py``, numba): XOR + popcount + threshold
  test fused in one pass per (query, code) pair, about 8x the numpy scan's queries/s
  (docs/results.md, "The compiled scan"). It runs when numba imports;
* the numpy scan (``deploy/exact_numpy.py``), the fallback for a device without numba.

:func:`scan_path` says which one runs; the environment variable ``YNET_EXACT_SCAN``
(``auto``, the default; ``numba``; ``numpy``) forces one. numba is imported on the first
search, not with this module (it takes 0.1 to 0.4 s), and a kernel that cannot compile
or load its cache becomes a warning and the numpy scan, never a failed search.

Both break ties by database index, lower first: codes are visited in index order and
only a distance strictly under the current k-th enters a query's top-k.

Only numpy and the standard library are imported here (numba lazily, if installed), so
the device runtime can use it without TensorFlow.
"""

from __future__ import annotations

import os
import warnings

import numpy as np

from deploy.exact_numpy import NumpyScan

# Measured on the 2-core dev machine (1M clustered 64-bit codes, top-10): 128 queries x
# 4096 codes per block (a 4 MiB uint64 XOR buffer, L3-resident) beat 32 x 8192 by ~10%
# and 128 x 2048 by ~50% (per-block Python overhead); see bench/bench_index.py. The
# kernel takes the same query batch and chunk, the chunk capped by its own measurement
# (deploy.exact_kernel.MAX_CHUNK).
DEFAULT_BLOCK_PAIRS = 1 << 19
DEFAULT_QUERY_BATCH = 128
# The switch between the compiled scan and the numpy one (see scan_path).
SCAN_ENV = "YNET_EXACT_SCAN"
_SCAN_CHOICES = ("auto", "numba", "numpy")
# deploy.exact_kernel.scan_topk once imported ("scan": None when numba is unusable, and
# "reason" why); imported on the first search, not with this module (numba takes 0.4 s).
_KERNEL: dict = {}


def exact_topk(
    query_words: np.ndarray,
    db_words: np.ndarray,
    k: int,
    *,
    query_batch: int = DEFAULT_QUERY_BATCH,
    block_pairs: int = DEFAULT_BLOCK_PAIRS,
) -> tuple[np.ndarray, np.ndarray]:
    """Exact k nearest database codes of each query by Hamming distance.

    Args:
        query_words: uint64 array (Q, W), codes as given by ``codes.packed_to_words``.
        db_words: uint64 array (N, W), same word count W.
        k: number of neighbours (>= 1). ``k > N`` returns all N codes.
        query_batch: queries scanned together against each database chunk.
        block_pairs: (queries x codes) pairs per block; sets the chunk length.

    Returns:
        ``(indices, distances)``: int64 and int32 arrays of shape (Q, min(k, N)), each
        row sorted by distance, ties by database index (lower first).

    Example:
        >>> from deploy import codes
        >>> db = codes.packed_to_words(codes.pack_bits(np.eye(64, dtype=np.uint8)))
        >>> idx, dist = exact_topk(db[:1], db, k=3)
        >>> idx.tolist(), dist.tolist()
        ([[0, 1, 2]], [[0, 2, 2]])
    """
    queries = _check_words(query_words, "query_words")
    db = _check_words(db_words, "db_words")
    if queries.shape[1] != db.shape[1]:
        raise ValueError(
            f"query codes have {queries.shape[1]} uint64 words, database codes {db.shape[1]}"
        )
    if isinstance(k, bool) or not isinstance(k, int | np.integer) or k < 1:
        raise ValueError(f"k must be an integer >= 1, got {k!r}")
    if len(db) == 0:
        raise ValueError("cannot search an empty database")
    if query_batch < 1 or block_pairs < 1:
        raise ValueError("query_batch and block_pairs must be >= 1")
    n_queries = len(queries)
    kk = min(int(k), len(db))
    indices = np.empty((n_queries, kk), np.int64)
    distances = np.empty((n_queries, kk), np.int32)
    if n_queries and not _kernel_scan(
        queries, db, kk, query_batch, block_pairs, indices, distances
    ):
        scan = NumpyScan(db, kk, min(query_batch, n_queries), block_pairs)
        for start in range(0, n_queries, scan.query_batch):
            stop = start + scan.query_batch
            scan.run(queries[start:stop], indices[start:stop], distances[start:stop])
    return indices, distances


def scan_path() -> str:
    """Which scan :func:`exact_topk` runs now: ``"numba"`` or ``"numpy"``.

    Set by the environment variable ``YNET_EXACT_SCAN`` (read at every search):
    ``auto`` (unset: the compiled kernel when numba imports, else numpy), ``numba``
    (the kernel or an error) or ``numpy``.
    """
    choice = os.environ.get(SCAN_ENV, "auto")
    if choice not in _SCAN_CHOICES:
        raise ValueError(f"{SCAN_ENV} must be one of {_SCAN_CHOICES}, got {choice!r}")
    if choice == "numpy":
        return "numpy"
    if _load_kernel() is None:
        if choice == "numba":
            raise RuntimeError(
                f"{SCAN_ENV}=numba, but the compiled scan is not available: "
                f"{_KERNEL['reason']} (pip install numba, see requirements.txt)"
            )
        return "numpy"
    return "numba"


def _load_kernel():
    """deploy.exact_kernel.scan_topk, imported once, or None (the reason is kept)."""
    if "scan" not in _KERNEL:
        try:
            from deploy.exact_kernel import scan_topk
        except Exception as error:  # noqa: BLE001 (no numba, or numba cannot start: numpy)
            scan_topk = None
            _KERNEL["reason"] = f"{type(error).__name__}: {error}"
        _KERNEL["scan"] = scan_topk
    return _KERNEL["scan"]


def _kernel_scan(queries, db, kk, query_batch, block_pairs, out_idx, out_dist) -> bool:
    """Runs the compiled scan into the outputs; False when the numpy scan must run.

    A failure to compile or to use numba's cache is turned into a warning and the numpy
    scan (under ``auto``); forced with ``YNET_EXACT_SCAN=numba`` it is raised.
    """
    if scan_path() != "numba":
        return False
    query_batch = min(query_batch, len(queries))
    chunk = min(len(db), max(1, block_pairs // query_batch))
    # Read-only contiguous views: one compiled signature whether the codes are a
    # writable array or a read-only memory map (a copy only if the caller's is strided).
    queries, db = (_read_only(np.ascontiguousarray(a)) for a in (queries, db))
    try:
        _KERNEL["scan"](queries, db, kk, query_batch, chunk, out_idx, out_dist)
    except Exception as error:
        if os.environ.get(SCAN_ENV) == "numba":
            raise
        warnings.warn(
            f"the compiled Hamming scan failed ({type(error).__name__}: {error}); "
            "using the numpy scan from now on",
            RuntimeWarning,
            stacklevel=3,
        )
        _KERNEL.update(scan=None, reason=f"it failed: {error}")
        return False
    return True


def _read_only(array: np.ndarray) -> np.ndarray:
    view = array.view(np.ndarray)
    view.flags.writeable = False
    return view


def _check_words(words: np.ndarray, name: str) -> np.ndarray:
    words = np.asarray(words)
    if words.dtype != np.uint64 or words.ndim != 2:
        raise ValueError(
            f"{name} must be a 2-D uint64 array from codes.packed_to_words, "
            f"got {words.dtype} with shape {words.shape}"
        )
    return words
