"""Reproduces the paper's Table II (baselines against Y-Net) and Table III (ablations).

Usage:
    python -m keras_ynet.experiments table2 --data ../shared/data/rimone_dl --out results/rimone
    python -m keras_ynet.experiments table3 --data ../shared/data/jsrt --out results/jsrt \\
        --seeds 3 --epochs 40 --image-size 256
    python -m keras_ynet.experiments table2 --data DIR --out OUT --methods crow dpsh ynet
    python -m keras_ynet.experiments table2 --data DIR --out OUT --cv-folds 5 --cv-epochs 20 40

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
from deploy.errors import error_line
from keras_ynet.baselines import BASELINES
from keras_ynet.experiments_runs import execute, plan_run
from keras_ynet.run_config import HASH_HEADS, RunConfig, add_augment_argument
from keras_ynet.training_data import resolve_epochs, steps_per_epoch

# Y-Net rows of Table II, as settings over the shared base (the same runs as the Table III
# rows of those settings): the paper's Y-Net, and the two fixes measured in
# docs/results.md (cross-entropy guidance instead of circle loss; the hash read from the
# embedding). ynet_embedding: the float R-MAC embedding of the ynet run, by cosine (float
# rows are compared with float rows; it trains nothing).
TABLE2_YNET_ROWS = {
    "ynet": {},
    "ynet_ce": {"variant": "no_circle"},
    "ynet_hash_from_embedding": {"hash_head": "embedding"},
}
TABLE2_METHODS = (*BASELINES, *TABLE2_YNET_ROWS, "ynet_embedding")
TABLE3_ROWS = {
    "ynet": {},
    "no_fpn": {"variant": "no_fpn"},
    "no_rmac": {"variant": "no_rmac"},
    "no_circle": {"variant": "no_circle"},
    "coupling_alpha": {"coupling": "alpha"},
    "coupling_uncertainty": {"coupling": "uncertainty"},
    "coupling_fixed": {"coupling": "fixed"},
    "bits32": {"bits": 32},
    "bits64": {"bits": 64},
    "bits128": {"bits": 128},
    "bits256": {"bits": 256},
    # Ours: the hash read from the R-MAC embedding instead of the core node grid.
    "hash_from_embedding": {"hash_head": "embedding"},
}
TITLES = {
    "table2": "Table II: baselines and Y-Net on one split",
    "table3": "Table III: Y-Net ablations on one split",
}
PLOTS = {"table2": "map_vs_k.png", "table3": "table3_map_vs_k.png"}


def cross_validate(spec, base: RunConfig, args, out: Path, shas: dict) -> dict:
    """K-fold CV of Y-Net's epochs and coupling on the train split; returns the winner."""
    from keras_ynet import experiments_cv as cv
    from keras_ynet.train import dataset_fingerprint

    epochs_list = args.cv_epochs or sorted({max(1, base.epochs // 2), base.epochs})
    candidates = [(e, c) for e in epochs_list for c in args.cv_couplings]
    root = out / "cv" / f"{shas[base.data][:8]}-k{args.cv_folds}-seed{base.seed}"
    folds = cv.fold_datasets(spec, args.cv_folds, base.seed, root)
    runs = {}
    for i, fold in enumerate(folds, 1):
        shas[str(fold)] = dataset_fingerprint(fold)
        for e, c in candidates:
            config = dataclasses.replace(base, data=str(fold), epochs=e, coupling=c)
            row = f"cv fold {i}: {e} epochs, {c}"
            runs[(e, c, i)] = plan_run(row, "ynet", config, out, shas[str(fold)])
    print(f"{args.cv_folds}-fold cross-validation of {len(candidates)} Y-Net settings", flush=True)
    results, failed = execute(list(runs.values()), shas, out, args.debug, not args.report_only)
    if failed:
        raise RuntimeError(f"{len(failed)} cross-validation runs failed")
    if any(result is None for result in results.values()):
        raise RuntimeError("cross-validation runs are not stored: run without --report-only")

    def fold_score(e, c, i):
        return results[runs[(e, c, i)].key]["report"]["map"][cv.CV_CONVENTION][str(cv.CV_K)]

    scores = {
        (e, c): [fold_score(e, c, i) for i in range(1, len(folds) + 1)] for e, c in candidates
    }
    (epochs, coupling), rows = cv.select_setting(scores)
    atomic_write_text(out / "cv.md", cv.cv_markdown(rows, args.cv_folds))
    atomic_write_text(out / "cv.json", json.dumps({"folds": args.cv_folds, "rows": rows}, indent=2))
    print(f"cross-validation chose {epochs} epochs, {coupling} coupling (see {out / 'cv.md'})")
    return {"epochs": epochs, "coupling": coupling}


def run_table(table: str, args) -> int:
    """Plans, trains (what is not stored), and writes one table."""
    from keras_ynet.dataset import load_dataset
    from keras_ynet.experiments_plot import plot_map_vs_k
    from keras_ynet.experiments_report import summarize_row, write_tables
    from keras_ynet.train import dataset_fingerprint

    out = Path(args.out).resolve()
    spec = load_dataset(args.data)
    base = base_config(args)
    # Fix the epochs up front so every method (and the CV candidates) share them.
    base = dataclasses.replace(base, epochs=resolve_epochs(base, steps_per_epoch(spec, base)))
    shas = {base.data: dataset_fingerprint(base.data)}
    chosen = cross_validate(spec, base, args, out, shas) if args.cv_folds else {}
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
    """The run settings every method of the table shares."""
    d = RunConfig()
    return RunConfig(
        data=str(Path(args.data).resolve()),
        epochs=args.epochs,
        batch_size=args.batch_size,
        image_size=args.image_size or d.image_size,
        bits=args.bits,
        hash_head=args.hash_head,
        learning_rate=args.learning_rate,
        weight_decay=args.weight_decay,
        val_fraction=args.val_fraction,
        augment=args.augment,
        stem_filters=args.stem_filters,
        stage_widths=tuple(args.stage_widths),
        stage_blocks=tuple(args.stage_blocks),
    )


def parse_args(argv=None):
    d = RunConfig()
    p = argparse.ArgumentParser(
        prog="python -m keras_ynet.experiments",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("table", choices=sorted(TITLES))
    p.add_argument("--data", required=True, help="dataset folder with labels.csv")
    p.add_argument("--out", required=True, help="experiment folder (tables, plot, runs/)")
    p.add_argument("--seeds", type=int, default=3, help="seeds 0..N-1 per method (default 3)")
    p.add_argument("--methods", nargs="+", help="rows to run (default: all of the table)")
    p.add_argument(
        "--epochs", type=int, help=f"default: enough for {d.train_steps} optimiser steps"
    )
    p.add_argument("--image-size", type=int, help=f"default {d.image_size}")
    p.add_argument("--batch-size", type=int, default=d.batch_size)
    p.add_argument("--bits", type=int, default=d.bits, choices=(32, 64, 128, 256))
    p.add_argument("--hash-head", default=d.hash_head, choices=HASH_HEADS)
    p.add_argument("--learning-rate", type=float, default=d.learning_rate)
    p.add_argument("--weight-decay", type=float, default=d.weight_decay)
    p.add_argument("--val-fraction", type=float, default=d.val_fraction)
    add_augment_argument(p)
    p.add_argument("--stem-filters", type=int, default=d.stem_filters)
    p.add_argument("--stage-widths", type=int, nargs="+", default=list(d.stage_widths))
    p.add_argument("--stage-blocks", type=int, nargs="+", default=list(d.stage_blocks))
    p.add_argument("--cv-folds", type=int, default=0, help="K-fold CV of Y-Net first (e.g. 5)")
    p.add_argument("--cv-epochs", type=int, nargs="+", help="CV candidates (default E/2 and E)")
    p.add_argument(
        "--cv-couplings", nargs="+", default=["uncertainty", "alpha", "fixed"],
        choices=("alpha", "uncertainty", "fixed"),
    )  # fmt: skip
    p.add_argument("--debug", action="store_true", help="stop at the first failure, traceback")
    p.add_argument(
        "--report-only",
        action="store_true",
        help="write the tables from the stored runs only (rows show their seed counts)",
    )
    args = p.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)
    allowed = TABLE2_METHODS if args.table == "table2" else tuple(TABLE3_ROWS)
    methods = [m for item in args.methods or [] for m in item.split(",") if m]
    unknown = sorted(set(methods) - set(allowed))
    if unknown:
        p.error(f"unknown {args.table} methods {unknown}; choose from {', '.join(allowed)}")
    args.methods = list(dict.fromkeys(methods)) or None
    if args.seeds < 1 or args.cv_folds == 1 or args.cv_folds < 0:
        p.error("--seeds must be >= 1 and --cv-folds 0 (off) or >= 2")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        return run_table(args.table, args)
    except (OSError, ValueError, RuntimeError) as e:
        if args.debug:
            raise
        print(f"error: {error_line(e)}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    raise SystemExit(main())
