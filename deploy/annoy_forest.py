"""The approximate backend of :class:`deploy.index.HammingIndex`: an Annoy Hamming forest.

The forest covers the first ``n_forest`` items (those present when it was built); the
items added since (the delta) are scanned exactly (:func:`deploy.exact.exact_topk`), and
both candidate sets are merged and ranked by exact distance, then position.

This is APPROXIMATE: Annoy stops after gathering ``search_k`` candidates, and nothing it
reports bounds the distance of the items it never visited, so verifying its answer would
cost a full exact scan; an unvisited closer item is missed (recall@10 0.986 at 1M
clustered codes, 1.0 with 10x search_k; see bench/bench_index.py). What holds: every item
Annoy visited is re-ranked by its exact distance, so the result is the exact top-k of
(visited items + delta), every returned distance is exact, and ties are ordered by
position, never by Annoy. ``search_k >= n_trees * n_forest`` makes Annoy visit every
leaf: exact, but slower than the exact scan.

Only numpy and annoy are imported here.
"""

from __future__ import annotations

import annoy
import numpy as np

from deploy import codes
from deploy.exact import exact_topk
from deploy.index_store import ANNOY_SEED

ANNOY_MAX_INT = 2**31 - 1  # Annoy takes its counts as C ints
ANNOY_ADD_BATCH = 8192  # rows unpacked to Python lists at a time while feeding Annoy


def build_forest(packed: np.ndarray, bits: int, n_trees: int) -> annoy.AnnoyIndex:
    """An Annoy Hamming forest over packed codes; item i of the forest is position i."""
    forest = annoy.AnnoyIndex(bits, "hamming")
    forest.set_seed(ANNOY_SEED)
    for start in range(0, len(packed), ANNOY_ADD_BATCH):
        # Annoy reads a value > 0.5 as bit 1: feed it 0/1 bits, never tanh outputs.
        rows = codes.unpack_bits(packed[start : start + ANNOY_ADD_BATCH])
        for offset, row in enumerate(rows.tolist()):
            forest.add_item(start + offset, row)
    forest.build(n_trees, n_jobs=1)
    return forest


def forest_topk(
    forest: annoy.AnnoyIndex,
    n_forest: int,
    words: np.ndarray,
    q_packed: np.ndarray,
    k: int,
    search_k: int,
    n_trees: int,
) -> tuple[np.ndarray, np.ndarray]:
    """The top k of (what Annoy visits + the delta), by exact distance, then position.

    Args:
        forest: the forest over the first ``n_forest`` items.
        n_forest: items inside the forest; ``words[n_forest:]`` is the delta.
        words: every item's uint64 scan words (``codes.packed_to_words``).
        q_packed: the queries, packed (N, bits / 8).
        k: results per query, 1 <= k <= len(words).
        search_k: candidates Annoy gathers per query (the index resolves -1 first).
        n_trees: the trees the forest was built with.

    Returns:
        (positions int64, distances int32), each (N, k).
    """
    n = len(words)
    q_words = codes.packed_to_words(q_packed)
    delta = exact_topk(q_words, words[n_forest:], k) if n > n_forest else None
    # More candidates than the forest's leaves visit nothing more; Annoy takes a C int.
    search_k = min(search_k, n_trees * n_forest, ANNOY_MAX_INT)
    q_bits = codes.unpack_bits(q_packed).tolist()
    out_p = np.empty((len(q_packed), k), np.int64)
    out_d = np.empty((len(q_packed), k), np.int32)
    for j, q in enumerate(q_bits):
        cand = _candidates(forest, n_forest, q, search_k)
        if cand.size < min(k, n_forest):  # Annoy visited too few: take all
            cand = np.arange(n_forest)
        dist = np.bitwise_count(words[cand] ^ q_words[j]).sum(axis=1, dtype=np.int32)
        if delta is not None:
            cand = np.concatenate([cand, delta[0][j] + n_forest])
            dist = np.concatenate([dist, delta[1][j]])
        order = np.lexsort((cand, dist))[:k]
        out_p[j], out_d[j] = cand[order], dist[order]
    return out_p, out_d


def _candidates(forest, n_forest: int, query_bits: list, search_k: int) -> np.ndarray:
    """Positions of every item Annoy visits for the query (at most search_k).

    Annoy's traversal depends only on search_k, and it computes the distance of every
    item it visits before keeping the n nearest; asking for n = search_k returns all
    of them, so the exact re-rank sees each visited tie and the order among ties is
    ours (position), never Annoy's.
    """
    n = min(search_k, n_forest)
    return np.asarray(forest.get_nns_by_vector(query_bits, n, search_k), np.int64)
