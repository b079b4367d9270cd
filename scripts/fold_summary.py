"""Mean over the cross-validation folds of the rows scripts/fold_tables.sh stored.

    python scripts/fold_summary.py results/folds1800/jsrt

Reads OUT/fold*/table2.json and table3.json (one seed each) and prints, per row, mAP@10
(c) on each fold, their mean and the mean over all held-out queries (each fold weighted
by its queries), as Markdown.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

CONVENTION, K = "k", "10"


def fold_rows(folder: Path) -> tuple[dict[str, float], int]:
    """Row name -> mAP@10 (c) of one fold's tables, and the fold's query count."""
    rows, queries = {}, 0
    for table in ("table2.json", "table3.json"):
        path = folder / table
        if not path.is_file():
            continue
        record = json.loads(path.read_text())
        queries = record["queries"]
        for row in record["rows"]:
            cell = row["map"][CONVENTION][K]
            if cell is not None:
                rows.setdefault(row["name"], cell["mean"])
    return rows, queries


def main(argv=None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print(__doc__, file=sys.stderr)
        return 2
    out = Path(args[0])
    folds = sorted(p for p in out.glob("fold*") if p.is_dir())
    per_fold = [fold_rows(f) for f in folds]
    names = sorted({n for rows, _ in per_fold for n in rows})
    header = " | ".join(f.name for f in folds)
    lines = [
        f"Rows on the {len(folds)} folds of {out} (mAP@10 (c), held-out fold against the others)",
        "",
        f"| row | {header} | mean over folds | query-weighted mean |",
        "|---|" + "---|" * len(folds) + "---|---|",
    ]
    for name in names:
        cells = [rows.get(name) for rows, _ in per_fold]
        done = [(v, q) for v, (_, q) in zip(cells, per_fold, strict=True) if v is not None]
        if not done:
            continue
        mean = sum(v for v, _ in done) / len(done)
        weighted = sum(v * q for v, q in done) / sum(q for _, q in done)
        shown = " | ".join("-" if v is None else f"{v:.4f}" for v in cells)
        partial = "" if len(done) == len(folds) else f" ({len(done)} folds)"
        lines.append(f"| {name} | {shown} | {mean:.4f}{partial} | {weighted:.4f} |")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
