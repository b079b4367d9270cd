"""Experiments: folds, run keys, tables by hand, and table2/table3 end to end with
resumption (a repeated command trains nothing)."""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import json

import pytest
from PIL import Image

from keras_ynet.dataset import Record, load_dataset
from keras_ynet.experiments import cli, runs
from keras_ynet.experiments.cv import fold_datasets, select_setting, stratified_folds
from keras_ynet.experiments.rows import TABLE2_METHODS, TABLE2_YNET_ROWS, TABLE3_ROWS
from keras_ynet.experiments.summary_tables import summarize_row, to_csv, to_markdown
from keras_ynet.phantoms import make_phantoms
from keras_ynet.plots import plot_map_vs_k
from keras_ynet.run_config import RunConfig

TINY_ARGS = [
    "--epochs", "1", "--image-size", "64", "--batch-size", "8", "--no-augment",
    "--stem-filters", "4", "--stage-widths", "4", "4", "4", "16",
    "--stage-blocks", "1", "1", "1", "1",
]  # fmt: skip


@pytest.fixture(scope="module")
def phantoms(tmp_path_factory):
    root = tmp_path_factory.mktemp("data") / "ph"
    make_phantoms(root, n_per_class=8, image_size=64, seed=0)
    return root


def records(labels):
    return [Record(f"r{i}", f"/x/{i}.png", None, lab, "train") for i, lab in enumerate(labels)]


# ----------------------------------------------------------------------------- folds
def test_stratified_folds_cover_every_record_once_and_keep_class_shares():
    recs = records(["a"] * 10 + ["b"] * 5)
    folds = stratified_folds(recs, 5, seed=0)
    ids = sorted(r.id for fold in folds for r in fold)
    assert ids == sorted(r.id for r in recs)
    assert [len(f) for f in folds] == [3, 3, 3, 3, 3]
    assert all(sum(r.label == "a" for r in f) == 2 for f in folds)  # 10 "a" over 5 folds
    assert stratified_folds(recs, 5, seed=0) == folds  # seeded
    assert stratified_folds(recs, 5, seed=1) != folds
    with pytest.raises(ValueError, match="at least 2"):
        stratified_folds(recs, 1)


def test_fold_datasets_hold_out_each_fold_and_never_the_test_split(phantoms, tmp_path):
    spec = load_dataset(phantoms)
    paths = fold_datasets(spec, 2, seed=0, root=tmp_path / "cv")
    test_ids = {r.id for r in spec.split("test")}
    held_out = []
    for path in paths:
        fold = load_dataset(path)
        assert fold.mask_class_names == spec.mask_class_names
        assert "vcdr_from_mask" in fold.records[0].extra  # extra columns kept
        ids = {r.id for r in fold.records}
        assert not ids & test_ids
        assert len(ids) == len(spec.split("train"))
        held_out += [r.id for r in fold.split("test")]
    assert sorted(held_out) == sorted(r.id for r in spec.split("train"))


def test_select_setting_takes_the_best_mean_then_the_earlier_candidate():
    best, rows = select_setting(
        {"paper": [0.1, 0.2], "wide": [0.5, 0.7], "guided": [0.6, 0.6]},
        {"wide": {"stem_filters": 32}},
    )
    assert best == "wide"  # mean 0.6 ties with guided: the earlier entry wins
    assert [r["candidate"] for r in rows] == ["wide", "guided", "paper"]
    assert [r["mean"] for r in rows] == pytest.approx([0.6, 0.6, 0.15])
    assert rows[1]["std"] == 0.0 and rows[0]["settings"] == {"stem_filters": 32}


def test_settings_key_ignores_paths_and_changes_with_settings():
    a = RunConfig(data="/a", out="/x", epochs=3)
    key = runs.settings_key("ynet", a, "sha")
    assert key == runs.settings_key("ynet", dataclasses.replace(a, data="/b"), "sha")
    assert key != runs.settings_key("ynet", dataclasses.replace(a, epochs=4), "sha")
    assert key != runs.settings_key("dpsh", a, "sha")
    assert key != runs.settings_key("ynet", a, "other data")
    assert key != runs.settings_key("ynet", dataclasses.replace(a, stem_stride=2), "sha")


def test_settings_added_later_keep_the_keys_of_stored_runs():
    """A setting at the value it had before it existed is left out of the key."""
    a = RunConfig(data="/a", out="/x", epochs=3, backbone="resnet", flip=False)
    settings = dataclasses.asdict(a)
    for name in (
        "out",
        "data",
        "distribute",
        "stem_stride",
        "label_smoothing",
        "backbone",
        "flip",
        "rmac_channels",
        "seg_guidance",
        "circle_gamma",
        "circle_margin",
        "balanced_batches",
    ):
        del settings[name]
    payload = {"version": runs.VERSION, "method": "ynet", "settings": settings, "data": "sha"}
    before = hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:12]
    assert runs.settings_key("ynet", a, "sha") == before


def test_auto_seg_guidance_keys_on_what_it_resolves_to(tmp_path):
    make_phantoms(tmp_path / "ph", n_per_class=12, image_size=64, seed=0)
    base = RunConfig(data=str(tmp_path / "ph"), out="/x", epochs=3)
    auto = dataclasses.replace(base, seg_guidance="auto")
    off = dataclasses.replace(base, seg_guidance="off")
    # The phantoms' masks carry their labels: auto is on, the run of plain "on" is reused.
    planned = runs.plan_run("row", "ynet", auto, tmp_path, "sha")
    assert planned.config.seg_guidance == "on"
    assert planned.key == runs.plan_run("row", "ynet", base, tmp_path, "sha").key
    assert planned.key != runs.plan_run("row", "ynet", off, tmp_path, "sha").key
    # A baseline trains no mask branch: the setting does not reach its key.
    for method in ("classifier", "dpsh"):
        assert runs.settings_key(method, off, "sha") == runs.settings_key(method, base, "sha")


# ----------------------------------------------------------------------------- tables
def fake_result(seed, map10, vcdr):
    per_k = {"5": 0.5, "10": map10, "20": 0.5, "50": 0.5}
    conv = {c: dict(per_k) for c in ("retrieved", "all", "k")}
    report = {
        "ks": [5, 10, 20, 50], "map": conv, "precision": per_k, "random_map": conv,
        "spdd_map": None, "vcdr_gap_at_10": vcdr,
    }  # fmt: skip
    return {
        "method": "crow", "seed": seed, "folder": f"crow-s{seed}",
        "descriptor": {"kind": "float", "dim": 256}, "report": report,
    }  # fmt: skip


def test_rows_are_mean_and_sample_std_over_seeds():
    row = summarize_row("crow", [fake_result(0, 0.6, 0.2), fake_result(1, 0.8, 0.4)])
    stats = row["map"]["k"]["10"]
    assert stats["mean"] == pytest.approx(0.7)
    assert stats["std"] == pytest.approx(0.1414214)  # sqrt(((0.1)^2 + (0.1)^2) / 1)
    assert row["vcdr_gap_at_10"]["mean"] == pytest.approx(0.3)
    assert row["spdd_map"] is None
    random_map = fake_result(0, 0.3, None)["report"]["random_map"]
    text = to_markdown("T", [row], random_map)
    assert "| crow | float | 256 | 0.5000 ± 0.0000 | 0.7000 ± 0.1414 |" in text
    assert "| random ranking | - | - | 0.5000 | 0.3000 |" in text
    assert text.count("## mAP convention") == 3 and "SPDD" not in text
    lines = list(csv.DictReader(to_csv([row], random_map).splitlines()))
    assert len(lines) == 6  # (crow, random) x 3 conventions
    assert lines[0]["map@10_mean"] == "0.700000" and lines[1]["method"] == "random"
    single = summarize_row("crow", [fake_result(0, 0.6, 0.2)])
    assert single["map"]["k"]["10"]["std"] is None
    assert "| 0.6000 |" in to_markdown("T", [single], random_map)


def test_plot_draws_a_png(tmp_path):
    row = summarize_row("crow", [fake_result(0, 0.6, 0.2)])
    path = plot_map_vs_k(
        [row], fake_result(0, 0.3, None)["report"]["random_map"], tmp_path / "p.png"
    )
    with Image.open(path) as image:
        assert image.format == "PNG" and image.width > 3 * 400


# ----------------------------------------------------------------------------- end to end
def run_cli(argv, capsys):
    code = cli.main(argv)
    return code, capsys.readouterr().out


def forbid_training(monkeypatch):
    def boom(*args, **kwargs):
        raise AssertionError("a stored run was trained again")

    monkeypatch.setattr(runs, "_train_and_evaluate", boom)


@pytest.mark.slow
def test_table2_end_to_end_then_resumed_without_training(phantoms, tmp_path, capsys, monkeypatch):
    out = tmp_path / "out"
    argv = ["table2", "--data", str(phantoms), "--out", str(out), "--seeds", "1"]
    argv += ["--methods", "crow", "dpsh", *TINY_ARGS]
    code, printed = run_cli(argv, capsys)
    assert code == 0
    assert "[1/2] crow (seed 0): training" in printed and "ETA" in printed
    for name in ("table2.md", "table2.csv", "table2.json", "map_vs_k.png"):
        assert (out / name).is_file(), name
    doc = json.loads((out / "table2.json").read_text())
    assert [r["name"] for r in doc["rows"]] == ["crow", "dpsh"]
    assert [r["kind"] for r in doc["rows"]] == ["float", "hash"]
    assert doc["rows"][0]["vcdr_gap_at_10"] is not None  # phantom fundus: disc and cup
    assert set(doc["random_map"]) == {"retrieved", "all", "k"}
    md = (out / "table2.md").read_text()
    assert "random ranking" in md and "vCDR gap@10" in md
    stored = sorted(out.glob("runs/*/result.json"))
    assert len(stored) == 2
    mtimes = [p.stat().st_mtime_ns for p in stored]

    forbid_training(monkeypatch)
    code, printed = run_cli(argv, capsys)
    assert code == 0
    assert "2 runs: 2 stored, 0 to train" in printed and printed.count("cached in") == 2
    # --report-only: a row that was never trained is listed and left out, nothing trains.
    more = [a if a != "dpsh" else "dsh" for a in argv]
    code, printed = run_cli([*more, "--report-only"], capsys)
    assert code == 0 and "not stored, skipped (--report-only): dsh (seed 0)" in printed
    assert [r["name"] for r in json.loads((out / "table2.json").read_text())["rows"]] == ["crow"]
    code, printed = run_cli(argv, capsys)  # the stored table again
    assert [p.stat().st_mtime_ns for p in stored] == mtimes
    assert json.loads((out / "table2.json").read_text())["rows"] == doc["rows"]


@pytest.mark.slow
def test_ynet_embedding_row_reuses_the_trained_ynet_run(phantoms, tmp_path, capsys):
    out = tmp_path / "out"
    argv = ["table2", "--data", str(phantoms), "--out", str(out), "--seeds", "1", *TINY_ARGS]
    assert cli.main([*argv, "--methods", "ynet_embedding"]) == 1
    assert "needs the finished ynet run" in capsys.readouterr().err  # nothing to read yet
    code, printed = run_cli([*argv, "--methods", "ynet", "ynet_embedding"], capsys)
    assert code == 0
    rows = json.loads((out / "table2.json").read_text())["rows"]
    assert [(r["name"], r["kind"]) for r in rows] == [("ynet", "hash"), ("ynet_embedding", "float")]
    assert rows[1]["dim"] > rows[0]["dim"]
    assert len(list(out.glob("runs/ynet-s0-*/model.keras"))) == 1  # trained once
    assert 0.0 <= rows[1]["map"]["k"]["10"]["mean"] <= 1.0


@pytest.mark.slow
def test_table3_with_cross_validation_then_resumed(phantoms, tmp_path, capsys, monkeypatch):
    out = tmp_path / "out"
    argv = ["table3", "--data", str(phantoms), "--out", str(out), "--seeds", "1"]
    argv += ["--methods", "ynet", "no_seg", "bits64", "--cv-folds", "2"]
    argv += ["--cv-candidates", "ce_guided", *TINY_ARGS]
    code, printed = run_cli(argv, capsys)
    assert code == 0
    assert "cross-validation chose ce_guided" in printed
    cv = json.loads((out / "cv.json").read_text())
    assert cv["folds"] == 2 and len(cv["rows"][0]["folds"]) == 2
    # ynet and bits64 have identical settings: one run serves both rows.
    assert "ynet = bits64 (seed 0): training" in printed
    doc = json.loads((out / "table3.json").read_text())
    assert [r["name"] for r in doc["rows"]] == ["ynet", "no_seg", "bits64"]
    assert doc["rows"][0]["runs"] == doc["rows"][2]["runs"]
    assert doc["ynet_chosen_by_cv"]["hash_head"] == "guided"
    settings = json.loads(
        next(out.glob(f"runs/{doc['rows'][1]['runs'][0]}/result.json")).read_text()
    )
    # The table's row settings win over the chosen candidate's.
    assert settings["settings"]["coupling_weights"] == [1.0, 0.0]
    assert settings["settings"]["hash_head"] == "guided"
    assert (out / "table3_map_vs_k.png").is_file() and (out / "cv.md").is_file()

    forbid_training(monkeypatch)
    code, printed = run_cli(argv, capsys)
    assert code == 0 and "0 to train" in printed and "training ->" not in printed
    # The same dataset reached by another path (another checkout, ../ spelling): the
    # fold tables hold other absolute paths, yet every fold run is found again.
    argv[argv.index("--data") + 1] = f"{phantoms}/../{phantoms.name}"
    code, printed = run_cli(argv, capsys)
    assert code == 0 and "0 to train" in printed and "training ->" not in printed


def test_cli_refuses_unknown_methods(capsys):
    with pytest.raises(SystemExit):
        cli.parse_args(["table3", "--data", "d", "--out", "o", "--methods", "crow"])
    assert "unknown table3 methods ['crow']" in capsys.readouterr().err


def test_table2_ynet_rows_are_table3_runs():
    # The same settings train once: Table II's Y-Net rows read Table III's stored runs.
    table3 = list(TABLE3_ROWS.values())
    assert all(row in table3 for row in TABLE2_YNET_ROWS.values())
    assert set(TABLE2_YNET_ROWS) <= set(TABLE2_METHODS)


def test_the_plain_cnn_key_ignores_the_settings_it_does_not_read():
    a = RunConfig(data="/a", out="/x", epochs=3)
    key = runs.settings_key("plain_cnn", a, "sha")
    other_encoder = dataclasses.replace(a, backbone="plain", flip=True, stage_widths=(1, 2, 3, 4))
    assert runs.settings_key("plain_cnn", other_encoder, "sha") == key
    assert runs.settings_key("plain_cnn", dataclasses.replace(a, seed=1), "sha") != key
    assert runs.settings_key("ynet", other_encoder, "sha") != runs.settings_key("ynet", a, "sha")
