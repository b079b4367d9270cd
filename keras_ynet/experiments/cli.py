"""Reproduces the paper's Table II (baselines against Y-Net) and Table III (ablations).

Usage:
    python -m keras_ynet.experiments table2 --data ../shared/data/rimone_dl --out results/rimone
    python -m keras_ynet.experiments table3 --data ../shared/data/jsrt --out results/jsrt \\
        --seeds 3 --epochs 40 --image-size 256
    python -m keras_ynet.experiments table2 --data DIR --out OUT --methods crow dpsh ynet
    python -m keras_ynet.experiments cv --data DIR --out OUT --cv-folds 3 --train-steps 600

Every method trains on the same split with the same settings and is evaluated the same
way (queries = test split, database = train split). Writes OUT/<table>.md, .csv, .json
(mean ± std over seeds, three mAP conventions, SPDD / vCDR where the data have them, the
random-ranking reference) and a mAP-against-k plot (table2: OUT/map_vs_k.png, table3:
OUT/table3_map_vs_k.png). Each (method, seed, settings) run is stored under
OUT/runs/<method>-s<seed>-<hash of its settings>/result.json and is not trained again when
the command is repeated; interrupted commands resume where they stopped.
"""

from __future__ import annotations

import argparse
import sys

from keras_ynet.cli_json import add_json_flag, run_with_result
from keras_ynet.experiments.rows import CV_CANDIDATES, TABLE2_METHODS, TABLE3_ROWS, TITLES
from keras_ynet.experiments.tables import run_table
from keras_ynet.run_config import add_run_arguments, check_run_settings, config_from_args


def parse_args(argv=None):
    p = argparse.ArgumentParser(
        prog="python -m keras_ynet.experiments",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "table", choices=sorted([*TITLES, "cv"]), help="cv: only the cross-validation (--cv-folds)"
    )
    p.add_argument("--data", required=True, help="dataset folder with labels.csv")
    p.add_argument("--out", required=True, help="experiment folder (tables, plot, runs/)")
    p.add_argument("--seeds", type=int, default=3, help="seeds 0..N-1 per method (default 3)")
    p.add_argument("--methods", nargs="+", help="rows to run (default: all of the table)")
    # Every run setting but the per-run ones (data, out and seed are set per run).
    add_run_arguments(p, exclude=("data", "out", "seed"))
    p.add_argument(
        "--cv-folds", type=int, default=0,
        help="choose Y-Net's settings by K-fold CV on the train split first (e.g. 3)",
    )  # fmt: skip
    p.add_argument(
        "--cv-candidates", nargs="+", choices=list(CV_CANDIDATES), metavar="NAME",
        help=f"CV candidates (default all: {', '.join(CV_CANDIDATES)})",
    )  # fmt: skip
    p.add_argument("--debug", action="store_true", help="stop at the first failure, traceback")
    add_json_flag(p)
    p.add_argument(
        "--report-only",
        action="store_true",
        help="write the tables from the stored runs only (rows show their seed counts)",
    )
    args = p.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)
    allowed = {"table2": TABLE2_METHODS, "table3": tuple(TABLE3_ROWS), "cv": ()}[args.table]
    methods = [m for item in args.methods or [] for m in item.split(",") if m]
    unknown = sorted(set(methods) - set(allowed))
    if unknown:
        p.error(f"unknown {args.table} methods {unknown}; choose from {', '.join(allowed)}")
    args.methods = list(dict.fromkeys(methods)) or None
    if args.seeds < 1 or args.cv_folds == 1 or args.cv_folds < 0:
        p.error("--seeds must be >= 1 and --cv-folds 0 (off) or >= 2")
    if args.table == "cv" and not args.cv_folds:
        p.error("cv needs --cv-folds K (K >= 2)")
    for problem in check_run_settings(config_from_args(args)):
        p.error(problem)
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    return run_with_result(lambda: run_table(args.table, args), args.json, args.debug)
