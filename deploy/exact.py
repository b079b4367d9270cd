"""Exact top-k Hamming search over packed codes held as uint64 words.

The scan follows the recipe in ``docs/targets.md`` (Hamming search):

* codes are uint64 words (``codes.packed_to_words``), one XOR + ``np.bitwise_count`` per
  word gives the distances of a block of (queries x codes) pairs;
* the database is scanned in chunks sized so that a block's XOR and distance buffers stay
  in cache, and the buffers are allocated once per call and reused;
* queries are batched, so one pass over a chunk serves many queries;
* top-k is kept by a per-query threshold instead of ``argpartition``: distances are small
  integers, so after the first chunk each query knows its current k-th distance and only
  the rare codes strictly under it become candidates (a row minimum per block says which
  queries have any; only those rows are compared and searched). A query whose chunk
  holds many candidates keeps only that chunk's own k best (a stable ``argsort`` of small
  integers is a radix sort), and so does every query on the first chunk.

  This is a falling threshold (the running k-th distance) rather than a rising one: it
  needs one pass over the database and no stored distance rows, and the candidates it
  admits are few enough that merging them is a small sort.

Ties are broken by database index, lower first: chunks are visited in index order, so a
later code that only equals the current k-th distance can never displace it (the strict
``<``), and candidates are merged by the key (distance, index).

Only numpy is imported here, so the device runtime can use it without TensorFlow.
"""

from __future__ import annotations

import os
import warnings

import numpy as np

# Measured on the 2-core dev machine (1M clustered 64-bit codes, top-10): 128 queries x
# 4096 codes per block (a 4 MiB uint64 XOR buffer, L3-resident) beat 32 x 8192 by ~10%
# and 128 x 2048 by ~50% (per-block Python overhead); see bench/bench_index.py.
DEFAULT_BLOCK_PAIRS = 1 << 19
DEFAULT_QUERY_BATCH = 128
# When a block's queries average more than max(4 k, chunk / 4) candidates, each query
# with more than k keeps only the chunk's own k best: merging costs about 4x more per
# candidate than the radix argsort costs per code.
_HEAVY_PER_QUERY = 4
_HEAVY_FRACTION = 4
# The first chunk has no threshold yet, so each query sorts all of it: 1024 codes give a
# usable threshold at a fraction of the cost of sorting a whole chunk (2x at 10k codes).
_FIRST_CHUNK = 1024

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
        scan = _Scan(db, kk, min(query_batch, n_queries), block_pairs)
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


class _Scan:
    """Buffers and state for scanning one database with batches of queries."""

    def __init__(self, db: np.ndarray, kk: int, query_batch: int, block_pairs: int):
        self.n, n_words = db.shape
        self.kk = kk
        self.query_batch = query_batch
        self.chunk = min(self.n, max(1, block_pairs // query_batch))
        self.first_chunk = min(self.chunk, max(_FIRST_CHUNK, 2 * kk))
        self.db = db
        self.n_words = n_words
        self.max_dist = 64 * n_words
        # Sentinel max_dist + 1 means "no code yet"; it must fit the distance dtype.
        self.dtype = np.uint8 if self.max_dist + 1 <= np.iinfo(np.uint8).max else np.uint16
        size = query_batch * self.chunk
        self.xor_buf = np.empty(size, np.uint64)
        self.dist_buf = np.empty(size, self.dtype)
        self.count_buf = np.empty(size, np.uint8)
        self.mask_buf = np.empty(size, bool)
        # A strided word column XORs 2x slower than a contiguous one, so for W > 1 each
        # chunk's column is copied (a few microseconds, shared by the whole query batch).
        self.column_buf = np.empty(self.chunk, np.uint64)
        # Merge key (row, distance, index) packed into one int64; check it cannot overflow.
        if query_batch * (self.max_dist + 2) * (self.n + 1) >= 2**63:
            raise ValueError("database too large for the int64 merge key; lower query_batch")

    def run(self, queries: np.ndarray, out_idx: np.ndarray, out_dist: np.ndarray) -> None:
        qb, kk, n = len(queries), self.kk, self.n
        span_i, span_d = self.n + 1, self.max_dist + 2
        # Running top-k per query as sorted merge keys (row, distance, index) in one
        # int64, the sentinel (distance max_dist + 1, index n) standing for "none yet".
        rows = np.arange(qb, dtype=np.int64)[:, None]
        self.best = np.repeat((rows * span_d + span_d - 1) * span_i + n, kk, axis=1)
        thr = np.full((qb, 1), self.max_dist + 1, self.dtype)
        pending: list[np.ndarray] = []
        n_pending = 0
        query_cols = [np.ascontiguousarray(queries[:, w : w + 1]) for w in range(self.n_words)]
        bounds = list(range(min(self.first_chunk, n), n, self.chunk))
        for start, stop in zip([0, *bounds], [*bounds, n], strict=True):
            size = qb * (stop - start)
            # Views over the flat buffers stay C-contiguous for a short last chunk.
            xor = self.xor_buf[:size].reshape(qb, -1)
            dist = self.dist_buf[:size].reshape(qb, -1)
            for w, q_col in enumerate(query_cols):
                db_col = self.db[start:stop, w]
                if self.n_words > 1:
                    db_col = self.column_buf[: stop - start]
                    np.copyto(db_col, self.db[start:stop, w])
                np.bitwise_xor(q_col, db_col, out=xor)
                if w == 0:
                    np.bitwise_count(xor, out=dist)
                else:
                    count = self.count_buf[:size].reshape(qb, -1)
                    np.bitwise_count(xor, out=count)
                    np.add(dist, count, out=dist)
            if start == 0:
                # Nothing is known yet: every code of the first chunk is a candidate.
                cand_rows, cand_cols = self._chunk_topk(dist, np.arange(qb))
            else:
                found = self._below(dist, thr, size)
                if found is None:
                    continue
                cand_rows, cand_cols = found
            dists = dist[cand_rows, cand_cols].astype(np.int64)
            pending.append((cand_rows * span_d + dists) * span_i + (cand_cols + start))
            n_pending += cand_rows.size
            # Merging rarely with a stale threshold is still exact: the threshold only
            # admits extra candidates, and the merge keeps the best k of all of them.
            if n_pending >= qb * kk:
                thr[:, 0] = self._merge(pending)
                pending, n_pending = [], 0
        self._merge(pending)
        out_idx[:] = self.best % span_i
        out_dist[:] = (self.best // span_i) % span_d

    def _below(self, dist: np.ndarray, thr: np.ndarray, size: int):
        """(rows, cols) of the codes strictly under their query's threshold, or None."""
        qb, width = dist.shape
        # Candidates are rare once the thresholds settle: a row minimum (one cheap
        # reduction) tells which queries have any, and only those rows are searched.
        rows = np.flatnonzero(np.minimum.reduce(dist, axis=1) < thr[:, 0])
        if rows.size == 0:
            return None
        sub = dist if rows.size == qb else dist[rows]
        mask = self.mask_buf[: rows.size * width].reshape(rows.size, width)
        np.less(sub, thr[rows], out=mask)
        flat = np.flatnonzero(mask)
        local = flat // width
        cols = flat - local * width
        if flat.size > rows.size * max(_HEAVY_PER_QUERY * self.kk, width // _HEAVY_FRACTION):
            # Too many candidates for some queries (a stale threshold, or a dense
            # chunk): only each such query's chunk-own k best are kept.
            heavy = np.flatnonzero(np.bincount(local, minlength=rows.size) > self.kk)
            light = ~np.isin(local, heavy)
            heavy_rows, heavy_cols = self._chunk_topk(sub, heavy)
            local = np.concatenate([local[light], heavy_rows])
            cols = np.concatenate([cols[light], heavy_cols])
        return rows[local], cols

    def _chunk_topk(self, dist: np.ndarray, rows: np.ndarray):
        """(rows, cols) of the chunk's own k best codes (distance, then index) per row.

        Only these can enter a query's top-k from this chunk; a stable argsort of small
        integers is a radix sort and keeps index order within ties.
        """
        cols = np.argsort(dist[rows], axis=1, kind="stable")[:, : self.kk]
        return np.repeat(rows, cols.shape[1]), cols.ravel()

    def _merge(self, pending: list[np.ndarray]) -> np.ndarray:
        """Merges candidate keys into the running top-k; returns the k-th distances."""
        qb, kk = self.best.shape
        span_i, span_d = self.n + 1, self.max_dist + 2
        keys = np.concatenate([self.best.ravel(), *pending])
        keys.sort()
        # Every row holds its kk old keys plus its candidates, so its first kk keys
        # start at the cumulative count of the rows before it.
        counts = np.bincount(keys // (span_i * span_d), minlength=qb)
        starts = np.cumsum(counts) - counts
        self.best = keys[starts[:, None] + np.arange(kk)]
        return (self.best[:, -1] // span_i) % span_d
