"""``encoder.tflite`` (float32) and ``encoder_int8.tflite`` (full-integer quantised).

Both are converted from a SavedModel of the *frozen* export graph (variables folded into
constants). Converting the live Keras graph does not fail, but the converter keeps the
Keras variables as VAR_HANDLE / READ_VARIABLE ops that nothing initialises, and the model
outputs NaN (or refuses to calibrate); parity checks catch that, freezing avoids it.

The models have one signature, ``serving_default``: input ``image`` (uint8), outputs
``hash`` and ``code``. In the int8 model every convolution runs in int8 (per-channel
weights, calibrated on training images); the uint8 input is cast and quantised inside
the model, the int8 ``tanh`` output (scale 1/128, zero point 0) is dequantised to a
float32 ``hash`` inside the model, and ``code`` packs ``hash > 0`` as in the float model.
:func:`run_tflite` still dequantises any quantised output it meets.
"""

from __future__ import annotations

import tempfile
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import tensorflow as tf

from deploy.atomic import atomic_write_bytes
from deploy.contract import CODE_OUTPUT, HASH_OUTPUT, INPUT_NAME
from deploy.contract import TFLITE_SIGNATURE as SIGNATURE_KEY
from export.serving_graph import EncoderModule


class LiteRtExportError(RuntimeError):
    """A LiteRT conversion failed or produced an unusable model."""


def save_frozen(encoder: EncoderModule, directory: str | Path) -> Path:
    """Writes a SavedModel of ``encoder.serve`` with every variable frozen to a constant."""
    from tensorflow.python.framework.convert_to_constants import (
        convert_variables_to_constants_v2,
    )

    live = encoder.serve.get_concrete_function()
    frozen = convert_variables_to_constants_v2(live)
    structure = live.structured_outputs  # {"code": ..., "hash": ...}: restore the names

    module = tf.Module()

    @tf.function(input_signature=[encoder.input_spec()], autograph=False)
    def serve(image):
        return tf.nest.pack_sequence_as(structure, frozen(image))

    module.serve = serve
    tf.saved_model.save(module, str(directory), signatures={SIGNATURE_KEY: serve})
    return Path(directory)


def convert_float(saved_model: Path) -> bytes:
    """float32 LiteRT flatbuffer of the frozen SavedModel."""
    converter = tf.lite.TFLiteConverter.from_saved_model(str(saved_model))
    return converter.convert()


def convert_int8(saved_model: Path, calibration_images: np.ndarray) -> bytes:
    """Full-integer LiteRT flatbuffer, calibrated on uint8 images (N, S, S, C).

    Only int8 builtin kernels are allowed (TFLITE_BUILTINS_INT8): the conversion fails
    rather than leave a float convolution behind. The uint8 input and the int32 bit
    packing are not float ops, so the quantiser leaves them as they are.
    """
    if len(calibration_images) == 0:
        raise LiteRtExportError("int8 calibration needs at least one training image")

    def representative() -> Iterator[dict[str, np.ndarray]]:
        for i in range(len(calibration_images)):
            yield {INPUT_NAME: calibration_images[i : i + 1]}

    converter = tf.lite.TFLiteConverter.from_saved_model(str(saved_model))
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = representative
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    with warnings.catch_warnings():
        # The calibrator runs the old tf.lite.Interpreter, which warns it is deprecated.
        warnings.filterwarnings("ignore", message=".*tf.lite.Interpreter is deprecated")
        return converter.convert()


def export_litert(
    encoder: EncoderModule,
    folder: str | Path,
    float_name: str = "encoder.tflite",
    int8_name: str | None = "encoder_int8.tflite",
    calibration_images: np.ndarray | None = None,
    progress: Callable[[str], None] = lambda message: None,
) -> dict[str, Path]:
    """Writes the float (and, if ``int8_name``, the int8) LiteRT models into ``folder``.

    Returns:
        {"tflite": path, "tflite_int8": path} (the int8 entry only when exported).
    """
    folder = Path(folder)
    written = {}
    with tempfile.TemporaryDirectory(prefix="ynet-frozen-") as tmp:
        saved = save_frozen(encoder, Path(tmp) / "saved_model")
        progress("float32 LiteRT")
        written["tflite"] = _write(folder / float_name, convert_float(saved))
        if int8_name is not None:
            if calibration_images is None:
                raise LiteRtExportError("int8 export needs calibration images")
            progress(f"int8 LiteRT (calibrating on {len(calibration_images)} training images)")
            written["tflite_int8"] = _write(
                folder / int8_name, convert_int8(saved, calibration_images)
            )
    return written


def run_tflite(
    path: str | Path, images: np.ndarray, batch_size: int = 32, num_threads: int | None = None
) -> dict[str, np.ndarray]:
    """Runs a ``.tflite`` encoder through its signature on uint8 images (N, S, S, C).

    Returns:
        {"hash": float32 (N, bits) (dequantised if the model stores it quantised),
         "code": uint8 (N, bits / 8)}.
    """
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=str(path), num_threads=num_threads)
    runner = interpreter.get_signature_runner(SIGNATURE_KEY)
    details = runner.get_output_details()
    missing = {HASH_OUTPUT, CODE_OUTPUT} - set(details)
    if missing:
        raise LiteRtExportError(f"{path}: signature lacks outputs {sorted(missing)}")
    parts = [
        runner(**{INPUT_NAME: images[i : i + batch_size]})
        for i in range(0, len(images), batch_size)
    ]
    out = {name: np.concatenate([p[name] for p in parts]) for name in (HASH_OUTPUT, CODE_OUTPUT)}
    scale, zero_point = details[HASH_OUTPUT].get("quantization", (0.0, 0))
    if scale:
        out[HASH_OUTPUT] = (out[HASH_OUTPUT].astype(np.float32) - zero_point) * np.float32(scale)
    return out


def _write(path: Path, flatbuffer: bytes) -> Path:
    atomic_write_bytes(path, flatbuffer)
    return path
