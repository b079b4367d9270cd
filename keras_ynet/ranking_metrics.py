"""Retrieval metrics: rankings, mAP@k and precision@k under three conventions, chance level.

Queries are ranked against a database once (:func:`hamming_ranking` or
:func:`cosine_ranking`); every metric then reads the ranking, so many k and conventions
cost one sort. Ties are always broken by database index (stable sort), which makes
every figure reproducible.

AP@k = (1/R) * sum_{j<=k} P(j) * rel(j), with three published choices of R, named by
:data:`MAP_CONVENTIONS`:

* ``"retrieved"`` (a): relevant items within the top k (deep-hashing code); AP = 0 if
  none were retrieved.
* ``"all"`` (b): every relevant item in the database.
* ``"k"`` (c): k itself (the Y-Net authors' notebooks).

Pure numpy (no TensorFlow), so evaluation runs anywhere the index runs.

Just over 300 lines on purpose: every figure reads one checked ranking through the same
private helpers (relevance, the effective k, the checks of labels, k and ranking), and the
closed-form chance level needs its derivation beside it; split, the helpers would become
public API of no use on their own. All figures of
one ranking at once, with fine labels and vCDR, come from
:func:`keras_ynet.retrieval_report.evaluate_ranking`; a dataset's test split against its
train split, from :mod:`keras_ynet.dataset_evaluation`.
"""

from __future__ import annotations

import math
import operator

import numpy as np

from deploy.codes import hamming_distance_matrix

MAP_CONVENTIONS = ("retrieved", "all", "k")
CONVENTION_NAMES = {"retrieved": "(a) retrieved", "all": "(b) all", "k": "(c) k"}
# The one figure every model choice is made by: the best-epoch checkpoint of Y-Net
# (keras_ynet.callbacks) and of the baselines (keras_ynet.baselines.validation), and the
# score of a cross-validation fold (keras_ynet.experiments.cv): mAP@SELECTION_K under
# SELECTION_CONVENTION, on a held-out part of the train split.
SELECTION_K = 10
SELECTION_CONVENTION = "k"


# ----------------------------------------------------------------------------- rankings
def hamming_ranking(query_codes: np.ndarray, db_codes: np.ndarray) -> np.ndarray:
    """Ranks the database for each query by Hamming distance, ties by database index.

    Args:
        query_codes: {0, 1} array (Q, bits).
        db_codes: {0, 1} array (N, bits).

    Returns:
        int64 array (Q, N): database indices, nearest first.
    """
    query_codes, db_codes = _check_pair(query_codes, db_codes, "codes")
    distances = hamming_distance_matrix(query_codes, db_codes)
    # A stable sort keeps equal distances in database order: the documented tie rule.
    return np.argsort(distances, axis=1, kind="stable")


def cosine_ranking(query_vecs: np.ndarray, db_vecs: np.ndarray) -> np.ndarray:
    """Ranks the database for each query by cosine similarity, ties by database index.

    Args:
        query_vecs: float array (Q, D).
        db_vecs: float array (N, D).

    Returns:
        int64 array (Q, N): database indices, most similar first. A zero vector has
        similarity 0 to everything.
    """
    query_vecs, db_vecs = _check_pair(query_vecs, db_vecs, "vectors")
    q = unit_rows(query_vecs.astype(np.float64))
    d = unit_rows(db_vecs.astype(np.float64))
    return np.argsort(-(q @ d.T), axis=1, kind="stable")


# ----------------------------------------------------------------------------- mAP / P@k
def average_precision_at_k(
    relevance_row: np.ndarray, k: int, n_relevant_total: int, convention: str
) -> float:
    """AP@k of one ranked list.

    Args:
        relevance_row: bool array, relevance of the ranked list in rank order (at least
            min(k, len) long; only the first k entries are read).
        k: cut-off; a k beyond the list length means the whole list.
        n_relevant_total: relevant items in the whole database (used by ``"all"``).
        convention: one of :data:`MAP_CONVENTIONS`.

    Returns:
        AP@k in [0, 1].
    """
    rel = np.asarray(relevance_row, dtype=bool)
    if rel.ndim != 1:
        raise ValueError(f"relevance_row must be 1-D, got shape {rel.shape}")
    k = _effective_k(k, rel.shape[0])
    _check_convention(convention)
    if int(rel[:k].sum()) > n_relevant_total:
        raise ValueError(
            f"n_relevant_total={n_relevant_total} is less than the {int(rel[:k].sum())} "
            "relevant items already in the top k"
        )
    return float(_ap_rows(rel[None, :k], np.array([n_relevant_total]), convention)[0])


def map_at_k_from_ranking(
    ranking: np.ndarray,
    query_labels: np.ndarray,
    db_labels: np.ndarray,
    k: int,
    convention: str,
) -> float:
    """mAP@k of a precomputed ranking; relevant = same label.

    Args:
        ranking: int array (Q, L) of database indices, best first; L >= min(k, N).
        query_labels: array (Q,) of labels.
        db_labels: array (N,) of labels.
        k: cut-off; k > N means N.
        convention: one of :data:`MAP_CONVENTIONS`.

    Returns:
        Mean AP@k over the queries.
    """
    _check_convention(convention)
    rel, k, n_relevant = _relevance(ranking, query_labels, db_labels, k)
    return float(_ap_rows(rel, n_relevant, convention).mean())


def map_at_k(
    query_codes: np.ndarray,
    query_labels: np.ndarray,
    db_codes: np.ndarray,
    db_labels: np.ndarray,
    k: int,
    convention: str,
) -> float:
    """mAP@k of Hamming retrieval with {0, 1} codes; see :func:`map_at_k_from_ranking`."""
    _check_convention(convention)
    ranking = hamming_ranking(query_codes, db_codes)
    return map_at_k_from_ranking(ranking, query_labels, db_labels, k, convention)


def precision_at_k_from_ranking(
    ranking: np.ndarray, query_labels: np.ndarray, db_labels: np.ndarray, k: int
) -> float:
    """Mean over queries of (relevant items in the top k) / k, with k capped at N."""
    rel, k, _ = _relevance(ranking, query_labels, db_labels, k)
    return float(rel.sum(axis=1).mean() / k)


def precision_at_k(
    query_codes: np.ndarray,
    query_labels: np.ndarray,
    db_codes: np.ndarray,
    db_labels: np.ndarray,
    k: int,
) -> float:
    """Precision@k of Hamming retrieval; see :func:`precision_at_k_from_ranking`."""
    ranking = hamming_ranking(query_codes, db_codes)
    return precision_at_k_from_ranking(ranking, query_labels, db_labels, k)


def random_map_at_k(
    query_labels: np.ndarray,
    db_labels: np.ndarray,
    k: int,
    convention: str,
    n_permutations: int | None = None,
    seed: int = 0,
) -> float:
    """Expected mAP@k of a uniformly random ranking: the chance level.

    Exact by default. With M relevant of N, E[P(j) rel(j)] = (1/j) * (M/N + (j-1) *
    M(M-1) / (N(N-1))), which gives ``"k"`` and ``"all"`` directly. For ``"retrieved"``
    R is itself random: the relevant count X in the top k is hypergeometric and, given
    X = x, the x relevant slots are a uniform subset of the k, so E[AP | x] follows from
    the same formula with (x, k) in place of (M, N), weighted by P(X = x).

    Args:
        query_labels: array (Q,) of labels.
        db_labels: array (N,) of labels.
        k: cut-off; k > N means N.
        convention: one of :data:`MAP_CONVENTIONS`.
        n_permutations: if given, a Monte-Carlo estimate from this many random rankings
            per query instead (a cross-check of the closed form).
        seed: seed of the Monte-Carlo generator.

    Returns:
        Expected mAP@k over the queries.
    """
    _check_convention(convention)
    query_labels, db_labels = _check_labels(query_labels, db_labels)
    n = db_labels.shape[0]
    k = _effective_k(k, n)
    if n_permutations is not None:
        if n_permutations < 1:
            raise ValueError(f"n_permutations must be >= 1, got {n_permutations}")
        # Monte-Carlo cross-check: each query gets its own random ordering every round.
        rng = np.random.default_rng(seed)
        base = np.tile(np.arange(n), (len(query_labels), 1))
        runs = [
            map_at_k_from_ranking(
                rng.permuted(base, axis=1), query_labels, db_labels, k, convention
            )
            for _ in range(n_permutations)
        ]
        return float(np.mean(runs))
    n_relevant = _count_relevant(query_labels, db_labels)
    # Queries of one label share M, so each distinct M is solved once.
    ap_by_m = {m: _random_ap(m, n, k, convention) for m in set(n_relevant.tolist())}
    return float(np.mean([ap_by_m[m] for m in n_relevant.tolist()]))


def _random_ap(m: int, n: int, k: int, convention: str) -> float:
    if m == 0:
        return 0.0
    if convention == "retrieved":
        total = math.comb(n, k)
        return sum(
            # Python int division is correctly rounded, so huge binomials are safe.
            math.comb(m, x) * math.comb(n - m, k - x) / total * _sum_expected_pj_relj(x, k, k) / x
            for x in range(max(1, k - (n - m)), min(m, k) + 1)
        )
    return _sum_expected_pj_relj(m, n, k) / (m if convention == "all" else k)


def _sum_expected_pj_relj(m: int, n: int, k: int) -> float:
    """sum_{j<=k} E[P(j) rel(j)] for m relevant items placed at random among n slots."""
    pair = m * (m - 1) / (n * (n - 1)) if n > 1 else 0.0
    j = np.arange(1, k + 1, dtype=np.float64)
    return float(np.sum((m / n + (j - 1) * pair) / j))


# ----------------------------------------------------------------------------- checks
def _relevance(ranking, query_labels, db_labels, k):
    """Relevance (Q, k) of the ranked lists, the effective k, and relevant counts (Q,)."""
    query_labels, db_labels = _check_labels(query_labels, db_labels)
    ranking, k = check_ranking(ranking, query_labels.shape[0], db_labels.shape[0], k)
    rel = db_labels[ranking[:, :k]] == query_labels[:, None]
    return rel, k, _count_relevant(query_labels, db_labels)


def _ap_rows(rel: np.ndarray, n_relevant: np.ndarray, convention: str) -> np.ndarray:
    k = rel.shape[1]
    hits = np.cumsum(rel, axis=1)
    summed = np.sum(hits / np.arange(1, k + 1) * rel, axis=1)
    r = {"retrieved": hits[:, -1], "all": n_relevant, "k": np.full(len(rel), k)}[convention]
    return np.where(r > 0, summed / np.maximum(r, 1), 0.0)


def _count_relevant(query_labels: np.ndarray, db_labels: np.ndarray) -> np.ndarray:
    values, inverse = np.unique(np.concatenate([query_labels, db_labels]), return_inverse=True)
    counts = np.bincount(inverse[len(query_labels) :], minlength=len(values))
    return counts[inverse[: len(query_labels)]]


def _check_convention(convention: str) -> None:
    if convention not in MAP_CONVENTIONS:
        raise ValueError(f"convention must be one of {MAP_CONVENTIONS}, got {convention!r}")


def _effective_k(k: int, n: int) -> int:
    if isinstance(k, bool):
        raise ValueError(f"k must be an integer >= 1, got {k!r}")
    try:
        k = operator.index(k)
    except TypeError:
        raise ValueError(f"k must be an integer >= 1, got {k!r}") from None
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    if n < 1:
        raise ValueError("the database is empty")
    return min(k, n)


def _check_labels(query_labels, db_labels):
    query_labels, db_labels = np.asarray(query_labels), np.asarray(db_labels)
    if query_labels.ndim != 1 or db_labels.ndim != 1:
        raise ValueError(
            f"labels must be 1-D, got query {query_labels.shape} and database {db_labels.shape}"
        )
    if query_labels.size == 0:
        raise ValueError("there are no queries")
    return query_labels, db_labels


def check_ranking(ranking, n_queries: int, n_db: int, k: int):
    """(ranking as an array, effective k) after checking its shape, dtype and indices.

    Raises:
        ValueError: naming what is wrong with the ranking or k.
    """
    ranking = np.asarray(ranking)
    if ranking.ndim != 2 or not np.issubdtype(ranking.dtype, np.integer):
        raise ValueError(
            f"ranking must be a 2-D integer array, got {ranking.dtype} {ranking.shape}"
        )
    if ranking.shape[0] != n_queries:
        raise ValueError(f"ranking has {ranking.shape[0]} rows but there are {n_queries} queries")
    k = _effective_k(k, n_db)
    if ranking.shape[1] < k:
        raise ValueError(f"ranking has {ranking.shape[1]} columns, fewer than k={k}")
    if ranking.size and (ranking.min() < 0 or ranking.max() >= n_db):
        raise ValueError(f"ranking holds indices outside the database [0, {n_db})")
    return ranking, k


def _check_pair(query, db, what: str):
    query, db = np.asarray(query), np.asarray(db)
    if query.ndim != 2 or db.ndim != 2 or query.shape[1] != db.shape[1]:
        raise ValueError(
            f"query and database {what} must be 2-D with equal widths, "
            f"got {query.shape} and {db.shape}"
        )
    return query, db


def unit_rows(x: np.ndarray, axis: int = -1) -> np.ndarray:
    """``x / ||x||`` along ``axis`` (numpy descriptors); zero vectors stay zero."""
    x = np.asarray(x, np.float64)
    norms = np.linalg.norm(x, axis=axis, keepdims=True)
    return x / np.where(norms > 0, norms, 1.0)
