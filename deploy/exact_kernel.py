"""The exact top-k Hamming scan compiled with numba: XOR, popcount and threshold in one pass.

:func:`deploy.exact.exact_topk` checks its arguments and calls :func:`scan_topk` here when
numba imports (see that module for the switch); this module holds only the kernel. It is
imported lazily, on the first search, because importing numba takes about 0.4 s.

The loop, per batch of queries:

* the database is visited in chunks (``chunk`` codes; for W > 1 words a chunk is copied
  once per batch into one contiguous column per word, shared by all the batch's
  queries), so each code read from memory serves the whole batch from cache;
* per (query, chunk), one vectorised pass computes XOR + popcount into a small distance
  buffer and its minimum (LLVM turns it into AVX-512 ``vpopcntq`` / AVX2 nibble lookups,
  whatever the host has); only when the minimum is strictly under the query's threshold
  is the buffer searched for the codes under it;
* each query keeps its running top-k as a bounded max-heap keyed by (distance, index);
  the threshold is the heap's top distance. Codes are visited in index order and only
  distances strictly under the threshold enter, so a later code tied with the k-th never
  displaces it: ties keep the lower index, as in the numpy path. The heap starts full of
  sentinels (distance 64 W + 1, index N) that any real code beats.

Popcount: numba 0.68 does not support ``np.bitwise_count`` in nopython mode (checked:
a TypingError), so :func:`popcount64` is an intrinsic that emits LLVM's ``ctpop``.

Caching: ``cache=True`` stores the machine code next to this file (``__pycache__``) or,
when that folder is not writable, in numba's user-wide cache (``$NUMBA_CACHE_DIR`` when
set, else ``~/.cache/numba``); :mod:`deploy.exact` turns any failure to compile or cache
into a warning and a numpy scan, so a cache problem never breaks a search.
"""

from __future__ import annotations

import numpy as np
from llvmlite import ir
from numba import njit, types
from numba.extending import intrinsic


@intrinsic
def popcount64(typingctx, value):
    """Number of set bits of a uint64 (LLVM ``ctpop``; vectorises to ``vpopcntq``)."""
    if value != types.uint64:
        return None

    def codegen(context, builder, signature, args):
        ctpop = builder.module.declare_intrinsic("llvm.ctpop", [ir.IntType(64)])
        return builder.call(ctpop, [args[0]])

    return types.uint64(types.uint64), codegen


@njit(cache=True, nogil=True)
def scan_topk(queries, db, kk, query_batch, chunk, out_idx, out_dist):  # pragma: no cover
    """Fills ``out_idx`` / ``out_dist`` (Q, kk) with each query's kk nearest codes.

    ``queries`` (Q, W) and ``db`` (N, W) are C-contiguous uint64; ``kk <= N``; rows come
    out sorted by (distance, index). Runs without the GIL.
    """
    n_queries, n_words = queries.shape
    n = db.shape[0]
    sentinel = 64 * n_words + 1
    flat = db.reshape(n * n_words)
    columns = np.empty((n_words, chunk), np.uint64)
    dist = np.empty(chunk, np.uint16)
    heap_d = np.empty((query_batch, kk), np.int32)
    heap_i = np.empty((query_batch, kk), np.int64)
    thr = np.empty(query_batch, np.int32)
    keys = np.empty(kk, np.int64)
    span = np.int64(n + 1)
    for q0 in range(0, n_queries, query_batch):
        qb = min(query_batch, n_queries - q0)
        heap_d[:qb] = sentinel
        heap_i[:qb] = n
        thr[:qb] = sentinel
        for c0 in range(0, n, chunk):
            width = min(chunk, n - c0)
            if n_words > 1:
                _transpose(db, c0, width, columns)
            for r in range(qb):
                if n_words == 1:
                    low = _distances_one(queries[q0 + r, 0], flat[c0 : c0 + width], dist)
                else:
                    low = _distances(queries[q0 + r], columns, width, dist)
                t = thr[r]
                if low < t:
                    hd = heap_d[r]
                    hi = heap_i[r]
                    for j in range(width):
                        if dist[j] < t:
                            _replace_top(hd, hi, np.int32(dist[j]), c0 + j)
                            t = hd[0]
                    thr[r] = t
        for r in range(qb):
            for m in range(kk):
                keys[m] = heap_d[r, m] * span + heap_i[r, m]
            keys.sort()
            for m in range(kk):
                out_idx[q0 + r, m] = keys[m] % span
                out_dist[q0 + r, m] = keys[m] // span


@njit(cache=True, nogil=True)
def _distances_one(query, codes, dist):  # pragma: no cover
    """Distances of one-word codes to one query into ``dist``; returns their minimum.

    Indices run from 0 (not from a chunk offset) so numba needs no negative-index
    wrap-around and LLVM can vectorise the loads (with it, they become gathers, 5x slower).
    """
    low = np.uint16(0xFFFF)
    for j in range(codes.shape[0]):
        d = np.uint16(popcount64(query ^ codes[j]))
        dist[j] = d
        low = min(low, d)
    return low


@njit(cache=True, nogil=True)
def _distances(query, columns, width, dist):  # pragma: no cover
    """As :func:`_distances_one` for W > 1 words, one contiguous pass per word column."""
    first = columns[0]
    q = query[0]
    for j in range(width):
        dist[j] = np.uint16(popcount64(q ^ first[j]))
    for w in range(1, query.shape[0]):
        column = columns[w]
        q = query[w]
        for j in range(width):
            dist[j] += np.uint16(popcount64(q ^ column[j]))
    low = np.uint16(0xFFFF)
    for j in range(width):
        low = min(low, dist[j])
    return low


@njit(cache=True, nogil=True)
def _transpose(db, c0, width, columns):  # pragma: no cover
    """Copies codes [c0, c0 + width) into one contiguous row per word."""
    for j in range(width):
        for w in range(db.shape[1]):
            columns[w, j] = db[c0 + j, w]


@njit(cache=True, nogil=True)
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
