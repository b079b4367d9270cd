"""history.csv of a resumed run, training curves and the mAP-against-k figure."""

from __future__ import annotations

import pytest
from PIL import Image

from keras_ynet.history import read_history, read_history_rows, tidy_history
from keras_ynet.plots import curve_series, main, map_series, plot_map_vs_k, plot_training_curves

# A run stopped after epoch 2 had logged it but before it was backed up: the resumed
# run trained epoch 2 again and appended it (and epoch 3).
RESUMED = """epoch,loss,seg_loss,val_loss,val_map@10
0,3.0,1.5,2.9,0.25
1,2.0,1.0,2.1,0.5
2,1.5,0.75,1.9,0.4
2,1.25,0.5,1.8,0.45
3,1.0,0.25,1.7,0.5
"""


def write(tmp_path, text=RESUMED):
    path = tmp_path / "history.csv"
    path.write_text(text)
    return path


def test_a_resumed_history_keeps_the_last_row_of_every_epoch(tmp_path):
    path = write(tmp_path)
    assert [r["loss"] for r in read_history_rows(path)] == ["3.0", "2.0", "1.25", "1.0"]
    assert tidy_history(path) == 4
    assert path.read_text() == RESUMED.replace("2,1.5,0.75,1.9,0.4\n", "")


def test_history_columns_read_as_floats_and_empty_cells_as_nan(tmp_path):
    history = read_history(write(tmp_path, "epoch,loss,val_map@10\n0,2.5,\n1,2.0,0.5\n"))
    assert history["epoch"] == [0.0, 1.0] and history["loss"] == [2.5, 2.0]
    assert history["val_map@10"][0] != history["val_map@10"][0]  # NaN
    assert history["val_map@10"][1] == 0.5


def test_a_history_row_without_an_epoch_is_named(tmp_path):
    path = write(tmp_path, "epoch,loss\n0,1.0\n,2.0\n")
    with pytest.raises(ValueError, match=r"history.csv: line 3 has no integer 'epoch' column"):
        read_history_rows(path)


def test_the_curves_draw_loss_terms_train_and_validation_then_the_score(tmp_path):
    series = curve_series(read_history(write(tmp_path)))
    assert list(series) == ["loss", "val_loss", "seg_loss", "val_map@10"]
    assert series["val_map@10"] == [0.25, 0.5, 0.45, 0.5]


def test_training_curves_are_a_png_beside_the_history(tmp_path):
    path = plot_training_curves(write(tmp_path), tmp_path / "curves.png", "a run")
    with Image.open(path) as image:
        assert image.size == (1100, 400)  # 11 x 4 inches at 100 dpi


def test_curves_of_a_run_without_an_epoch_are_refused(tmp_path):
    with pytest.raises(ValueError, match="history.csv: no epoch logged yet"):
        plot_training_curves(write(tmp_path, "epoch,loss\n"), tmp_path / "c.png")


def test_the_plots_command_redraws_a_run_folder(tmp_path, capsys):
    write(tmp_path)
    assert main([str(tmp_path), "--json"]) == 0
    assert capsys.readouterr().out.strip() == f'{{"curves": "{tmp_path / "training_curves.png"}"}}'
    assert (tmp_path / "training_curves.png").is_file()


def stats(mean, std):
    return {"mean": mean, "std": std, "values": []}


CONVENTIONS = ("retrieved", "all", "k")
ROWS = [
    {
        "name": "ynet", "method": "ynet", "kind": "hash", "dim": 64, "ks": [5, 10],
        "map": {c: {"5": stats(0.6, 0.05), "10": stats(0.5, 0.1)} for c in CONVENTIONS},
    },
    {
        "name": "pca_itq", "method": "pca_itq", "kind": "hash", "dim": 64, "ks": [5, 10],
        "map": {c: {"5": stats(0.4, None), "10": stats(0.3, None)} for c in CONVENTIONS},
    },
]  # fmt: skip
RANDOM = {c: {"5": 0.2, "10": 0.2} for c in CONVENTIONS}


def test_error_bars_are_the_std_over_seeds_and_zero_for_one_seed():
    assert map_series(ROWS[0], "k") == ([0.6, 0.5], [0.05, 0.1])
    assert map_series(ROWS[1], "all") == ([0.4, 0.3], [0.0, 0.0])


def test_map_vs_k_has_one_axis_per_convention(tmp_path):
    path = plot_map_vs_k(ROWS, RANDOM, tmp_path / "map_vs_k.png", "Table II")
    with Image.open(path) as image:
        assert image.size == (1750, 450)  # (5 per convention + 2.5) x 4.5 inches


def test_the_plots_command_redraws_an_experiment_table(tmp_path, capsys):
    import json

    table = tmp_path / "table2.json"
    table.write_text(
        json.dumps({"dataset": "x", "seeds": [0, 1], "rows": ROWS, "random_map": RANDOM})
    )
    assert main(["--table", str(table), "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == {"map_vs_k": str(tmp_path / "table2.png")}
    with Image.open(tmp_path / "table2.png") as image:
        assert image.size == (1750, 450)


def test_a_file_that_is_not_a_table_is_named(tmp_path, capsys):
    (tmp_path / "t.json").write_text("{}")
    assert main(["--table", str(tmp_path / "t.json")]) == 1
    assert "t.json: not an experiment table: 'rows'" in capsys.readouterr().err
