"""K-fold cross-validation on the train split, to choose Y-Net's settings.

The paper chooses its model by 5-fold cross-validation. Here the train split is cut
into K label-stratified folds; for each candidate (a named set of run settings,
:data:`keras_ynet.experiments.rows.CV_CANDIDATES`) Y-Net is trained K times, each time
on K-1 folds and queried with the held-out fold against them, and the setting with the
best mean mAP@10 wins (convention ``k``; the k of mAP@k, not the K of the folds:
:data:`keras_ynet.ranking_metrics.SELECTION_K`). The test split is never read: it serves
only the final numbers, trained on the whole train split with the chosen setting.

Each fold is written as a small dataset folder (labels.csv with absolute paths, the
held-out fold as its ``test`` split, dataset.json with the mask layout), so a fold run
is an ordinary :func:`keras_ynet.train.train` run and is cached like any other run.
"""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import json
import sys
from pathlib import Path

import numpy as np

from deploy.atomic import atomic_path, atomic_write_text
from keras_ynet.dataset import DatasetSpec, Record
from keras_ynet.dataset_csv import REQUIRED_COLUMNS
from keras_ynet.experiments.rows import CV_CANDIDATES
from keras_ynet.experiments.runs import execute, plan_run
from keras_ynet.ranking_metrics import SELECTION_CONVENTION, SELECTION_K
from keras_ynet.run_config import RunConfig


def stratified_folds(records: list[Record], n_folds: int, seed: int = 0) -> list[list[Record]]:
    """Splits records into ``n_folds`` label-stratified folds.

    Per label, the records are shuffled (seeded) and dealt round-robin, the deal
    continuing from one label to the next so fold sizes differ by at most one. Every
    record lands in exactly one fold; each fold keeps the input order.

    Raises:
        ValueError: if n_folds < 2 or there are fewer records than folds.
    """
    if n_folds < 2:
        raise ValueError(f"cross-validation needs at least 2 folds, got {n_folds}")
    if len(records) < n_folds:
        raise ValueError(f"{len(records)} records cannot fill {n_folds} folds")
    rng = np.random.default_rng(seed)
    fold_of: dict[str, int] = {}
    dealt = 0
    for label in sorted({r.label for r in records}):
        members = [r.id for r in records if r.label == label]
        for i in rng.permutation(len(members)):
            fold_of[members[i]] = dealt % n_folds
            dealt += 1
    return [[r for r in records if fold_of[r.id] == f] for f in range(n_folds)]


def write_fold_dataset(spec: DatasetSpec, train: list[Record], held_out: list[Record], folder):
    """Writes a dataset folder whose train split is ``train`` and test split ``held_out``.

    Image and mask paths are absolute, so nothing is copied; extra columns are kept
    (fine diagnosis, vCDR), and dataset.json carries the mask layout of ``spec``.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    extra = list(spec.records[0].extra) if spec.records else []
    with atomic_path(folder / "labels.csv") as tmp, open(tmp, "w", newline="") as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow([*REQUIRED_COLUMNS, *extra])
        for split, records in (("train", train), ("test", held_out)):
            for r in records:
                mask = str(r.mask) if r.mask is not None else ""
                writer.writerow(
                    [r.id, str(r.image), mask, r.label, split, *(r.extra[c] for c in extra)]
                )
    meta = {
        "name": f"{spec.name}-cv",
        "mask_classes": list(spec.mask_class_names),
        "mask_kind": spec.mask_kind,
        "allow_outside_paths": True,  # its rows name the original dataset's files
    }
    if spec.mask_map:  # the fold reads the same mask files: keep their value mapping
        meta["mask_values"] = {str(v): spec.mask_class_names[i] for v, i in spec.mask_map}
    (folder / "dataset.json").write_text(json.dumps(meta, indent=2) + "\n")
    return folder


def fold_datasets(spec: DatasetSpec, n_folds: int, seed: int, root) -> list[Path]:
    """Writes the K fold datasets of ``spec``'s train split under ``root``."""
    folds = stratified_folds(spec.split("train"), n_folds, seed)
    paths = []
    for i, held_out in enumerate(folds):
        train = [r for j, fold in enumerate(folds) if j != i for r in fold]
        paths.append(write_fold_dataset(spec, train, held_out, Path(root) / f"fold{i + 1}"))
    return paths


def fold_identity(source_sha: str, n_folds: int, seed: int, index: int) -> str:
    """Names fold ``index`` of a K-fold split by what determines it: the source table's
    sha256, K, the seed and the index (:func:`stratified_folds` is deterministic).

    Not the sha256 of the fold's own labels.csv: its rows hold absolute paths, which
    depend on how the dataset folder was reached (``../shared/data`` from one checkout
    or another), and a stored run must be found again from anywhere.
    """
    text = f"cv-fold:{source_sha}:k{n_folds}:seed{seed}:fold{index}"
    return hashlib.sha256(text.encode()).hexdigest()


def select_setting(scores: dict[str, list[float]], settings: dict[str, dict] | None = None):
    """The candidate with the best mean fold score.

    Args:
        scores: candidate name -> its fold scores; dict order breaks ties of the mean
            (list the simpler or the paper's candidate first).
        settings: candidate name -> the run settings it overrides (kept in the rows).

    Returns:
        (best candidate name, one summary row per candidate, best first)
    """
    if not scores:
        raise ValueError("no cross-validation candidates were scored")
    order = {c: i for i, c in enumerate(scores)}
    rows = [
        {
            "candidate": c,
            "settings": dict((settings or {}).get(c, {})),
            "mean": float(np.mean(v)),
            "std": float(np.std(v, ddof=1)) if len(v) > 1 else None,
            "folds": [float(x) for x in v],
        }
        for c, v in scores.items()
    ]
    rows.sort(key=lambda r: (-r["mean"], order[r["candidate"]]))
    return rows[0]["candidate"], rows


def cv_markdown(rows: list[dict], n_folds: int, preamble: str = "") -> str:
    """The candidates' fold scores as a markdown table, best first."""
    lines = [
        f"# {n_folds}-fold cross-validation on the train split (Y-Net)",
        "",
        f"Score: mAP@{SELECTION_K} (convention {SELECTION_CONVENTION}), each held-out fold queried "
        "against the other folds; the test split is never read. The first row is chosen.",
        "",
    ]
    if preamble:
        lines += [preamble, ""]
    lines += ["| candidate | settings | mean | std | folds |", "|---|---|---|---|---|"]
    for r in rows:
        std = "-" if r["std"] is None else f"{r['std']:.4f}"
        folds = ", ".join(f"{v:.4f}" for v in r["folds"])
        settings = ", ".join(f"{k}={v}" for k, v in r["settings"].items()) or "-"
        lines.append(f"| {r['candidate']} | {settings} | {r['mean']:.4f} | {std} | {folds} |")
    return "\n".join(lines) + "\n"


def cross_validate(spec, base: RunConfig, args, out: Path, shas: dict) -> dict:
    """K-fold CV of the Y-Net candidates on the train split; returns what OUT/cv.json
    records (``chosen``: the winner's name in :data:`CV_CANDIDATES`; ``rows``: every
    candidate's fold scores, best first).

    Each fold run gets the step budget of ``base`` (``--train-steps``) unless ``--epochs``
    fixes the epochs, so a fold (two thirds of the train split at K = 3) is not trained
    for fewer updates than the full split.
    """
    names = args.cv_candidates or list(CV_CANDIDATES)
    root = out / "cv" / f"{shas[base.data][:8]}-k{args.cv_folds}-seed{base.seed}"
    folds = fold_datasets(spec, args.cv_folds, base.seed, root)
    runs = {}
    for name in names:  # candidate-major: a stopped search has whole candidates
        for i, fold in enumerate(folds, 1):
            shas[str(fold)] = fold_identity(shas[base.data], args.cv_folds, base.seed, i)
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
        name: [r["report"]["map"][SELECTION_CONVENTION][str(SELECTION_K)] for r in rs]
        for name, rs in done.items()
        if all(r is not None for r in rs)
    }
    missing = sorted(set(names) - set(scores))
    if missing:
        print(f"not every fold is stored for: {', '.join(missing)}", file=sys.stderr)
    if not scores:
        raise RuntimeError("no cross-validation candidate has all its folds stored")
    best, rows = select_setting(scores, {n: CV_CANDIDATES[n] for n in scores})
    steps = f"{args.epochs} epochs" if args.epochs else f"{base.train_steps} optimiser steps"
    preamble = (
        f"{spec.name}: {len(spec.split('train'))} train-split images in {args.cv_folds} "
        f"label-stratified folds (seed {base.seed}); every run {steps} at {base.image_size} px "
        "unless its settings give another image_size. "
        f"Command: `python -m keras_ynet.experiments {' '.join(args.argv)}`"
    )
    atomic_write_text(out / "cv.md", cv_markdown(rows, args.cv_folds, preamble))
    record = {"folds": args.cv_folds, "dataset": spec.name, "chosen": best, "rows": rows}
    atomic_write_text(out / "cv.json", json.dumps(record, indent=2, default=list))
    if failed:
        print(f"error: {len(failed)} cross-validation run(s) failed", file=sys.stderr)
    print(f"cross-validation chose {best}: {CV_CANDIDATES[best]} (see {out / 'cv.md'})")
    return record
