"""Parity of the exported encoders with Keras, on real images from the dataset.

Float exports (ONNX Runtime, float32 LiteRT) must give the same ``hash`` values as Keras
within float rounding (:data:`TIE_TOLERANCE`) and so the same sign bits on every checked
image (all test-split images plus up to ``max_train`` train images), and their ``code``
output must equal :func:`deploy.codes.pack_bits` of their own ``hash``; anything else
fails the export. A bit whose Keras value lies within that rounding of zero (a tie) is
the one bit two runtimes may legitimately set differently: an image lands that close to
a threshold about once in 10^4 to 10^5 values of a trained model, so an export of a sound
model would otherwise fail by chance. Such bits are counted (``tie_bits_differing``), not
failed. The int8 model is measured, not required to match: bit
agreement with Keras over the whole dataset, and the change of mAP@10 (queries = test
split, database = train split) when its codes replace the float codes. Agreement below
:data:`INT8_MIN_AGREEMENT` is flagged.

The Keras reference runs the YNet sub-model up to ``hash`` (the same layers and weights
as the full model's ``hash`` output, without computing the FPN and R-MAC branches).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
from tqdm import tqdm

from deploy.atomic import atomic_write_text
from deploy.codes import pack_bits, signs_to_bits
from deploy.preprocess import load_prepared
from keras_ynet.dataset import DatasetSpec, Record
from keras_ynet.fingerprint import hash_submodel
from keras_ynet.ranking_metrics import hamming_ranking, map_at_k_from_ranking

PARITY_FILE = "parity.json"
INT8_MIN_AGREEMENT = 0.99
# Float runtimes differ from Keras by about 1e-6 on the hash values (parity.json:
# max_abs_hash_diff); a difference above this is a changed computation, not rounding.
TIE_TOLERANCE = 1e-3
MAP_K = 10
MAP_CONVENTION = "k"  # (c) R = k, the project's headline convention
MAX_LISTED = 10


class ParityError(RuntimeError):
    """A float export disagrees with Keras (or is internally inconsistent)."""


def prepare_records(
    records: list[Record], image_size: int, channels: int, progress: bool = False
) -> np.ndarray:
    """Decodes and prepares images exactly as the device does: uint8 (N, S, S, C)."""
    out = np.empty((len(records), image_size, image_size, channels), np.uint8)
    for i, record in enumerate(
        tqdm(records, desc="images", disable=None if progress else True, leave=False)
    ):
        out[i] = load_prepared(record.image, image_size, channels)
    return out


def keras_hash(model, images: np.ndarray, batch_size: int = 32) -> np.ndarray:
    """The Keras ``hash`` values (N, bits) for uint8 images."""
    sub = hash_submodel(model)
    return sub.predict(images.astype(np.float32), batch_size=batch_size, verbose=0)


def compare_float(
    name: str, outputs: dict[str, np.ndarray], reference: np.ndarray, ids: list[str]
) -> dict:
    """Hash, bit and code parity of one float export against the Keras ``hash`` values
    ``reference`` (N, bits).

    Raises:
        ParityError: naming the file and the mismatching images.
    """
    try:
        bits = signs_to_bits(outputs["hash"])
    except ValueError as e:  # NaN or inf: the classic symptom of an unfrozen conversion
        raise ParityError(f"{name}: {e}") from None
    keras_bits = signs_to_bits(reference)
    flipped = bits != keras_bits
    tie = np.abs(reference) < TIE_TOLERANCE
    hard = np.any(flipped & ~tie, axis=1)
    differs = np.any(flipped, axis=1)
    report = {
        "bits_identical": not bool(differs.any()),
        "mismatching_images": [ids[i] for i in np.flatnonzero(differs)],
        "mismatching_bits": int(np.sum(flipped)),
        "tie_bits_differing": int(np.sum(flipped & tie)),
        "max_abs_hash_diff": float(np.max(np.abs(outputs["hash"] - reference))),
    }
    if hard.any():
        listed = [ids[i] for i in np.flatnonzero(hard)][:MAX_LISTED]
        more = int(hard.sum()) - len(listed)
        raise ParityError(
            f"{name}: sign bits differ from Keras on {int(hard.sum())} of {len(ids)} images "
            f"({int(np.sum(flipped & ~tie))} bits, each further than {TIE_TOLERANCE:g} from "
            f"its threshold): {', '.join(listed)}" + (f" and {more} more" if more > 0 else "")
        )
    if report["max_abs_hash_diff"] > TIE_TOLERANCE:
        raise ParityError(
            f"{name}: hash values differ from Keras by up to {report['max_abs_hash_diff']:.3g}, "
            f"more than float rounding ({TIE_TOLERANCE:g}): the export computes something else"
        )
    if not np.array_equal(outputs["code"], pack_bits(bits)):
        raise ParityError(f"{name}: the code output is not pack_bits(hash > 0)")
    report["code_equals_pack_bits"] = True
    return report


def int8_report(
    name: str,
    int8_hash: np.ndarray,
    int8_code: np.ndarray,
    keras_bits: np.ndarray,
    spec: DatasetSpec,
    records: list[Record],
) -> dict:
    """Bit agreement and mAP@10 change of the int8 model against the float (Keras) bits."""
    bits = signs_to_bits(int8_hash)
    if not np.array_equal(int8_code, pack_bits(bits)):
        raise ParityError(f"{name}: the code output is not pack_bits(hash > 0)")
    agreement = float(np.mean(bits == keras_bits))
    report = {
        "images": len(records),
        "bit_agreement": agreement,
        "images_identical": float(np.mean(np.all(bits == keras_bits, axis=1))),
        "code_equals_pack_bits": True,
        "map_convention": MAP_CONVENTION,
    }
    is_test = np.array([r.split == "test" for r in records])
    is_train = np.array([r.split == "train" for r in records])
    if is_test.any() and is_train.any():
        q_labels = spec.label_ids([r for r in records if r.split == "test"])
        d_labels = spec.label_ids([r for r in records if r.split == "train"])
        scores = {}
        for kind, b in (("float", keras_bits), ("int8", bits)):
            ranking = hamming_ranking(b[is_test], b[is_train])
            scores[kind] = map_at_k_from_ranking(ranking, q_labels, d_labels, MAP_K, MAP_CONVENTION)
        report[f"map_at_{MAP_K}_float"] = scores["float"]
        report[f"map_at_{MAP_K}_int8"] = scores["int8"]
        report[f"map_at_{MAP_K}_change"] = scores["int8"] - scores["float"]
    return report


def check_parity(
    model,
    folder: str | Path,
    files: dict[str, str],
    spec: DatasetSpec,
    max_train: int = 64,
    progress: Callable[[str], None] = lambda message: None,
) -> dict:
    """Runs every artifact in ``folder`` against Keras and writes ``parity.json`` there.

    Args:
        model: the YNet that was exported.
        folder: where the artifacts are.
        files: artifact file names by kind (``onnx``, ``tflite``, ``tflite_int8``).
        spec: the dataset (``--data``).
        max_train: train images added to the test split for the float checks.
        progress: called with a short message before each stage.

    Returns:
        The report written to ``parity.json``.

    Raises:
        ParityError: a float export disagrees with Keras on any image (beyond ties).
    """
    from export.litert_export import run_tflite
    from export.onnx_export import run_onnx

    folder = Path(folder)
    size, channels = int(model.input_shape_[0]), int(model.input_shape_[-1])
    test, train = spec.split("test"), spec.split("train")
    int8 = "tflite_int8" in files
    # Float checks: the test split + up to max_train train images; int8: the whole split.
    float_records = test + train[:max_train]
    records = test + train if int8 else float_records
    progress(f"reading {len(records)} images from {spec.root}")
    images = prepare_records(records, size, channels, progress=True)
    ids = [r.id for r in records]
    progress("Keras reference codes")
    reference = keras_hash(model, images)
    keras_bits = signs_to_bits(reference)
    n_float = len(float_records)
    report = {
        "data": spec.name,
        "images": {"test": len(test), "train": n_float - len(test)},
        "min_abs_keras_hash": float(np.min(np.abs(reference[:n_float]))),
        "float": {},
    }
    runners = {"onnx": run_onnx, "tflite": run_tflite}
    for kind in ("onnx", "tflite"):
        if kind not in files:
            continue
        progress(f"parity of {files[kind]}")
        outputs = runners[kind](folder / files[kind], images[:n_float])
        entry = compare_float(files[kind], outputs, reference[:n_float], ids[:n_float])
        report["float"][files[kind]] = entry
    report["int8_flagged"] = False
    if int8:
        name = files["tflite_int8"]
        progress(f"int8 agreement of {name} on {len(records)} images")
        outputs = run_tflite(folder / name, images)
        entry = int8_report(name, outputs["hash"], outputs["code"], keras_bits, spec, records)
        entry["file"] = name
        if "tflite" in files:
            entry["size_ratio_to_float"] = (folder / name).stat().st_size / (
                folder / files["tflite"]
            ).stat().st_size
        entry["min_agreement"] = INT8_MIN_AGREEMENT
        report["int8"] = entry
        report["int8_flagged"] = entry["bit_agreement"] < INT8_MIN_AGREEMENT
    report["passed"] = True
    atomic_write_text(folder / PARITY_FILE, json.dumps(report, indent=2) + "\n")
    return report
