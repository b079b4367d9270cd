"""The exact top-k Hamming scan compiled with numba: XOR, popcount and threshold in one pass.

:func:`deploy.exact.exact_topk` checks its arguments and calls :func:`scan_topk` here when
numba imports (see that module for the switch); this module holds only the kernel. It is
imported lazily, on the first search, because importing numba takes 0.1 to 0.4 s.

The loop, per batch of queries (``query_batch``, 128 by default):

* the database is visited in chunks of at most 4096 codes, so each code read from memory
  serves the whole batch from cache (for W > 1 words and a batch of 4 or more queries,
  the chunk is first copied into one contiguous column per word, shared by the batch);
* per (query, block of 512 codes), one vectorised pass computes XOR + popcount and the
  block's minimum distance (LLVM emits AVX-512 ``vpopcntq`` here, or whatever the host
  CPU has); only when that minimum is strictly under the query's threshold are the
  block's codes tested one by one (recomputed for W = 1 rather than stored: a store per
  pair cost more than the rare recomputation);
* each query keeps its running top-k as a bounded max-heap keyed by (distance, index);
  the threshold is the heap's top distance. Codes are visited in index order and only
  distances strictly under the threshold enter, so a later code tied with the k-th never
  displaces it: ties keep the lower index, as in the numpy scan. The heap starts full of
  sentinels (distance 64 W + 1, index N) that any real code beats.

Popcount: numba 0.68 does not support ``np.bitwise_count`` in nopython mode (checked:
a TypingError), so :func:`popcount64` is an intrinsic that emits LLVM's ``ctpop``.

Caching: ``cache=True`` stores the machine code (about 350 kB, one signature: the
arguments are always read-only C arrays) in ``$NUMBA_CACHE_DIR`` when that is set, else
next to this file (``__pycache__``), else, when that folder is not writable (a read-only
install), in numba's user-wide cache (``$XDG_CACHE_HOME/numba`` or ``~/.cache/numba``).
With none writable, numba refuses ``cache=True`` at import; :func:`_compiled` then
compiles without a cache (about 3 s at every start). :mod:`deploy.exact` turns a failure
to compile or to load the cache (a damaged file) into a warning and the numpy scan, so a
cache problem never breaks a search (tests/test_index_exact.py checks both).
"""

from __future__ import annotations

import warnings

import numpy as np
from llvmlite import ir
from numba import njit, types
from numba.extending import intrinsic

# Measured on the 2-core dev machine (AMD EPYC, AVX-512 VPOPCNTDQ; 1M clustered 64-bit
# codes, top-10, 1024 queries): a minimum over blocks of 512 codes beat 256 by 8% and
# 64 by 60% (per-block set-up), and 1024 by 1%; the chunk (codes one query batch shares
# from cache) of 4096 codes beat 16384 by 10% and 65536 by 15%.
BLOCK = 512
MAX_CHUNK = 4096
# For W > 1 words, batches of at least this many queries copy each chunk into word
# columns (contiguous passes; 1M 256-bit codes, 1000 queries: 2434 against 1501 q/s);
# smaller ones read the interleaved rows in place, which costs no copy per query (4 is
# a guess, not tuned).
TRANSPOSE_MIN_QUERIES = 4


def _compiled(function):
    """``numba.njit(cache=True, nogil=True)``, or without the cache where numba finds no
    writable cache folder (it raises then, at decoration): compiled on every start then."""
    try:
        return njit(cache=True, nogil=True)(function)
    except RuntimeError as error:
        warnings.warn(f"{error}; compiling without a cache", RuntimeWarning, stacklevel=2)
        return njit(nogil=True)(function)


@intrinsic
def popcount64(typingctx, value):
    """Number of set bits of a uint64 (LLVM ``ctpop``; vectorises to ``vpopcntq``)."""
    if value != types.uint64:
        return None

    def codegen(context, builder, signature, args):
        ctpop = builder.module.declare_intrinsic("llvm.ctpop", [ir.IntType(64)])
        return builder.call(ctpop, [args[0]])

    return types.uint64(types.uint64), codegen


@_compiled
def scan_topk(queries, db, kk, query_batch, chunk, out_idx, out_dist):  # pragma: no cover
    """Fills ``out_idx`` / ``out_dist`` (Q, kk) with each query's kk nearest codes.

    ``queries`` (Q, W) and ``db`` (N, W) are C-contiguous uint64; ``kk <= N``; rows come
    out sorted by (distance, index). Runs without the GIL.
    """
    n_queries, n_words = queries.shape
    n = db.shape[0]
    chunk = min(chunk, MAX_CHUNK)
    block = min(chunk, BLOCK)
    sentinel = 64 * n_words + 1
    flat = db.reshape(n * n_words)
    columns = np.empty((n_words, chunk), np.uint64)
    dist = np.empty(block, np.uint16)
    heap_d = np.empty((query_batch, kk), np.int32)
    heap_i = np.empty((query_batch, kk), np.int64)
    thr = np.empty(query_batch, np.int32)
    for q0 in range(0, n_queries, query_batch):
        qb = min(query_batch, n_queries - q0)
        heap_d[:qb] = sentinel
        heap_i[:qb] = n
        thr[:qb] = sentinel
        # W > 1 words: a batch large enough to share the copy reads each chunk as one
        # contiguous column per word; a small one reads the rows in place.
        by_columns = n_words > 1 and qb >= TRANSPOSE_MIN_QUERIES
        for c0 in range(0, n, chunk):
            width = min(chunk, n - c0)
            if by_columns:
                _transpose(db, c0, width, columns)
            for r in range(qb):
                query = queries[q0 + r]
                t = thr[r]
                if n_words == 1:
                    # The common case (32 and 64 bits) written out here: offsets from the
                    # chunk start and a scalar query made it 1.6x faster than the general
                    # loop, and 10% faster than the same code in a function of its own.
                    q = query[0]
                    for s0 in range(0, width, block):
                        size = min(block, width - s0)
                        codes = flat[c0 + s0 : c0 + s0 + size]
                        if _min_distance_one(q, codes) < t:
                            # Rare once the threshold settles: the block's distances are
                            # recomputed one by one rather than stored.
                            for j in range(size):
                                d = np.int32(popcount64(q ^ codes[j]))
                                if d < t:
                                    _replace_top(heap_d[r], heap_i[r], d, c0 + s0 + j)
                                    t = heap_d[r, 0]
                    thr[r] = t
                    continue
                for s0 in range(0, width, block):
                    size = min(block, width - s0)
                    first = c0 + s0
                    if by_columns:
                        t = _scan_columns(
                            query, columns, s0, size, dist, t, heap_d[r], heap_i[r], first
                        )
                    else:
                        rows = flat[first * n_words : (first + size) * n_words]
                        t = _scan_rows(query, rows, t, heap_d[r], heap_i[r], first)
                thr[r] = t
        _sorted_out(heap_d[:qb], heap_i[:qb], n, out_idx[q0 : q0 + qb], out_dist[q0 : q0 + qb])


@_compiled
def _scan_rows(query, rows, t, heap_d, heap_i, first):  # pragma: no cover
    """One query against a block of W > 1-word codes read in place (``rows``: the
    block's words, flat); returns the new threshold. The block's distances are
    recomputed one by one in the rare block that holds a candidate."""
    if _min_distance(query, rows) < t:
        for j in range(rows.shape[0] // query.shape[0]):
            d = _distance(query, rows, j)
            if d < t:
                _replace_top(heap_d, heap_i, d, first + j)
                t = heap_d[0]
    return t


@_compiled
def _scan_columns(query, columns, s0, size, dist, t, heap_d, heap_i, first):  # pragma: no cover
    """As :func:`_scan_rows` for codes copied into word columns: one contiguous pass per
    word into ``dist``, then its minimum."""
    q = query[0]
    column = columns[0, s0 : s0 + size]
    for j in range(size):
        dist[j] = np.uint16(popcount64(q ^ column[j]))
    for w in range(1, query.shape[0]):
        q = query[w]
        column = columns[w, s0 : s0 + size]
        for j in range(size):
            dist[j] += np.uint16(popcount64(q ^ column[j]))
    low = np.uint16(0xFFFF)
    for j in range(size):
        low = min(low, dist[j])
    if low < t:
        for j in range(size):
            if dist[j] < t:
                _replace_top(heap_d, heap_i, np.int32(dist[j]), first + j)
                t = heap_d[0]
    return t


@_compiled
def _transpose(db, c0, width, columns):  # pragma: no cover
    """Copies codes [c0, c0 + width) into one contiguous row of ``columns`` per word."""
    for j in range(width):
        for w in range(db.shape[1]):
            columns[w, j] = db[c0 + j, w]


@_compiled
def _sorted_out(heap_d, heap_i, n, out_idx, out_dist):  # pragma: no cover
    """Each heap row sorted by (distance, index) into the outputs."""
    span = np.int64(n + 1)
    keys = np.empty(heap_d.shape[1], np.int64)
    for r in range(heap_d.shape[0]):
        for m in range(keys.shape[0]):
            keys[m] = heap_d[r, m] * span + heap_i[r, m]
        keys.sort()
        for m in range(keys.shape[0]):
            out_idx[r, m] = keys[m] % span
            out_dist[r, m] = keys[m] // span


@_compiled
def _min_distance(query, rows):  # pragma: no cover
    """Minimum distance of a block of codes (``rows``: their words, flat) to a query.

    The 1, 2 and 4-word cases (the contract's 32/64, 128 and 256 bits) are written out
    so that LLVM vectorises them; indices run from 0 so numba adds no negative-index
    wrap-around, which would turn the loads into gathers (measured 5x slower).
    """
    n_words = query.shape[0]
    low = np.uint64(0xFFFF)
    if n_words == 1:
        return _min_distance_one(query[0], rows)
    if n_words == 2:
        q0, q1 = query[0], query[1]
        for j in range(rows.shape[0] // 2):
            low = min(low, popcount64(q0 ^ rows[2 * j]) + popcount64(q1 ^ rows[2 * j + 1]))
    elif n_words == 4:
        q0, q1, q2, q3 = query[0], query[1], query[2], query[3]
        for j in range(rows.shape[0] // 4):
            d = popcount64(q0 ^ rows[4 * j]) + popcount64(q1 ^ rows[4 * j + 1])
            d += popcount64(q2 ^ rows[4 * j + 2]) + popcount64(q3 ^ rows[4 * j + 3])
            low = min(low, d)
    else:
        for j in range(rows.shape[0] // n_words):
            low = min(low, np.uint64(_distance(query, rows, j)))
    return low


@_compiled
def _min_distance_one(q0, rows):  # pragma: no cover
    """:func:`_min_distance` for one-word codes and a one-word query."""
    low = np.uint64(0xFFFF)
    for j in range(rows.shape[0]):
        low = min(low, popcount64(q0 ^ rows[j]))
    return low


@_compiled
def _distance(query, rows, j):  # pragma: no cover
    """Distance of code ``j`` of the block to the query."""
    n_words = query.shape[0]
    d = np.uint64(0)
    for w in range(n_words):
        d += popcount64(query[w] ^ rows[j * n_words + w])
    return np.int32(d)


@_compiled
def _replace_top(heap_d, heap_i, d, i):  # pragma: no cover
    """Replaces the max-heap's top (the worst kept code by (distance, index)) by (d, i)
    and sifts it down; (d, i) is known to be better than the top."""
    size = heap_d.shape[0]
    pos = 0
    while True:
        child = 2 * pos + 1
        if child >= size:
            break
        right = child + 1
        if right < size and (
            heap_d[right] > heap_d[child]
            or (heap_d[right] == heap_d[child] and heap_i[right] > heap_i[child])
        ):
            child = right
        if heap_d[child] > d or (heap_d[child] == d and heap_i[child] > i):
            heap_d[pos] = heap_d[child]
            heap_i[pos] = heap_i[child]
            pos = child
        else:
            break
    heap_d[pos] = d
    heap_i[pos] = i
