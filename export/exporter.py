"""The whole export: trained YNet + dataset -> a checked artifact folder.

Everything is written into a hidden temporary sibling of the output folder and renamed
into place only after the parity checks pass (:func:`deploy.atomic.atomic_directory`),
so a failed or interrupted export never leaves a half-written folder, and a previous
export in the same place stays intact until the new one is complete.
"""

from __future__ import annotations

import datetime
import json
import os
import time
from collections.abc import Callable
from pathlib import Path

import keras_ynet
from deploy.atomic import atomic_directory, atomic_write_text
from deploy.contract import CONTRACT_FILE
from export.contract_writer import build_contract, model_hash_grid, write_contract
from export.golden import GOLDEN_DIR, GOLDEN_FILE, write_golden
from export.model_card import build_model_card, onnx_metadata
from export.parity import PARITY_FILE, check_parity, prepare_records
from keras_ynet.dataset import load_dataset
from keras_ynet.fingerprint import FINGERPRINT_HEX_CHARS, model_fingerprint
from keras_ynet.saving import load_ynet

FILES = {"onnx": "encoder.onnx", "tflite": "encoder.tflite", "tflite_int8": "encoder_int8.tflite"}


class ExportError(ValueError):
    """The export cannot run with these inputs (wrong data, unsafe output folder, ...)."""


def training_data_name(model_path: Path, fallback: str) -> str:
    """The dataset name recorded in ``run_config.json`` beside the model, else ``fallback``."""
    config = model_path.parent / "run_config.json"
    try:
        name = json.loads(config.read_text(encoding="utf-8"))["dataset"]["name"]
    except (OSError, ValueError, KeyError, TypeError):
        return fallback
    return str(name)


def check_output_folder(out: Path) -> None:
    """Refuses to replace a folder that is not a previous export (it would be deleted)."""
    if out.exists() and not out.is_dir():
        raise ExportError(f"{out} exists and is not a folder")
    if out.is_dir() and any(out.iterdir()) and not (out / CONTRACT_FILE).is_file():
        raise ExportError(
            f"{out} exists, is not empty and holds no {CONTRACT_FILE}: it is not an export "
            "folder, so it will not be replaced; choose a new --out"
        )


def make_shareable(folder: Path) -> None:
    """Temporary folders and files are private (0700/0600); artifacts get the umask's modes."""
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(folder, 0o777 & ~umask)
    for path in folder.iterdir():
        if path.is_dir():  # golden/: a folder needs its x bits to be entered
            make_shareable(path)
        else:
            os.chmod(path, 0o666 & ~umask)


def export_encoder(
    model_path: str | Path,
    data: str | Path,
    out: str | Path,
    int8: bool = True,
    parity_train: int = 64,
    calibration_images: int = 200,
    log: Callable[[str], None] = print,
    keep_flagged_int8: bool = False,
) -> dict:
    """Exports ``model_path`` into ``out`` and checks it on ``data``.

    Args:
        model_path: the trained ``model.keras``.
        data: the dataset folder (train images calibrate int8; test + train check parity).
        out: the artifact folder to create or replace.
        int8: also write ``encoder_int8.tflite``.
        parity_train: train images added to the test split for the float parity checks.
        calibration_images: train images used to calibrate the int8 model.
        log: where progress lines go.
        keep_flagged_int8: write ``encoder_int8.tflite`` even when its bit agreement with
            Keras is below ``INT8_MIN_AGREEMENT`` (flagged). By default a flagged int8
            model is measured, reported in ``parity.json`` and left out of the folder
            and the contract, so no one deploys it by picking the file beside the float
            ones.

    Returns:
        The parity report, with ``files`` (name -> bytes) and ``out`` added.

    Raises:
        ExportError, FileNotFoundError, ValueError, ParityError: with one-line messages
            naming the file at fault.
    """
    from export.litert_export import export_litert
    from export.onnx_export import OPSET, export_onnx
    from export.serving_graph import EncoderModule

    start = time.monotonic()

    def step(message: str) -> None:
        log(f"[{time.monotonic() - start:6.1f} s] {message}")

    model_path, out = Path(model_path), Path(out)
    check_output_folder(out)
    step(f"loading {model_path}")
    model = load_ynet(model_path)
    step(f"reading dataset {data}")
    spec = load_dataset(data, check_files=True, scan_masks=False)
    class_names = model.class_names or spec.class_names
    if list(class_names) != list(spec.class_names):
        raise ExportError(
            f"{spec.root}: classes {spec.class_names} differ from the model's {class_names}; "
            "pass the dataset the model was trained on"
        )
    size, _, channels = model.input_shape_
    fingerprint = model_fingerprint(model)
    files = {k: v for k, v in FILES.items() if int8 or k != "tflite_int8"}
    export_date = datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")
    card = build_model_card(model_path, spec.name, spec.licence, fingerprint, export_date)
    metadata = {
        "fingerprint": fingerprint,
        "fingerprint_algorithm": f"sha256 of config facts + encoder weights, first "
        f"{FINGERPRINT_HEX_CHARS} hex chars (keras_ynet.fingerprint)",
        "bits": str(model.bits),
        "image_size": str(size),
        "channels": str(channels),
        "input": "image: uint8 [batch, S, S, C] NHWC, raw pixels 0..255",
        "outputs": "hash: float32 [batch, bits] tanh; code: uint8 [batch, bits/8]",
        "bit_rule": "hash > 0 -> 1",
        "bit_order": "msb_first (numpy.packbits)",
        "class_names": json.dumps(list(class_names)),
        "training_data": training_data_name(model_path, spec.name),
        "export_date": export_date,
        "keras_ynet_version": keras_ynet.__version__,
        "source_model": model_path.name,
        "contract": CONTRACT_FILE,
        **onnx_metadata(card),
    }
    encoder = EncoderModule(model)
    with atomic_directory(out) as tmp:
        step(f"ONNX (opset {OPSET}) -> {files['onnx']}")
        export_onnx(encoder, tmp / files["onnx"], metadata)
        calibration = None
        if int8:
            train = spec.split("train")[:calibration_images]
            step(f"reading {len(train)} calibration images")
            calibration = prepare_records(train, size, channels)
        export_litert(
            encoder,
            tmp,
            files["tflite"],
            files.get("tflite_int8"),
            calibration,
            progress=lambda message: step(f"{message} -> {tmp.name}"),
        )
        grid = model_hash_grid(model)  # bit -> image region, for the search report
        contract = build_contract(
            size, channels, model.bits, fingerprint, class_names, files, grid, card
        )
        write_contract(tmp, contract)
        report = check_parity(model, tmp, files, spec, parity_train, progress=step)
        report["int8_written"] = int8 and not (report["int8_flagged"] and not keep_flagged_int8)
        if int8 and not report["int8_written"]:
            step(f"int8 agreement below the minimum: {files['tflite_int8']} left out")
            (tmp / files.pop("tflite_int8")).unlink()
            contract = build_contract(
                size, channels, model.bits, fingerprint, class_names, files, grid, card
            )
            write_contract(tmp, contract)
        atomic_write_text(tmp / PARITY_FILE, json.dumps(report, indent=2) + "\n")
        step(f"golden vectors -> {GOLDEN_FILE}")
        write_golden(tmp, spec.split("test") or spec.split("train"), spec.root)
        report["fingerprint"] = fingerprint
        report["files"] = {name: (tmp / name).stat().st_size for name in files.values()}
        make_shareable(tmp)
        step(f"all checks passed; moving into {out}")
    report["out"] = str(out)
    report["model_card"] = card
    report["written"] = [*files.values(), CONTRACT_FILE, PARITY_FILE, GOLDEN_FILE, GOLDEN_DIR]
    return report
