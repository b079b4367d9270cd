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
import dataclasses
import json
import sys
from pathlib import Path

from deploy.atomic import atomic_write_text
from deploy.errors import run_command
from keras_ynet.baselines import BASELINES
from keras_ynet.experiments_runs import execute, plan_run
from keras_ynet.run_config import (
    PRESETS,
    RunConfig,
    add_run_arguments,
    check_run_settings,
    config_from_args,
)
from keras_ynet.training_data import resolve_epochs, steps_per_epoch

# Y-Net rows of Table II, as settings over the shared base (the same runs as the Table III
# rows of those settings): the default Y-Net (chosen by cross-validation, docs/results.md)
# and the paper's. ynet_embedding: the float R-MAC embedding of the ynet run, by cosine
# (float rows are compared with float rows; it trains nothing).
TABLE2_YNET_ROWS = {
    "ynet": {},
    "ynet_paper": dict(PRESETS["paper"]),
}
# classifier / classifier_float: the same encoder trained with softmax cross-entropy alone,
# by its sign codes and by its float tanh features (keras_ynet.baselines.classifier_codes).
TABLE2_METHODS = (*BASELINES, "classifier", "classifier_float", *TABLE2_YNET_ROWS, "ynet_embedding")
# Ablations of the default Y-Net (``ynet``): each changes one thing.
TABLE3_ROWS = {
    "ynet": {},
    "paper": dict(PRESETS["paper"]),
    # Without segmentation guidance: the FPN loss weighted 0 (the branch still runs).
    "no_seg": {"coupling": "fixed", "coupling_weights": (1.0, 0.0)},
    # Without classification guidance (the R-MAC branch trains nothing).
    "no_rmac": {"variant": "no_rmac"},
    # Circle loss instead of cross-entropy as the classification guidance.
    "circle": {"variant": "ynet"},
    "coupling_alpha": {"coupling": "alpha"},
    "coupling_fixed": {"coupling": "fixed"},
    "bits32": {"bits": 32},
    "bits64": {"bits": 64},
    "bits128": {"bits": 128},
    "bits256": {"bits": 256},
    # The hash read from the core-node grid (the paper's head, trained) instead.
    "grid_head": {"hash_head": "trained"},
}
# Candidates of the cross-validated choice of the default (``--cv-folds``): the presets
# of keras_ynet.run_config. Ties go to the earlier entry.
CV_CANDIDATES = PRESETS
TITLES = {
    "table2": "Table II: baselines and Y-Net on one split",
    "table3": "Table III: Y-Net ablations on one split",
}
PLOTS = {"table2": "map_vs_k.png", "table3": "table3_map_vs_k.png"}


def cross_validate(spec, base: RunConfig, args, out: Path, shas: dict) -> dict:
    """K-fold CV of the Y-Net candidates on the train split; returns the winner's settings.

    Each fold run gets the step budget of ``base`` (``--train-steps``) unless ``--epochs``
    fixes the epochs, so a fold (two thirds of the train split at K = 3) is not trained
    for fewer updates than the full split.
    """
    from keras_ynet import experiments_cv as cv
    from keras_ynet.train import dataset_fingerprint

    names = args.cv_candidates or list(CV_CANDIDATES)
    root = out / "cv" / f"{shas[base.data][:8]}-k{args.cv_folds}-seed{base.seed}"
    folds = cv.fold_datasets(spec, args.cv_folds, base.seed, root)
    runs = {}
    for name in names:  # candidate-major: a stopped search has whole candidates
        for i, fold in enumerate(folds, 1):
            shas.setdefault(str(fold), dataset_fingerprint(fold))
            config = dataclasses.replace(
                base, data=str(fold), epochs=args.epochs, **CV_CANDIDATES[name]
            )
            runs[(name, i)] = plan_run(f"cv {name} fold {i}", "ynet", config, out, shas[str(fold)])
    print(f"{args.cv_folds}-fold cross-validation of {len(names)} Y-Net candidates", flush=True)
    results, failed = execute(list(runs.values()), shas, out, args.debug, not args.report_only)
    done = {
        name: [results[runs[(name, i)].key] for i in range(1, len(folds) + 1)] for name in names
    }
    scores = {
        name: [r["report"]["map"][cv.SCORE_CONVENTION][str(cv.SCORE_K)] for r in rs]
        for name, rs in done.items()
        if all(r is not None for r in rs)
    }
    missing = sorted(set(names) - set(scores))
    if missing:
        print(f"not every fold is stored for: {', '.join(missing)}", file=sys.stderr)
    if not scores:
        raise RuntimeError("no cross-validation candidate has all its folds stored")
    best, rows = cv.select_setting(scores, {n: CV_CANDIDATES[n] for n in scores})
    steps = f"{args.epochs} epochs" if args.epochs else f"{base.train_steps} optimiser steps"
    preamble = (
        f"{spec.name}: {len(spec.split('train'))} train-split images in {args.cv_folds} "
        f"label-stratified folds (seed {base.seed}); every run {steps} at {base.image_size} px. "
        f"Command: `python -m keras_ynet.experiments {' '.join(args.argv)}`"
    )
    atomic_write_text(out / "cv.md", cv.cv_markdown(rows, args.cv_folds, preamble))
    record = {"folds": args.cv_folds, "dataset": spec.name, "chosen": best, "rows": rows}
    atomic_write_text(out / "cv.json", json.dumps(record, indent=2, default=list))
    if failed:
        print(f"error: {len(failed)} cross-validation run(s) failed", file=sys.stderr)
    print(f"cross-validation chose {best}: {CV_CANDIDATES[best]} (see {out / 'cv.md'})")
    return dict(CV_CANDIDATES[best])


def run_table(table: str, args) -> int:
    """Plans, trains (what is not stored), and writes one table."""
    from keras_ynet.dataset import load_dataset
    from keras_ynet.experiments_report import summarize_row, write_tables
    from keras_ynet.plots import plot_map_vs_k
    from keras_ynet.train import dataset_fingerprint

    out = Path(args.out).resolve()
    spec = load_dataset(args.data)
    base = base_config(args)
    shas = {base.data: dataset_fingerprint(base.data)}
    chosen = cross_validate(spec, base, args, out, shas) if args.cv_folds else {}
    if table == "cv":
        return 0
    # Fix the epochs up front so every method of the table shares them.
    base = dataclasses.replace(base, epochs=resolve_epochs(base, steps_per_epoch(spec, base)))
    names = args.methods or (list(TABLE2_METHODS) if table == "table2" else list(TABLE3_ROWS))
    runs = []
    for seed in range(args.seeds):  # seed-major: every method gets seed 0 first
        for name in names:
            ynet_rows = TABLE3_ROWS if table == "table3" else TABLE2_YNET_ROWS
            method = "ynet" if name in ynet_rows else name
            overrides = {**chosen, **ynet_rows[name]} if method == "ynet" else {}
            config = dataclasses.replace(base, seed=seed, **overrides)
            runs.append(plan_run(name, method, config, out, shas[base.data]))
    results, failed = execute(runs, shas, out, args.debug, train=not args.report_only)
    rows = []
    for name in names:
        done = [results[r.key] for r in runs if r.row == name and results[r.key] is not None]
        if done:
            rows.append(summarize_row(name, done))
    if not rows:
        print("error: no run finished", file=sys.stderr)
        return 1
    random_map = next(results[r.key] for r in runs if results[r.key])["report"]["random_map"]
    meta = {
        "table": table,
        "dataset": spec.name,
        "data": str(spec.root),
        "labels_sha256": shas[base.data],
        "queries": len(spec.split("test")),
        "database": len(spec.split("train")),
        "settings": {k: v for k, v in dataclasses.asdict(base).items() if k not in ("out", "seed")},
        "seeds": list(range(args.seeds)),
        "ynet_chosen_by_cv": chosen or None,
        "command": "python -m keras_ynet.experiments " + " ".join(args.argv),
    }
    meta["preamble"] = (
        f"{spec.name}: {meta['queries']} queries (test split) against {meta['database']} "
        f"database images (train split); {args.seeds} seed(s); {base.epochs} epochs at "
        f"{base.image_size} px. Command: `{meta['command']}`"
    )
    if chosen:
        meta["preamble"] += f"\n\nY-Net settings chosen by {args.cv_folds}-fold CV: {chosen}."
    paths = write_tables(out, table, TITLES[table], rows, random_map, meta)
    title = f"{TITLES[table]} ({spec.name}, mean over {args.seeds} seed(s))"
    paths.append(plot_map_vs_k(rows, random_map, out / PLOTS[table], title))
    print("\n" + (out / f"{table}.md").read_text())
    print("wrote " + ", ".join(str(p) for p in paths))
    if failed:
        print(f"error: {len(failed)} run(s) failed: {[r.row for r in failed]}", file=sys.stderr)
        return 1
    return 0


def base_config(args) -> RunConfig:
    """The run settings every method of the table shares (the flags given, else the
    defaults of :class:`RunConfig`)."""
    return config_from_args(args, data=str(Path(args.data).resolve()))


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
    return run_command(lambda: run_table(args.table, args), args.debug)


if __name__ == "__main__":
    raise SystemExit(main())
