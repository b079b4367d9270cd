"""The model card of an export (``encoder.json`` ``model_card`` and the ONNX metadata),
the dataset licence it quotes, and ``python -m export --json``."""

from __future__ import annotations

import json
import shutil

import pytest

from deploy.contract import ContractError, load_contract, validate_contract
from export import model_card
from export.contract_writer import build_contract
from export.onnx_export import read_metadata
from keras_ynet.dataset import DatasetError, load_dataset
from keras_ynet.phantoms import make_phantoms

METRICS = {
    "ks": [10, 20],
    "map": {"label": {"10": 0.625, "20": 0.5}},
    "precision": {"label": {"10": 0.6, "20": 0.55}},
    "random_map": None,
}
RUN_DATASET = {
    "name": "rimone-dl", "licence": "CC BY 4.0", "root": "/data/rimone",
    "labels_sha256": "ab" * 32, "class_names": ["glaucoma", "normal"],
    "mask_class_names": [], "n_train": 300, "n_validation": 33, "n_test": 172,
}  # fmt: skip


def test_card_quotes_the_run_folder(tmp_path):
    (tmp_path / "run_config.json").write_text(json.dumps({"seed": 0, "dataset": RUN_DATASET}))
    (tmp_path / "metrics.json").write_text(json.dumps(METRICS))
    card = model_card.build_model_card(
        tmp_path / "model.keras", "other", None, "f" * 16, "2026-01-02T03:04:05+00:00"
    )
    assert card == {
        "intended_use": model_card.INTENDED_USE,
        "not_intended_for": model_card.NOT_INTENDED_FOR,
        "training_data": {
            "name": "rimone-dl", "licence": "CC BY 4.0", "labels_sha256": "ab" * 32,
            "n_train": 300, "n_validation": 33, "n_test": 172,
            "source": "run_config.json of the training run",
        },
        "retrieval": {
            "source": model_card.METRICS_SOURCE, "ks": [10, 20],
            "map": METRICS["map"], "precision": METRICS["precision"],
        },
        "export_date": "2026-01-02T03:04:05+00:00",
        "fingerprint": "f" * 16,
    }  # fmt: skip


def test_card_without_a_run_folder_says_what_is_not_recorded(tmp_path):
    card = model_card.build_model_card(tmp_path / "model.keras", "phantoms", None, "f", "d")
    assert card["training_data"] == {
        "name": "phantoms",
        "licence": None,
        "source": "the dataset given to the export (no run_config.json beside the model)",
        "licence_note": model_card.NO_LICENCE,
    }
    assert card["retrieval"] == {
        "source": None,
        "note": "no metrics.json beside the model: not measured",
    }
    meta = model_card.onnx_metadata(card)
    assert meta["training_data_licence"] == model_card.NO_LICENCE
    assert json.loads(meta["model_card"]) == card


def contract_with(card):
    return build_contract(64, 1, 64, "abc", ["a", "b"], {"onnx": "encoder.onnx"}, None, card)


@pytest.mark.parametrize(
    ("change", "problem"),
    [
        ({"fingerprint": "other"}, "model_card.fingerprint: 'other' is not the contract's 'abc'"),
        ({"intended_use": None}, "model_card: missing intended_use"),
    ],
    ids=["foreign_fingerprint", "missing_key"],
)
def test_contract_refuses_a_card_of_another_model_or_incomplete(change, problem):
    card = model_card.build_model_card("/nonexistent/model.keras", "d", None, "abc", "t")
    contract = contract_with(card)
    assert validate_contract(contract).raw["model_card"] == card
    contract["model_card"] = {k: v for k, v in {**card, **change}.items() if v is not None}
    with pytest.raises(ContractError, match=problem):
        validate_contract(contract)


@pytest.mark.parametrize("licence", [7, "  "])
def test_dataset_licence_must_be_text(tmp_path, licence):
    spec = make_phantoms(tmp_path / "data", n_per_class=2, image_size=32, seed=0)
    meta = json.loads((spec.root / "dataset.json").read_text())
    (spec.root / "dataset.json").write_text(json.dumps({**meta, "licence": licence}))
    with pytest.raises(DatasetError, match="licence must be a non-empty string"):
        load_dataset(spec.root)


def test_the_exports_card_is_in_the_contract_and_the_onnx_metadata(art):
    contract = load_contract(art["dir"])
    card = contract.raw["model_card"]
    assert card["fingerprint"] == contract.fingerprint == art["fingerprint"]
    assert card["intended_use"] == model_card.INTENDED_USE
    assert card["training_data"]["licence_note"] == model_card.NO_LICENCE
    meta = read_metadata(art["dir"] / "encoder.onnx")
    assert json.loads(meta["model_card"]) == card
    assert meta["export_date"] == card["export_date"]
    assert meta["intended_use"] == model_card.INTENDED_USE


@pytest.mark.slow  # an export (several seconds)
def test_export_json_carries_licence_and_measured_figures(art, tmp_path, capsys):
    from export.__main__ import main

    run = tmp_path / "run"
    run.mkdir()
    shutil.copy(art["dir"].parent / "model.keras", run / "model.keras")
    (run / "metrics.json").write_text(json.dumps(METRICS))
    data = tmp_path / "data"
    shutil.copytree(art["data"], data)
    meta = json.loads((data / "dataset.json").read_text())
    (data / "dataset.json").write_text(json.dumps({**meta, "licence": "made by the tests"}))
    argv = ["--model", run / "model.keras", "--data", data, "--out", tmp_path / "art"]
    assert main([*map(str, argv), "--no-int8", "--json"]) == 0
    out = capsys.readouterr().out
    report = json.loads(out)  # stdout is one JSON document; progress went to stderr
    assert report["out"] == str(tmp_path / "art") and report["fingerprint"] == art["fingerprint"]
    card = report["model_card"]
    assert card["training_data"]["licence"] == "made by the tests"
    assert card["retrieval"]["map"] == METRICS["map"]
    assert load_contract(tmp_path / "art").raw["model_card"] == card
    onnx = read_metadata(tmp_path / "art" / "encoder.onnx")
    assert onnx["training_data_licence"] == "made by the tests"
    assert json.loads(onnx["retrieval_metrics"])["precision"] == METRICS["precision"]
