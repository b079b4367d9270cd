"""Hamming-retrieval evaluation of a trained Y-Net.

Queries = test split, database = train split, relevant = same label, ranked by Hamming
distance with ties broken by database order. Reports mAP@k under the three conventions,
precision@k, the random-ranking reference, the vCDR gap (DPSD) when the masks have disc
and cup, and fine-diagnosis mAP (SPDD) when labels.csv has a ``diagnosis`` column.

Usage:
    python -m keras_ynet.evaluate --model RUN_DIR/model.keras --data DIR [--json OUT]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from deploy.atomic import atomic_write_text
from deploy.errors import run_command
from keras_ynet.dataset import DatasetSpec, Record, load_dataset, load_mask
from keras_ynet.metrics import hamming_ranking
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


def evaluate_model(model, spec: DatasetSpec, batch_size: int = 32, ks=KS) -> RetrievalReport:
    """Encodes the test (queries) and train (database) splits and evaluates retrieval."""
    from keras_ynet.encode import encode_bits
    from keras_ynet.pipeline import load_arrays

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


def main(argv: list[str] | None = None) -> int:
    """Evaluates; returns 0, or 1 after one ``error: ...`` line (``--debug``: the traceback)."""
    parser = argparse.ArgumentParser(prog="python -m keras_ynet.evaluate", description=__doc__)
    parser.add_argument("--model", required=True, help="model.keras of a training run")
    parser.add_argument("--data", required=True, help="dataset folder with labels.csv")
    parser.add_argument("--json", help="write the report as JSON to this file")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    args = parser.parse_args(argv)
    if args.batch_size < 1:
        parser.error(f"--batch-size must be >= 1, got {args.batch_size}")
    return run_command(lambda: _evaluate_command(args), args.debug)


def _evaluate_command(args) -> None:
    if args.json and not Path(args.json).absolute().parent.is_dir():
        raise FileNotFoundError(f"--json {args.json}: its folder does not exist")
    spec = load_dataset(args.data)  # before the model: a bad folder fails at once
    from keras_ynet.saving import load_ynet

    model = load_ynet(args.model)
    report = evaluate_model(model, spec, args.batch_size)
    if args.json:
        atomic_write_text(args.json, json.dumps(report.to_dict(), indent=2))
    print(
        f"# Retrieval on {spec.name}: {len(spec.split('test'))} queries (test) against "
        f"{len(spec.split('train'))} database images (train), {model.bits} bits\n"
    )
    print(report.to_markdown())
    if args.json:
        print(f"\nwrote {args.json}")


if __name__ == "__main__":
    raise SystemExit(main())
