"""The retrieval report: every figure of one ranking, plus vCDR for fundus datasets.

:func:`evaluate_ranking` reads one ranking (from :mod:`keras_ynet.ranking_metrics`) and returns a
:class:`RetrievalReport`: mAP@k under the three conventions of
:data:`keras_ynet.ranking_metrics.MAP_CONVENTIONS`, precision@k and the chance level for every k,
and, when given, mAP@k with fine labels (SPDD, e.g. the ``diagnosis`` column) and the
mean vertical cup-to-disc ratio gap over the top 10 (DPSD). The report prints as a
markdown table and saves as JSON.

Pure numpy (no TensorFlow), like :mod:`keras_ynet.ranking_metrics`.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

from keras_ynet.ranking_metrics import (
    CONVENTION_NAMES,
    MAP_CONVENTIONS,
    check_ranking,
    map_at_k_from_ranking,
    precision_at_k_from_ranking,
    random_map_at_k,
)


# ----------------------------------------------------------------------------- vCDR
def vertical_cdr(
    mask: np.ndarray, disc_values: tuple[int, ...] = (1, 2), cup_value: int = 2
) -> float:
    """Vertical cup-to-disc ratio: rows spanned by the cup / rows spanned by the disc.

    Args:
        mask: int label mask (H, W), e.g. 0 background, 1 disc rim, 2 cup.
        disc_values: values that make up the disc (rim and cup: the cup lies inside it).
        cup_value: value of the cup.

    Returns:
        The ratio; 0.0 when there is no cup, nan when there is no disc.
    """
    mask = np.asarray(mask)
    if mask.ndim != 2:
        raise ValueError(f"mask must be 2-D (H, W), got shape {mask.shape}")
    disc = _row_extent(np.isin(mask, disc_values))
    if disc == 0:
        return float("nan")
    return _row_extent(mask == cup_value) / disc


def _row_extent(region: np.ndarray) -> int:
    rows = np.flatnonzero(region.any(axis=1))
    return int(rows[-1] - rows[0] + 1) if rows.size else 0


def vcdr_gap_at_k(
    ranking: np.ndarray, query_vcdr: np.ndarray, db_vcdr: np.ndarray, k: int = 10
) -> float:
    """Mean |vCDR(query) - vCDR(hit)| over the top-k hits, then over queries (DPSD).

    Args:
        ranking: int array (Q, L) of database indices, best first.
        query_vcdr: float array (Q,), nan where unknown.
        db_vcdr: float array (N,), nan where unknown.
        k: cut-off; k > N means N.

    Returns:
        The mean gap, ignoring nan values; nan if no pair is usable.
    """
    query_vcdr = np.asarray(query_vcdr, dtype=np.float64)
    db_vcdr = np.asarray(db_vcdr, dtype=np.float64)
    ranking, k = check_ranking(ranking, query_vcdr.shape[0], db_vcdr.shape[0], k)
    gaps = np.abs(query_vcdr[:, None] - db_vcdr[ranking[:, :k]])
    valid = ~np.isnan(gaps)
    per_query_n = valid.sum(axis=1)
    # Average per query first so a query with many unknown hits weighs the same.
    per_query = (
        np.where(valid, gaps, 0.0).sum(axis=1)[per_query_n > 0] / per_query_n[per_query_n > 0]
    )
    return float(per_query.mean()) if per_query.size else float("nan")


# ----------------------------------------------------------------------------- report
@dataclasses.dataclass
class RetrievalReport:
    """Retrieval figures of one ranking.

    Attributes:
        ks: the cut-offs.
        map: ``map[convention][k]``, mAP@k with class labels.
        precision: ``precision[k]``.
        random_map: ``random_map[convention][k]``, the chance level of ``map``.
        spdd_map: ``spdd_map[convention][k]``, mAP@k with fine labels (SPDD), or None.
        vcdr_gap_at_10: mean vCDR gap over the top 10 (DPSD), or None.
    """

    ks: tuple[int, ...]
    map: dict[str, dict[int, float]]
    precision: dict[int, float]
    random_map: dict[str, dict[int, float]]
    spdd_map: dict[str, dict[int, float]] | None = None
    vcdr_gap_at_10: float | None = None

    def to_dict(self) -> dict:
        """A JSON-serialisable dict: string keys, nan written as None."""

        def table(t):
            if t is None:
                return None
            if all(isinstance(v, dict) for v in t.values()):
                return {c: table(row) for c, row in t.items()}
            return {str(k): _json_float(v) for k, v in t.items()}

        return {
            "ks": [int(k) for k in self.ks],
            "map": table(self.map),
            "precision": table(self.precision),
            "random_map": table(self.random_map),
            "spdd_map": table(self.spdd_map),
            "vcdr_gap_at_10": _json_float(self.vcdr_gap_at_10),
        }

    def to_markdown(self) -> str:
        """A markdown table: one row per metric and convention, one column per k."""
        lines = [
            "| metric | " + " | ".join(f"@{k}" for k in self.ks) + " |",
            "|---|" + "---|" * len(self.ks),
        ]

        def row(name, values):
            lines.append(f"| {name} | " + " | ".join(f"{values[k]:.4f}" for k in self.ks) + " |")

        for c in MAP_CONVENTIONS:
            row(f"mAP {CONVENTION_NAMES[c]}", self.map[c])
            row(f"random mAP {CONVENTION_NAMES[c]}", self.random_map[c])
        row("precision", self.precision)
        if self.spdd_map is not None:
            for c in MAP_CONVENTIONS:
                row(f"SPDD mAP {CONVENTION_NAMES[c]}", self.spdd_map[c])
        text = "\n".join(lines)
        if self.vcdr_gap_at_10 is not None:
            text += f"\n\nvCDR gap@10 (DPSD): {self.vcdr_gap_at_10:.4f}"
        return text + "\n"


def evaluate_ranking(
    ranking: np.ndarray,
    query_labels: np.ndarray,
    db_labels: np.ndarray,
    ks: tuple[int, ...] = (5, 10, 20, 50),
    query_fine_labels: np.ndarray | None = None,
    db_fine_labels: np.ndarray | None = None,
    query_vcdr: np.ndarray | None = None,
    db_vcdr: np.ndarray | None = None,
) -> RetrievalReport:
    """Every retrieval figure of one ranking, for every k and convention.

    Args:
        ranking: int array (Q, L) of database indices, best first.
        query_labels: class labels (Q,).
        db_labels: class labels (N,).
        ks: cut-offs.
        query_fine_labels: fine labels (e.g. ``diagnosis``) for SPDD; give both or none.
        db_fine_labels: fine labels of the database.
        query_vcdr: vCDR of the queries for DPSD; give both or none.
        db_vcdr: vCDR of the database.

    Returns:
        A :class:`RetrievalReport`.
    """
    ks = tuple(int(k) for k in ks)
    if not ks:
        raise ValueError("ks must not be empty")

    def per_convention(q_labels, d_labels):
        return {
            c: {k: map_at_k_from_ranking(ranking, q_labels, d_labels, k, c) for k in ks}
            for c in MAP_CONVENTIONS
        }

    report = RetrievalReport(
        ks=ks,
        map=per_convention(query_labels, db_labels),
        precision={k: precision_at_k_from_ranking(ranking, query_labels, db_labels, k) for k in ks},
        random_map={
            c: {k: random_map_at_k(query_labels, db_labels, k, c) for k in ks}
            for c in MAP_CONVENTIONS
        },
    )
    if _given_together(query_fine_labels, db_fine_labels, "fine labels"):
        report.spdd_map = per_convention(query_fine_labels, db_fine_labels)
    if _given_together(query_vcdr, db_vcdr, "vCDR"):
        report.vcdr_gap_at_10 = vcdr_gap_at_k(ranking, query_vcdr, db_vcdr, k=10)
    return report


# ----------------------------------------------------------------------------- checks
def _given_together(a, b, what: str) -> bool:
    if (a is None) != (b is None):
        raise ValueError(f"give both query and database {what}, or neither")
    return a is not None


def _json_float(v):
    return None if v is None or math.isnan(v) else float(v)
