"""``--json`` on the training-side commands (train, explain, phantoms, experiments): stdout
is exactly one JSON document, the command's result; the human lines go to stderr."""

from __future__ import annotations

import dataclasses
import importlib
import json
import subprocess
import sys
from pathlib import Path

import pytest
from test_deploy import brute_force
from test_experiments import TINY_ARGS

from keras_ynet.dataset import load_dataset
from keras_ynet.phantoms import make_phantoms
from keras_ynet.plots import CURVES_FILE
from keras_ynet.run_config import RunConfig

COMMANDS = [
    "keras_ynet.train",
    "keras_ynet.explain",
    "keras_ynet.phantoms",
    "keras_ynet.experiments.cli",
    "keras_ynet.evaluate",
    "keras_ynet.plots",
]


@pytest.mark.parametrize("module", COMMANDS)
def test_every_training_side_command_has_json(module, capsys):
    with pytest.raises(SystemExit) as info:
        importlib.import_module(module).main(["--help"])
    assert info.value.code == 0
    assert "--json" in capsys.readouterr().out


@pytest.mark.slow  # a subprocess per command
@pytest.mark.parametrize("module", [m.removesuffix(".cli") for m in COMMANDS])
def test_help_shows_json_without_importing_tensorflow(module):
    result = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", module, "--help"],
        cwd=Path(__file__).resolve().parents[1], capture_output=True, text=True,
    )  # fmt: skip
    assert result.returncode == 0 and "--json" in result.stdout
    imported = {line.rsplit("|", 1)[-1].strip() for line in result.stderr.splitlines()}
    assert not imported & {"tensorflow", "keras"}


def test_json_is_not_a_run_setting():
    assert "json" not in {f.name for f in dataclasses.fields(RunConfig)}


@pytest.fixture(scope="module")
def phantoms(tmp_path_factory):
    root = tmp_path_factory.mktemp("data") / "ph"
    make_phantoms(root, n_per_class=8, image_size=64, seed=0)
    return root


def run_json(capsys, main, argv) -> tuple[int, dict, str]:
    """Runs a command; returns its status, its stdout parsed as one JSON document and
    its stderr."""
    code = main([str(a) for a in argv])
    captured = capsys.readouterr()
    return code, json.loads(captured.out), captured.err


def test_phantoms_json(tmp_path, capsys):
    from keras_ynet.phantoms import main

    out = tmp_path / "ph"
    argv = ["--out", out, "--kind", "chest", "--n-per-class", 2, "--image-size", 32, "--json"]
    code, document, err = run_json(capsys, main, argv)
    assert code == 0
    assert document == {
        "folder": str(out),
        "kind": "chest",
        "images": 6,
        "splits": {"train": 3, "test": 3},
        "classes": ["benign", "malignant", "non-nodule"],
    }
    assert f"{out}: 6 images, {{'train': 3, 'test': 3}}" in err


@pytest.mark.slow
def test_train_json(phantoms, tmp_path, capsys):
    from keras_ynet.train import main

    run = tmp_path / "run"
    argv = ["--data", phantoms, "--out", run, *TINY_ARGS, "--json"]
    code, document, err = run_json(capsys, main, argv)
    assert code == 0
    names = ["model.keras", "run_config.json", "history.csv", CURVES_FILE, "metrics.json",
             "train_info.json", "tensorboard/"]  # fmt: skip
    assert document == {
        "out": str(run),
        "files": [str(run / n) for n in names],
        "train_info": json.loads((run / "train_info.json").read_text()),
        "metrics": json.loads((run / "metrics.json").read_text()),
    }
    assert document["train_info"]["epochs_run"] == 1
    # The run's progress, Keras' epoch line (verbose 2), the metrics table: all on stderr.
    assert f"training {RunConfig.variant} (" in err and "\n1/1 - " in err and "[1/1] elapsed" in err
    assert "# Test-split retrieval" in err and f"wrote {run}/" in err


@pytest.mark.slow
@pytest.mark.parametrize(
    "table, extra, files, rows",
    [
        ("table2", ["--methods", "crow"], ["table2.md", "table2.csv", "table2.json",
                                           "map_vs_k.png"], ["crow"]),
        ("cv", ["--cv-folds", 2, "--cv-candidates", "ce_guided"], ["cv.md", "cv.json"], []),
    ],
)  # fmt: skip
def test_experiments_json(table, extra, files, rows, phantoms, tmp_path, capsys):
    from keras_ynet.experiments.cli import main

    out = tmp_path / "out"
    argv = [table, "--data", phantoms, "--out", out, "--seeds", 1, *extra, *TINY_ARGS, "--json"]
    code, document, err = run_json(capsys, main, argv)
    assert code == 0
    assert set(document) == {"table", "out", "files", "cv", "rows", "failed"}
    assert document["table"] == table and document["out"] == str(out)
    assert document["files"] == [str(out / name) for name in files]
    assert [r["name"] for r in document["rows"]] == rows and document["failed"] == []
    if table == "cv":
        assert document["cv"] == json.loads((out / "cv.json").read_text())
        assert document["cv"]["chosen"] == "ce_guided" and len(document["cv"]["rows"]) == 1
        assert "cross-validation chose ce_guided" in err
    else:
        written = json.loads((out / "table2.json").read_text())["rows"][0]
        assert document["cv"] is None
        assert document["rows"][0]["map"]["k"]["10"] == written["map"]["k"]["10"]["mean"]
        assert document["rows"][0]["runs"] == written["runs"] and "crow (seed 0)" in err


@pytest.mark.slow
def test_explain_json(art, tmp_path, capsys):
    from keras_ynet.explain import main

    spec = load_dataset(art["data"])
    test_ids = [r.id for r in spec.split("test")]
    train = [r.id for r in spec.split("train")]
    query = art["paths"][art["ids"].index(test_ids[0])]
    out = tmp_path / "why.html"
    argv = ["--model", art["dir"].parent / "model.keras", "--image", query,
            "--data", art["data"], "-k", 3, "--out", out, "--json"]  # fmt: skip
    code, document, err = run_json(capsys, main, argv)
    assert code == 0
    label = {r.id: r.label for r in spec.records}
    image = {r.id: str(r.image) for r in spec.records}
    want = brute_force(art, test_ids[:1], train, 3)[0]
    assert document == {
        "files": [str(out), str(out.with_suffix(".png"))],
        "query": test_ids[0],
        "hits": [
            {"rank": rank, "id": i, "image": image[i], "label": label[i], "distance": d}
            for rank, (i, d) in enumerate(want, start=1)
        ],
    }
    assert "encoding 14 train images" in err and f"wrote {out} and" in err


@pytest.mark.slow
def test_evaluate_json(art, tmp_path, capsys):
    from keras_ynet.evaluate import main

    saved = tmp_path / "metrics.json"
    argv = ["--model", art["dir"].parent / "model.keras", "--data", art["data"], "--out", saved]
    code, document, err = run_json(capsys, main, [*argv, "--json"])
    assert code == 0
    assert document == json.loads(saved.read_text())
    assert set(document) == {"ks", "map", "precision", "random_map", "spdd_map", "vcdr_gap_at_10"}
    assert "2 queries (test) against 14 database images (train)" in err
    assert "| mAP (a) retrieved |" in err and f"wrote {saved}" in err
