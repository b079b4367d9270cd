"""Retrieval figures of a dataset: its test split queried against its train split.

Queries = test split, database = train split, relevant = same label. The records give
what :func:`keras_ynet.retrieval_report.evaluate_ranking` needs besides the ranking: the
class labels, the fine diagnosis (SPDD) when labels.csv has a ``diagnosis`` column, and
the vertical cup-to-disc ratio of every ground-truth mask (DPSD) when the masks have disc
and cup. Codes are ranked by Hamming distance, float descriptors by cosine at their native
dimension; both break ties by database index. Y-Net (:func:`evaluate_model`), the
baselines and the cross-validation folds are all evaluated through here.

``python -m keras_ynet.evaluate`` is the command line over :func:`evaluate_model`.
"""

from __future__ import annotations

import numpy as np

from keras_ynet.dataset import DatasetSpec, Record, load_mask
from keras_ynet.ranking_metrics import cosine_ranking, hamming_ranking
from keras_ynet.retrieval_report import RetrievalReport, evaluate_ranking, vertical_cdr

KS = (5, 10, 20, 50)
FINE_LABEL_COLUMN = "diagnosis"


def vcdr_values(spec: DatasetSpec, records: list[Record]) -> np.ndarray | None:
    """Vertical cup/disc ratios from the ground-truth masks, or None without disc and cup."""
    names = spec.mask_class_names
    if "disc" not in names or "cup" not in names:
        return None
    disc, cup = names.index("disc"), names.index("cup")
    return np.array(
        [
            np.nan  # a row without a mask has no vCDR (the gap skips it)
            if r.mask is None
            else vertical_cdr(load_mask(r.mask, r.mask_map), disc_values=(disc, cup), cup_value=cup)
            for r in records
        ]
    )


def evaluate_records_ranking(
    spec: DatasetSpec,
    query_records: list[Record],
    db_records: list[Record],
    ranking: np.ndarray,
    ks=KS,
) -> RetrievalReport:
    """Every retrieval figure of a ranking of ``db_records`` per query (any ranking:
    Hamming for codes, cosine for float descriptors)."""
    fine_q = fine_d = None
    if query_records and FINE_LABEL_COLUMN in query_records[0].extra:
        fine_q = np.array(spec.extra_column(query_records, FINE_LABEL_COLUMN))
        fine_d = np.array(spec.extra_column(db_records, FINE_LABEL_COLUMN))
    return evaluate_ranking(
        ranking,
        spec.label_ids(query_records),
        spec.label_ids(db_records),
        ks=ks,
        query_fine_labels=fine_q,
        db_fine_labels=fine_d,
        query_vcdr=vcdr_values(spec, query_records),
        db_vcdr=vcdr_values(spec, db_records),
    )


def evaluate_bits(
    spec: DatasetSpec,
    query_records: list[Record],
    query_bits: np.ndarray,
    db_records: list[Record],
    db_bits: np.ndarray,
    ks=KS,
) -> RetrievalReport:
    """Evaluates {0, 1} codes of query and database records, ranked by Hamming distance."""
    ranking = hamming_ranking(query_bits, db_bits)
    return evaluate_records_ranking(spec, query_records, db_records, ranking, ks)


def evaluate_descriptors(
    spec: DatasetSpec,
    query_records: list[Record],
    query_desc: np.ndarray,
    db_records: list[Record],
    db_desc: np.ndarray,
    ks=KS,
) -> RetrievalReport:
    """Evaluates float descriptors of query and database records, ranked by cosine."""
    ranking = cosine_ranking(query_desc, db_desc)
    return evaluate_records_ranking(spec, query_records, db_records, ranking, ks)


def evaluate_model(model, spec: DatasetSpec, batch_size: int = 32, ks=KS) -> RetrievalReport:
    """Encodes the test (queries) and train (database) splits and evaluates retrieval."""
    from keras_ynet.pipeline import load_arrays
    from keras_ynet.ynet_codes import encode_bits

    size, channels = model.input_shape[1], model.input_shape[3]
    queries, database = spec.split("test"), spec.split("train")
    if not queries:
        raise ValueError(f"{spec.root / 'labels.csv'}: the test split is empty; nothing to query")
    q_images, _ = load_arrays(queries, size, channels)
    d_images, _ = load_arrays(database, size, channels)
    return evaluate_bits(
        spec,
        queries,
        encode_bits(model, q_images, batch_size),
        database,
        encode_bits(model, d_images, batch_size),
        ks,
    )
