"""Runs one table (Table II or III): plans every (row, seed) run, trains what is not
stored, and writes OUT/<table>.md, .csv, .json and the mAP-against-k plot.

Every method trains on the same split with the same settings (the flags given, else the
defaults of :class:`keras_ynet.run_config.RunConfig`) and is evaluated the same way
(queries = test split, database = train split). With ``--cv-folds`` the Y-Net rows first
take the settings the cross-validation chose (:mod:`keras_ynet.experiments.cv`).
"""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

from keras_ynet.experiments.cv import cross_validate
from keras_ynet.experiments.rows import (
    CV_CANDIDATES,
    PLOTS,
    TABLE2_METHODS,
    TABLE2_YNET_ROWS,
    TABLE3_ROWS,
    TITLES,
)
from keras_ynet.experiments.runs import execute, plan_run
from keras_ynet.run_config import RunConfig, config_from_args


def run_table(table: str, args) -> tuple[int, dict]:
    """Plans, trains (what is not stored), and writes one table.

    Returns:
        The exit status and the command's result: ``files`` written, the
        cross-validation's record (``cv``, None without ``--cv-folds``), one summary
        per table row (mean mAP over the seeds) and the rows whose runs ``failed``.
    """
    from keras_ynet.dataset import load_dataset
    from keras_ynet.experiments.summary_tables import summarize_row, write_tables
    from keras_ynet.plots import plot_map_vs_k
    from keras_ynet.train import dataset_fingerprint
    from keras_ynet.training_data import resolve_epochs, steps_per_epoch  # Keras: not for --help

    out = Path(args.out).resolve()
    spec = load_dataset(args.data)
    base = base_config(args)
    shas = {base.data: dataset_fingerprint(base.data)}
    cv = cross_validate(spec, base, args, out, shas) if args.cv_folds else None
    chosen = dict(CV_CANDIDATES[cv["chosen"]]) if cv else {}
    result = {"table": table, "out": str(out), "files": [], "cv": cv, "rows": [], "failed": []}
    if cv:
        result["files"] += [str(out / "cv.md"), str(out / "cv.json")]
    if table == "cv":
        return 0, result
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
    result["failed"] = sorted({r.row for r in failed})
    if not rows:
        print("error: no run finished", file=sys.stderr)
        return 1, result
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
    result["files"] += [str(p) for p in paths]
    result["rows"] = [row_summary(row) for row in rows]
    if failed:
        print(f"error: {len(failed)} run(s) failed: {[r.row for r in failed]}", file=sys.stderr)
        return 1, result
    return 0, result


def row_summary(row: dict) -> dict:
    """A table row as ``--json`` prints it: its mean mAP per convention and k (the
    table's JSON file has the standard deviations and the other measures too)."""
    means = {c: {k: v and v["mean"] for k, v in by_k.items()} for c, by_k in row["map"].items()}
    keep = ("name", "method", "kind", "dim", "seeds", "runs")
    return {**{key: row[key] for key in keep}, "map": means}


def base_config(args) -> RunConfig:
    """The run settings every method of the table shares (the flags given, else the
    defaults of :class:`RunConfig`)."""
    return config_from_args(args, data=str(Path(args.data).resolve()))
