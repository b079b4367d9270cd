"""Figures of training runs and experiments, drawn with matplotlib (Agg, no display).

* :func:`plot_training_curves`: a run's loss terms (train and validation) and its
  validation mAP@10 per epoch, from history.csv (``RUN/training_curves.png``);
* :func:`plot_map_vs_k`: an experiment table's mAP against k, one axis per mAP
  convention, a line per method with error bars of the sample std over seeds, and the
  random-ranking reference.

Figures are built on ``matplotlib.figure.Figure`` (not pyplot), so drawing touches no
global state and needs no display; files are written atomically.

Usage: ``python -m keras_ynet.plots RUN_DIR`` redraws a run's training curves;
``python -m keras_ynet.plots --table OUT/table2.json --out map_vs_k.png`` an experiment's
mAP against k.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from deploy.atomic import atomic_path
from keras_ynet.history import read_history
from keras_ynet.ranking_metrics import CONVENTION_NAMES, MAP_CONVENTIONS

CURVES_FILE = "training_curves.png"
# Loss columns the model logs (keras_ynet.model.YNet.tracker_names), drawn in this order.
LOSS_TERMS = ("loss", "cls_loss", "seg_loss", "hash_loss")
SCORE_KEY = "val_map@10"


def _save(figure, path: Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        figure.savefig(tmp, format="png", dpi=100)
    return path


def curve_series(history: dict[str, list[float]]) -> dict[str, list[float]]:
    """The columns a curves figure draws, keyed by their history.csv name: the loss
    terms present (train and ``val_``), then the validation score."""
    names = [n for t in LOSS_TERMS for n in (t, f"val_{t}") if n in history]
    if SCORE_KEY in history:
        names.append(SCORE_KEY)
    return {n: history[n] for n in names}


def plot_training_curves(history_csv: str | Path, path: str | Path, title: str = "") -> Path:
    """Loss (left) and validation mAP@10 (right) against the epoch; returns ``path``."""
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    history = read_history(history_csv)
    if not history.get("epoch"):
        raise ValueError(f"{history_csv}: no epoch logged yet")
    epochs = [int(e) + 1 for e in history["epoch"]]
    series = curve_series(history)
    figure = Figure(figsize=(11, 4), layout="constrained")
    loss_axis, score_axis = figure.subplots(1, 2)
    for i, term in enumerate(t for t in LOSS_TERMS if t in series):
        colour = f"C{i}"
        width = 2.2 if term == "loss" else 1.2
        loss_axis.plot(epochs, series[term], color=colour, lw=width, label=f"{term} (train)")
        if f"val_{term}" in series:
            loss_axis.plot(
                epochs, series[f"val_{term}"], color=colour, lw=width, ls="--",
                label=f"{term} (validation)",
            )  # fmt: skip
    loss_axis.set(xlabel="epoch", ylabel="loss", title="loss terms")
    loss_axis.legend(fontsize=8)
    if SCORE_KEY in series:
        score_axis.plot(epochs, series[SCORE_KEY], color="C3", marker="o", ms=3)
        best = max(range(len(epochs)), key=lambda i: (series[SCORE_KEY][i], i))
        score_axis.axvline(epochs[best], color="grey", ls=":", label=f"best: epoch {epochs[best]}")
        score_axis.legend(fontsize=8)
    score_axis.set(xlabel="epoch", ylabel=SCORE_KEY, title="validation retrieval (mAP@10)")
    for axis in (loss_axis, score_axis):
        axis.grid(alpha=0.3)
        axis.xaxis.set_major_locator(MaxNLocator(integer=True))
    if title:
        figure.suptitle(title)
    return _save(figure, path)


def map_series(row: dict, convention: str) -> tuple[list[float], list[float]]:
    """A table row's mAP means and error-bar half-widths (sample std over seeds; 0 where
    one seed gives no std) at the row's k, for one convention."""
    cells = [row["map"][convention][str(k)] for k in row["ks"]]
    return [c["mean"] for c in cells], [c["std"] or 0.0 for c in cells]


def plot_map_vs_k(rows: list[dict], random_map: dict, path: Path, title: str = "") -> Path:
    """mAP against k, one axis per convention; returns ``path``.

    Args:
        rows: table rows of :func:`keras_ynet.experiments.summary_tables.summarize_row`.
        random_map: ``random_map[convention][str(k)]``.
        path: the .png to write.
        title: the figure's title.
    """
    from matplotlib.figure import Figure

    ks = rows[0]["ks"]
    positions = list(range(len(ks)))  # k is categorical: 5, 10, 20, 50
    figure = Figure(figsize=(5 * len(MAP_CONVENTIONS) + 2.5, 4.5), layout="constrained")
    axes = figure.subplots(1, len(MAP_CONVENTIONS), sharey=True)
    for axis, convention in zip(axes, MAP_CONVENTIONS, strict=True):
        for index, row in enumerate(rows):
            means, stds = map_series(row, convention)
            marker = "^" if row["method"] == "ynet" else {"hash": "s"}.get(row["kind"], "o")
            axis.errorbar(
                positions, means, yerr=stds, color=f"C{index % 10}", marker=marker,
                lw=2.2 if row["method"] == "ynet" else 1.4, capsize=3,
                label=f"{row['name']} ({row['dim']})",
            )  # fmt: skip
        chance = [random_map[convention][str(k)] for k in ks]
        axis.plot(positions, chance, color="grey", ls="--", lw=1.5, label="random ranking")
        axis.set_xticks(positions, [f"@{k}" for k in ks])
        axis.set(xlabel="k", title=f"mAP, convention {CONVENTION_NAMES[convention]}")
        axis.grid(alpha=0.3)
    axes[0].set_ylabel("mAP (error bars: std over seeds)")
    handles, labels = axes[0].get_legend_handles_labels()
    figure.legend(handles, labels, loc="outside right center", fontsize=8)
    if title:
        figure.suptitle(title)
    return _save(figure, path)


def plot_table(table_json: str | Path, path: str | Path) -> Path:
    """Redraws an experiment's mAP-against-k figure from its table JSON
    (``OUT/table2.json``, :func:`keras_ynet.experiments.summary_tables.write_tables`)."""
    import json

    table_json = Path(table_json)
    try:
        document = json.loads(table_json.read_text())
        rows, random_map = document["rows"], document["random_map"]
        seeds = len(document.get("seeds") or rows[0]["seeds"])
    except (OSError, ValueError, KeyError, IndexError, TypeError) as e:
        raise ValueError(f"{table_json}: not an experiment table: {e}") from None
    title = f"{document.get('dataset', table_json.stem)}: mean and std over {seeds} seed(s)"
    return plot_map_vs_k(rows, random_map, Path(path), title)


def main(argv: list[str] | None = None) -> int:
    from deploy.errors import run_command

    p = argparse.ArgumentParser(
        prog="python -m keras_ynet.plots",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("run", nargs="?", help="run folder holding history.csv")
    p.add_argument("--table", help="an experiment's table JSON: draw its mAP against k")
    p.add_argument("--out", help=f"the PNG (default: RUN/{CURVES_FILE}, TABLE with .png)")
    p.add_argument("--json", action="store_true", help="print the written path as JSON")
    p.add_argument("--debug", action="store_true", help="show tracebacks")
    a = p.parse_args(argv)
    if (a.run is None) == (a.table is None):
        p.error("give a run folder or --table, not both")

    def work():
        import json

        if a.table:
            path = plot_table(a.table, a.out or Path(a.table).with_suffix(".png"))
            key = "map_vs_k"
        else:
            run = Path(a.run)
            path = plot_training_curves(run / "history.csv", a.out or run / CURVES_FILE, run.name)
            key = "curves"
        print(json.dumps({key: str(path)}) if a.json else f"wrote {path}")

    return run_command(work, a.debug)


if __name__ == "__main__":
    raise SystemExit(main())
