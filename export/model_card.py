"""The model card an export carries: what the encoder is for, what it was trained on
and under which licence, how well it retrieved, when it was exported and which model
it is. Written into ``encoder.json`` (``model_card``) and, the same object as JSON, into
the ONNX ``metadata_props`` (``model_card``, with its main fields also as keys of their
own), so a regulator or an integrator reads it from either file without the run folder.

Sources, in the run folder beside ``model.keras`` (as ``python -m keras_ynet.train``
writes it): ``run_config.json``'s ``dataset`` record (name, licence, split sizes, the
sha256 of labels.csv) and ``metrics.json`` (retrieval on the test split). A model without
them (trained elsewhere, or a test model) gets the export dataset's name and licence and
says that no measured figures were recorded: the card never invents a number.
"""

from __future__ import annotations

import json
from pathlib import Path

INTENDED_USE = (
    "Content-based retrieval of medical images: the encoder turns an image into a "
    "binary hash code, and an index of codes returns the indexed images nearest to a "
    "query (Hamming distance) for a clinician or researcher to compare, with the bits of "
    "the image regions that agree. Decision support for browsing an archive of the kind "
    "of images it was trained on."
)
NOT_INTENDED_FOR = (
    "Diagnosis, triage or any automatic clinical decision: a retrieved image, its "
    "distance or its label is not a finding, and the model has not been clinically "
    "validated. Images of another modality, body part or acquisition than the training "
    "data: its codes are only measured on that data."
)
METRICS_SOURCE = (
    "metrics.json of the training run: the test split queries the train split as the "
    "database, with the Keras model; the float exports give the same bits on every "
    "checked image (parity.json), the int8 model's change is in parity.json"
)
NO_LICENCE = 'not recorded: add "licence" to the dataset\'s dataset.json and retrain'
# The fields every card has; deploy.contract checks them.
RUN_DATASET_KEYS = ("name", "licence", "labels_sha256", "n_train", "n_validation", "n_test")


def _read_json(path: Path) -> dict | None:
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return value if isinstance(value, dict) else None


def build_model_card(
    model_path: str | Path,
    dataset_name: str,
    dataset_licence: str | None,
    fingerprint: str,
    export_date: str,
) -> dict:
    """The card of the model at ``model_path``.

    Args:
        model_path: the exported ``model.keras``; its folder is searched for
            ``run_config.json`` and ``metrics.json``.
        dataset_name, dataset_licence: of the dataset given to the export, used where the
            run folder records no dataset.
        fingerprint: the model fingerprint.
        export_date: ISO 8601 UTC time of the export.
    """
    run = Path(model_path).parent
    recorded = (_read_json(run / "run_config.json") or {}).get("dataset")
    if isinstance(recorded, dict):
        data = {key: recorded.get(key) for key in RUN_DATASET_KEYS}
        data["source"] = "run_config.json of the training run"
    else:
        data = {"name": dataset_name, "licence": dataset_licence}
        data["source"] = "the dataset given to the export (no run_config.json beside the model)"
    if not data.get("licence"):
        data["licence"] = None
        data["licence_note"] = NO_LICENCE
    metrics = _read_json(run / "metrics.json")
    if metrics is not None:
        retrieval = {"source": METRICS_SOURCE}
        retrieval.update({k: metrics.get(k) for k in ("ks", "map", "precision")})
    else:
        retrieval = {"source": None, "note": "no metrics.json beside the model: not measured"}
    return {
        "intended_use": INTENDED_USE,
        "not_intended_for": NOT_INTENDED_FOR,
        "training_data": data,
        "retrieval": retrieval,
        "export_date": export_date,
        "fingerprint": fingerprint,
    }


def onnx_metadata(card: dict) -> dict[str, str]:
    """``metadata_props`` entries of the card (strings): the whole card as JSON under
    ``model_card`` and its main fields under keys of their own."""
    data = card["training_data"]
    return {
        "model_card": json.dumps(card, sort_keys=True),
        "intended_use": card["intended_use"],
        "not_intended_for": card["not_intended_for"],
        "training_data_licence": data["licence"] or data.get("licence_note", ""),
        "retrieval_metrics": json.dumps(card["retrieval"], sort_keys=True),
    }
