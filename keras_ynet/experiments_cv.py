"""K-fold cross-validation on the train split, to choose Y-Net's settings.

The paper chooses its model by 5-fold cross-validation. Here the train split is cut
into K label-stratified folds; for each candidate (a named set of run settings) Y-Net is trained K times,
each time on K-1 folds and queried with the held-out fold against them, and the setting
with the best mean mAP@10 (convention ``k``) wins. The test split is never read: it
serves only the final numbers, trained on the whole train split with the chosen
setting.

Each fold is written as a small dataset folder (labels.csv with absolute paths, the
held-out fold as its ``test`` split, dataset.json with the mask layout), so a fold run
is an ordinary :func:`keras_ynet.train.train` run and is cached like any other run.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np

from deploy.atomic import atomic_path
from keras_ynet.dataset import DatasetSpec, Record
from keras_ynet.dataset_csv import REQUIRED_COLUMNS

# What a fold is scored by: mAP at this k (the k of mAP@k, not the number of folds),
# under this convention (R = k).
SCORE_K = 10
SCORE_CONVENTION = "k"


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
        f"Score: mAP@{SCORE_K} (convention {SCORE_CONVENTION}), each held-out fold queried "
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
