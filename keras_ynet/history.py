"""A run folder's history.csv (one row per epoch, written by keras.callbacks.CSVLogger).

A resumed run appends to the file, and an epoch that was logged but not yet backed up
when the run stopped is trained and logged again: :func:`tidy_history` keeps the last
row of every epoch, in epoch order, so the file reads as one uninterrupted run.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path

from deploy.atomic import atomic_write_text


def read_history_rows(path: str | Path) -> list[dict[str, str]]:
    """The rows of history.csv, the last one of every epoch, sorted by epoch."""
    path = Path(path)
    try:
        with open(path, newline="") as f:
            rows = list(csv.DictReader(f))
    except OSError as e:
        raise ValueError(f"{path}: cannot read the training history: {e}") from None
    by_epoch = {}
    for line, row in enumerate(rows, start=2):
        try:
            by_epoch[int(row["epoch"])] = row
        except (KeyError, TypeError, ValueError):
            raise ValueError(f"{path}: line {line} has no integer 'epoch' column") from None
    return [by_epoch[e] for e in sorted(by_epoch)]


def read_history(path: str | Path) -> dict[str, list[float]]:
    """Every column of history.csv as floats (``epoch`` included), one value per epoch;
    an empty cell is NaN."""
    rows = read_history_rows(path)
    columns = list(rows[0]) if rows else []
    return {
        c: [float(r[c]) if r.get(c) not in (None, "") else float("nan") for r in rows]
        for c in columns
    }


def tidy_history(path: str | Path) -> int:
    """Rewrites history.csv (atomically) with one row per epoch; returns the epochs."""
    rows = read_history_rows(path)
    if not rows:
        return 0
    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=list(rows[0]), lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_text(path, text.getvalue())
    return len(rows)
