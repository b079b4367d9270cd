"""The command that evaluates a trained Y-Net's Hamming retrieval on a dataset.

Queries = test split, database = train split, relevant = same label, ranked by Hamming
distance with ties broken by database order. Reports mAP@k under the three conventions,
precision@k, the random-ranking reference, the vCDR gap (DPSD) when the masks have disc
and cup, and fine-diagnosis mAP (SPDD) when labels.csv has a ``diagnosis`` column. The
work is :func:`keras_ynet.dataset_evaluation.evaluate_model`; this module is its command
line only.

Usage:
    python -m keras_ynet.evaluate --model RUN_DIR/model.keras --data DIR [--out OUT.json] [--json]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from deploy.atomic import atomic_write_text
from keras_ynet.cli_json import add_json_flag, run_with_result
from keras_ynet.dataset import load_dataset
from keras_ynet.dataset_evaluation import evaluate_model


def main(argv: list[str] | None = None) -> int:
    """Evaluates; returns 0, or 1 after one ``error: ...`` line (``--debug``: the traceback)."""
    parser = argparse.ArgumentParser(prog="python -m keras_ynet.evaluate", description=__doc__)
    parser.add_argument("--model", required=True, help="model.keras of a training run")
    parser.add_argument("--data", required=True, help="dataset folder with labels.csv")
    parser.add_argument("--out", help="also write the report as JSON to this file")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    add_json_flag(parser)
    args = parser.parse_args(argv)
    if args.batch_size < 1:
        parser.error(f"--batch-size must be >= 1, got {args.batch_size}")
    return run_with_result(lambda: _evaluate_command(args), args.json, args.debug)


def _evaluate_command(args) -> tuple[int, dict]:
    if args.out and not Path(args.out).absolute().parent.is_dir():
        raise FileNotFoundError(f"--out {args.out}: its folder does not exist")
    spec = load_dataset(args.data)  # before the model: a bad folder fails at once
    from keras_ynet.saving import load_ynet

    model = load_ynet(args.model)
    report = evaluate_model(model, spec, args.batch_size)
    if args.out:
        atomic_write_text(args.out, json.dumps(report.to_dict(), indent=2))
    print(
        f"# Retrieval on {spec.name}: {len(spec.split('test'))} queries (test) against "
        f"{len(spec.split('train'))} database images (train), {model.bits} bits\n"
    )
    print(report.to_markdown())
    if args.out:
        print(f"\nwrote {args.out}")
    return 0, report.to_dict()


if __name__ == "__main__":
    raise SystemExit(main())
