"""Writes ``encoder.json``, the contract a host needs to run the exported encoder.

Only what a host needs: the input interface, the preprocessing rules of
:mod:`deploy.preprocess` spelled out, the outputs, the bit rule and bit order, the
fingerprint and class names, and the artifact file names. Provenance (dates, versions,
training data) goes into the ONNX metadata and ``parity.json``, not here. The reader and
validator live in :mod:`deploy.contract` (no TensorFlow); every contract written here
passes through it first.
"""

from __future__ import annotations

import json
from pathlib import Path

from deploy import contract as reader
from deploy.atomic import atomic_write_text
from deploy.preprocess import LUMA_WEIGHTS


def build_contract(
    image_size: int,
    channels: int,
    bits: int,
    fingerprint: str,
    class_names: list[str],
    files: dict[str, str],
) -> dict:
    """The contract object (format version 1); see :mod:`deploy.contract` for the schema.

    Args:
        image_size: side of the square model input.
        channels: 1 (grey) or 3 (RGB).
        bits: code length.
        fingerprint: the encoder fingerprint.
        class_names: image class names, index order.
        files: artifact file names by kind (``onnx``, ``tflite``, ``tflite_int8``).
    """
    contract = {
        "format_version": reader.FORMAT_VERSION,
        "input": {
            "name": reader.INPUT_NAME,
            "shape": [None, image_size, image_size, channels],
            "dtype": "uint8",
            "layout": "NHWC",
            "channels": channels,
            "colour": reader.COLOUR[channels],
            "value_range": [0, 255],
            "note": "raw pixel values; scaling to [-1, 1] happens inside the model",
        },
        "preprocessing": {
            "order": ["decode", "resize", "channels"],
            "decode": {
                "grey_sources": "grey of any bit depth, with or without alpha, stays grey",
                "colour_sources": "RGB, RGBA, palette and other colour modes become RGB",
                "alpha": "dropped, never composited",
                "sixteen_bit_grey": "v8 = floor(v16 / 257 + 0.5) (grey without alpha)",
                "sixteen_bit_other": "high byte (v16 >> 8): 16-bit RGB, RGBA and grey+alpha",
                "low_bit_grey": "1, 2, 4-bit grey: v8 = floor(v * 255 / (2 ** depth - 1) + 0.5)",
                "transparency_chunk": "ignored: pixels keep their colour",
            },
            "resize": {
                "when": "only if the decoded image is not size x size",
                "method": "bilinear",
                "reference": "Pillow Image.resize((size, size), Image.BILINEAR) on uint8",
                "antialias_when_shrinking": True,
                "keep_aspect": False,
                "size": [image_size, image_size],
                "per_channel": True,
                "pass_order": "vertical first when the width grows and the height shrinks, "
                "else horizontal first (as Pillow 13 does); each pass rounds to uint8",
            },
            "channels": {
                "target": reader.COLOUR[channels],
                "grey_to_rgb": "replicate the grey channel three times",
                "rgb_to_grey": {
                    "formula": "round_half_even((wr * R + wg * G) + wb * B), each product and "
                    "sum rounded to float64 (no fused multiply-add), clipped to 0..255",
                    "weights": [float(w) for w in LUMA_WEIGHTS],
                },
            },
        },
        "outputs": {
            reader.HASH_OUTPUT: {
                "name": reader.HASH_OUTPUT,
                "shape": [None, bits],
                "dtype": "float32",
                "value_range": [-1.0, 1.0],
                "meaning": "tanh(pre-activation - threshold); its sign is the bit",
            },
            reader.CODE_OUTPUT: {
                "name": reader.CODE_OUTPUT,
                "shape": [None, bits // 8],
                "dtype": "uint8",
                "meaning": "the bits of hash packed 8 per byte, most significant bit first",
            },
        },
        "bits": bits,
        "bit_rule": reader.BIT_RULE,
        "bit_order": reader.BIT_ORDER,
        "bit_order_reference": "numpy.packbits(bits, axis=-1): bit i is byte i // 8, "
        "bit value 2 ** (7 - i % 8)",
        "distance": "Hamming: popcount(code_a XOR code_b) over the bits // 8 bytes",
        "fingerprint": fingerprint,
        "class_names": list(class_names),
        "files": dict(files),
        "tflite_signature": "serving_default",
    }
    reader.validate_contract(contract, where="contract being exported")
    return contract


def write_contract(folder: str | Path, contract: dict) -> Path:
    """Validates ``contract`` and writes it to ``folder/encoder.json`` (atomically)."""
    path = Path(folder) / reader.CONTRACT_FILE
    reader.validate_contract(contract, where=str(path))
    atomic_write_text(path, json.dumps(contract, indent=2) + "\n")
    return path
