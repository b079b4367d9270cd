"""Evaluation of the baselines exactly as Y-Net is evaluated.

Queries = test split, database = train split, relevant = same label; every figure of
:func:`keras_ynet.retrieval_report.evaluate_ranking` (three mAP conventions, random reference,
SPDD fine-diagnosis mAP when labels.csv has ``diagnosis``, DPSD vCDR gap when the masks
have disc and cup). Codes are ranked by Hamming distance, float descriptors by cosine
at their native dimension; both break ties by database index.
"""

from __future__ import annotations

import keras
import numpy as np

from deploy.codes import signs_to_bits
from keras_ynet.dataset import DatasetSpec, Record
from keras_ynet.evaluate import KS, evaluate_records_ranking
from keras_ynet.metrics import cosine_ranking, map_at_k, map_at_k_from_ranking
from keras_ynet.retrieval_report import RetrievalReport

VAL_K = 10
VAL_CONVENTION = "k"


def evaluate_descriptors(
    spec: DatasetSpec,
    query_records: list[Record],
    query_desc: np.ndarray,
    db_records: list[Record],
    db_desc: np.ndarray,
    ks=KS,
) -> RetrievalReport:
    """Float descriptors ranked by cosine similarity, then evaluated."""
    ranking = cosine_ranking(query_desc, db_desc)
    return evaluate_records_ranking(spec, query_records, db_records, ranking, ks)


def encode_codes(network: keras.Model, images: np.ndarray, batch_size: int = 32) -> np.ndarray:
    """{0, 1} codes (N, bits): the sign of the hash network's tanh output."""
    u = network.predict(np.asarray(images, np.float32), batch_size=batch_size, verbose=0)
    return signs_to_bits(u)


def validation_map_codes(query_bits, query_labels, db_bits, db_labels) -> float:
    """Validation mAP@10 (convention ``k``) of Hamming retrieval."""
    return map_at_k(query_bits, query_labels, db_bits, db_labels, VAL_K, VAL_CONVENTION)


def validation_map_ranking(ranking, query_labels, db_labels) -> float:
    """Validation mAP@10 (convention ``k``) of a precomputed ranking."""
    return map_at_k_from_ranking(ranking, query_labels, db_labels, VAL_K, VAL_CONVENTION)
