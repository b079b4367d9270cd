"""The validation score the baselines keep their best epoch by, as Y-Net does.

mAP@:data:`~keras_ynet.ranking_metrics.SELECTION_K` (convention
:data:`~keras_ynet.ranking_metrics.SELECTION_CONVENTION`) of the validation fold queried
against the rest of the train split: Hamming distance for codes, any precomputed ranking
(cosine for float descriptors) otherwise. The test split is never used here; the final
figures come from :mod:`keras_ynet.dataset_evaluation`, as Y-Net's do.
"""

from __future__ import annotations

from keras_ynet.ranking_metrics import (
    SELECTION_CONVENTION,
    SELECTION_K,
    map_at_k,
    map_at_k_from_ranking,
)


def validation_map_codes(query_bits, query_labels, db_bits, db_labels) -> float:
    """Validation mAP@10 (convention ``k``) of Hamming retrieval."""
    return map_at_k(query_bits, query_labels, db_bits, db_labels, SELECTION_K, SELECTION_CONVENTION)


def validation_map_ranking(ranking, query_labels, db_labels) -> float:
    """Validation mAP@10 (convention ``k``) of a precomputed ranking."""
    return map_at_k_from_ranking(
        ranking, query_labels, db_labels, SELECTION_K, SELECTION_CONVENTION
    )
