"""Exact top-k over shards: threads over slices of one code array, and the exact merge.

:func:`sharded_topk` splits the database into contiguous shards and scans each with
:func:`deploy.exact.exact_topk` in its own thread. The compiled scan
(``deploy/exact_kernel.py``) runs without the GIL from start to end (``nogil=True``);
the numpy scan's work is ufuncs (XOR, ``bitwise_count``, comparisons) over blocks of
2^19 pairs, inside which numpy releases the GIL, and only its per-block Python
bookkeeping is serialised. Either way the shards can run on separate cores
(bench/bench_index_scale.py measures the speed-up).

:func:`merge_topk` merges per-shard (or per-index) top-k lists exactly: every list is
sorted by (distance, global position) and holds its shard's k best under that key, so
the k best of their union, by the same key, are the k best of the whole database with
the same tie order (lower position first) as one scan over all of it.

Only numpy and the standard library are imported here.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np

# deploy.cli defines it (it checks --threads without importing numpy); a light import.
from deploy.cli import usable_cpus
from deploy.exact import exact_topk

# Below this many codes per shard, a thread's start-up and the merge cost more than the
# scan they split (the 2-core dev machine: 64k codes scan in about 0.1 ms per query).
MIN_SHARD_ROWS = 1 << 16


def shard_bounds(n: int, threads: int, min_rows: int = MIN_SHARD_ROWS) -> list[tuple[int, int]]:
    """Contiguous (start, stop) slices covering [0, n): at most ``threads`` of them,
    each at least ``min_rows`` long (one slice when ``n`` is small)."""
    if n < 0 or threads < 1 or min_rows < 1:
        raise ValueError(
            f"need n >= 0, threads >= 1, min_rows >= 1; got {n}, {threads}, {min_rows}"
        )
    count = max(1, min(threads, n // min_rows))
    edges = np.linspace(0, n, count + 1).astype(np.int64).tolist()
    return list(zip(edges[:-1], edges[1:], strict=True))


def sharded_topk(
    query_words: np.ndarray,
    db_words: np.ndarray,
    k: int,
    *,
    threads: int | None = None,
    min_shard_rows: int = MIN_SHARD_ROWS,
) -> tuple[np.ndarray, np.ndarray]:
    """:func:`deploy.exact.exact_topk` with the database split over ``threads`` threads.

    Same arguments and result as ``exact_topk`` (int64 positions, int32 distances, ties
    by position), for any number of threads. ``db_words`` may be a memory map: each
    thread reads only its own slice. ``threads=None`` uses every usable CPU.
    """
    threads = usable_cpus() if threads is None else threads
    if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
        raise ValueError(f"threads must be an integer >= 1, got {threads!r}")
    bounds = shard_bounds(len(db_words), threads, min_shard_rows)
    if len(bounds) == 1:
        return exact_topk(query_words, db_words, k)
    with ThreadPoolExecutor(len(bounds)) as pool:
        parts = list(pool.map(lambda b: exact_topk(query_words, db_words[b[0] : b[1]], k), bounds))
    return merge_topk(
        [(idx + start, dist) for (idx, dist), (start, _) in zip(parts, bounds, strict=True)], k
    )


def merge_topk(parts: list[tuple[np.ndarray, np.ndarray]], k: int) -> tuple[np.ndarray, np.ndarray]:
    """The k best of several top-k lists by (distance, position), per query row.

    Args:
        parts: ``(positions, distances)`` pairs, each (Q, k_i), positions already
            global (offset by the shard's or index's start) and unique across parts.
        k: how many to keep (all of them if fewer).

    Returns:
        ``(positions int64, distances int32)`` of shape (Q, min(k, sum k_i)).

    Example:
        >>> a = (np.array([[0, 3]]), np.array([[1, 2]]))
        >>> b = (np.array([[5, 7]]), np.array([[0, 2]]))
        >>> [x.tolist() for x in merge_topk([a, b], 3)]
        [[[5, 0, 3]], [[0, 1, 2]]]
    """
    if not parts:
        raise ValueError("merge_topk needs at least one part")
    positions = np.concatenate([np.asarray(p, np.int64) for p, _ in parts], axis=1)
    distances = np.concatenate([np.asarray(d, np.int32) for _, d in parts], axis=1)
    # lexsort sorts by the last key first: distance, then position.
    order = np.lexsort((positions, distances), axis=1)[:, :k]
    return (
        np.take_along_axis(positions, order, axis=1),
        np.take_along_axis(distances, order, axis=1),
    )
