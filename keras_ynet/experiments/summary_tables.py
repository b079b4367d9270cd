"""Tables of an experiment: per-method mean ± std over seeds, as markdown, CSV and JSON.

Input: the stored per-run results (``result.json`` of each (method, seed) run, holding
a :meth:`keras_ynet.retrieval_report.RetrievalReport.to_dict`). Output: one row per method with
mAP@k under the three conventions, SPDD fine-diagnosis mAP@10 and the DPSD vCDR gap@10
where the data have them, and the random-ranking reference (the same for every method:
it depends only on the split's labels).
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import numpy as np

from deploy.atomic import atomic_write_text
from keras_ynet.ranking_metrics import CONVENTION_NAMES, MAP_CONVENTIONS

SPDD_K = 10


def stats(values: list) -> dict | None:
    """mean, sample std (None for one value) and the values; None if none is known."""
    known = [float(v) for v in values if v is not None]
    if not known:
        return None
    std = float(np.std(known, ddof=1)) if len(known) > 1 else None
    return {"mean": float(np.mean(known)), "std": std, "values": known}


def summarize_row(name: str, results: list[dict]) -> dict:
    """Aggregates the runs (one per seed) of one table row.

    Args:
        name: the row name (method or ablation).
        results: stored run results, each with ``report``, ``descriptor``, ``seed``.
    """
    reports = [r["report"] for r in results]
    ks = reports[0]["ks"]

    def table(field):
        if any(rep[field] is None for rep in reports):
            return None
        return {
            c: {str(k): stats([rep[field][c][str(k)] for rep in reports]) for k in ks}
            for c in MAP_CONVENTIONS
        }

    return {
        "name": name,
        "method": results[0]["method"],
        "kind": results[0]["descriptor"]["kind"],
        "dim": results[0]["descriptor"]["dim"],
        "seeds": [r["seed"] for r in results],
        "ks": ks,
        "map": table("map"),
        "spdd_map": table("spdd_map"),
        "vcdr_gap_at_10": stats([rep["vcdr_gap_at_10"] for rep in reports]),
        "runs": [r["folder"] for r in results],
    }


def _cell(s: dict | None) -> str:
    if s is None:
        return "-"
    return f"{s['mean']:.4f}" if s["std"] is None else f"{s['mean']:.4f} ± {s['std']:.4f}"


def to_markdown(title: str, rows: list[dict], random_map: dict, preamble: str = "") -> str:
    """One table per mAP convention; a row per method and one for the random ranking."""
    ks = rows[0]["ks"]
    has_spdd = any(r["spdd_map"] for r in rows)
    has_vcdr = any(r["vcdr_gap_at_10"] for r in rows)
    header = ["method", "kind", "dim", *(f"mAP@{k}" for k in ks)]
    header += [f"SPDD mAP@{SPDD_K}"] * has_spdd + ["vCDR gap@10 ↓"] * has_vcdr + ["seeds"]
    lines = [f"# {title}", ""] + ([preamble, ""] if preamble else [])
    for c in MAP_CONVENTIONS:
        lines += [f"## mAP convention {CONVENTION_NAMES[c]}", ""]
        lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        for r in rows:
            cells = [r["name"], r["kind"], str(r["dim"])]
            cells += [_cell(r["map"][c][str(k)]) for k in ks]
            if has_spdd:
                cells.append(_cell(r["spdd_map"][c][str(SPDD_K)]) if r["spdd_map"] else "-")
            if has_vcdr:
                cells.append(_cell(r["vcdr_gap_at_10"]))
            lines.append("| " + " | ".join(cells + [str(len(r["seeds"]))]) + " |")
        chance = ["random ranking", "-", "-", *(f"{random_map[c][str(k)]:.4f}" for k in ks)]
        chance += ["-"] * (has_spdd + has_vcdr) + ["-"]
        lines += ["| " + " | ".join(chance) + " |", ""]
    return "\n".join(lines)


def to_csv(rows: list[dict], random_map: dict) -> str:
    """One line per (method, convention): means and stds of every figure."""
    ks = rows[0]["ks"]
    fields = ["method", "kind", "dim", "convention", "n_seeds"]
    for name in [*(f"map@{k}" for k in ks), f"spdd_map@{SPDD_K}", "vcdr_gap@10"]:
        fields += [f"{name}_mean", f"{name}_std"]
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=fields, lineterminator="\n")
    writer.writeheader()

    def put(line, name, s):
        line[f"{name}_mean"] = "" if s is None else f"{s['mean']:.6f}"
        line[f"{name}_std"] = "" if s is None or s["std"] is None else f"{s['std']:.6f}"

    for c in MAP_CONVENTIONS:
        for r in rows:
            line = {"method": r["name"], "kind": r["kind"], "dim": r["dim"], "convention": c}
            line["n_seeds"] = len(r["seeds"])
            for k in ks:
                put(line, f"map@{k}", r["map"][c][str(k)])
            put(
                line, f"spdd_map@{SPDD_K}", r["spdd_map"][c][str(SPDD_K)] if r["spdd_map"] else None
            )
            put(line, "vcdr_gap@10", r["vcdr_gap_at_10"])
            writer.writerow(line)
        line = {"method": "random", "kind": "-", "dim": "", "convention": c, "n_seeds": ""}
        for k in ks:
            put(line, f"map@{k}", {"mean": random_map[c][str(k)], "std": None})
        writer.writerow(line)
    return buf.getvalue()


def write_tables(
    out: Path, name: str, title: str, rows: list[dict], random_map: dict, meta: dict
) -> list[Path]:
    """Writes OUT/<name>.md, .csv and .json (atomically); returns the paths."""
    out.mkdir(parents=True, exist_ok=True)
    preamble = meta.get("preamble", "")
    paths = [out / f"{name}.md", out / f"{name}.csv", out / f"{name}.json"]
    atomic_write_text(paths[0], to_markdown(title, rows, random_map, preamble))
    atomic_write_text(paths[1], to_csv(rows, random_map))
    document = {**meta, "rows": rows, "random_map": random_map}
    atomic_write_text(paths[2], json.dumps(document, indent=2) + "\n")
    return paths
