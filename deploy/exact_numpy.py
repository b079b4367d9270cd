"""The numpy exact top-k scan: what :func:`deploy.exact.exact_topk` runs without numba.

:func:`deploy.exact.exact_topk` checks the arguments and picks the scan (the compiled one
in ``deploy/exact_kernel.py`` when numba imports); this module holds only the numpy one.

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

Only numpy is imported here.
"""

from __future__ import annotations

import numpy as np

# When a block's queries average more than max(4 k, chunk / 4) candidates, each query
# with more than k keeps only the chunk's own k best: merging costs about 4x more per
# candidate than the radix argsort costs per code.
_HEAVY_PER_QUERY = 4
_HEAVY_FRACTION = 4
# The first chunk has no threshold yet, so each query sorts all of it: 1024 codes give a
# usable threshold at a fraction of the cost of sorting a whole chunk (2x at 10k codes).
_FIRST_CHUNK = 1024


class NumpyScan:
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
