"""Writes ``encoder.json``, the contract a host needs to run the exported encoder.

Only what a host needs: the input interface, the preprocessing rules of
:mod:`deploy.preprocess` spelled out, the outputs, the bit rule and bit order, the
fingerprint and class names, the artifact file names, the bit -> grid-cell layout
(``hash_grid``, read from the model by :func:`model_hash_grid`), and the model card
(``model_card``: intended use, training data and licence, measured retrieval, export
date; :mod:`export.model_card`), which the ONNX metadata carries too. Versions and the
parity figures go into the ONNX metadata and ``parity.json``. The reader and validator
live in :mod:`deploy.contract` (no TensorFlow); every contract written here passes
through it first.
"""

from __future__ import annotations

import json
from pathlib import Path

from deploy import contract as reader
from deploy.atomic import atomic_write_text
from deploy.preprocess import LUMA_WEIGHTS, MAX_PIXELS, MIN_SIDE
from deploy.ultrasound import RULE as US_REGION_RULE


def build_contract(
    image_size: int,
    channels: int,
    bits: int,
    fingerprint: str,
    class_names: list[str],
    files: dict[str, str],
    hash_grid: tuple[int, int, int, int] | None = None,
    model_card: dict | None = None,
) -> dict:
    """The contract object (format version 1); see :mod:`deploy.contract` for the schema.

    Args:
        image_size: side of the square model input.
        channels: 1 (grey) or 3 (RGB).
        bits: code length.
        fingerprint: the encoder fingerprint.
        class_names: image class names, index order.
        files: artifact file names by kind (``onnx``, ``tflite``, ``tflite_int8``).
        hash_grid: (rows, cols, bits_per_cell, first_bit) from :func:`model_hash_grid`; None leaves
            ``hash_grid`` out (the search report then draws no bit-agreement map).
        model_card: from :func:`export.model_card.build_model_card`; None leaves it out.
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
                # Training read the pixels as stored; a host that rotated would give
                # other bits for every file carrying the tag.
                "orientation": "EXIF (and PNG eXIf) orientation tags are ignored: the "
                "pixels are used as stored, never rotated or flipped",
                "dicom": {
                    "detect": "'DICM' at byte 128, or a .dcm / .dicom file name",
                    "grey": "float64 throughout: stored value s (bits above BitsStored "
                    "ignored, signed values sign-extended) -> modality m = s * RescaleSlope + "
                    "RescaleIntercept (or the Modality LUT Sequence) -> y by the first "
                    "present of: the first VOI LUT Sequence item (descriptor [n, first, "
                    "depth], n = 0 meaning 65536: y = LUTData[clip(floor(m + 0.5) - first, "
                    "0, n - 1)] "
                    "* 255 / (2 ** depth - 1)); the first WindowCenter c / WindowWidth w "
                    "(LINEAR: c1 = c - 0.5, w1 = w - 1, y = 0 if m <= c1 - w1 / 2, 255 if "
                    "m > c1 + w1 / 2, else ((m - c1) / w1 + 0.5) * 255; LINEAR_EXACT: the "
                    "same with c1 = c, w1 = w; SIGMOID: 255 / (1 + exp(-4 * (m - c) / w))); "
                    "else y = (m - min(m)) * 255 / (max(m) - min(m)), 0 if max == min -> "
                    "v = clip(floor(y + 0.5), 0, 255)",
                    "monochrome1": "inverted last: v = 255 - v",
                    "colour": "8-bit colour (SamplesPerPixel 3) to RGB: RGB as stored; "
                    "YBR_FULL and YBR_FULL_422 (native YBR_FULL_422: each Cb, Cr sample "
                    "repeated for its two pixels; JPEG: the codec's YCbCr, no codec colour "
                    "conversion) by pydicom convert_color_space, float32: R = Y + 1.402 "
                    "(Cr - 128), G = Y - (0.114 * 1.772 / 0.587) (Cb - 128) - (0.299 * "
                    "1.402 / 0.587) (Cr - 128), B = Y + 1.772 (Cb - 128), each "
                    "clip(floor(x + 0.5), 0, 255); YBR_ICT / YBR_RCT only in JPEG 2000 "
                    "(the codec's inverse transform); other colour spaces refused",
                    "palette": "PALETTE COLOR: the Red/Green/Blue palette LUTs (pydicom "
                    "apply_color_lut); 16-bit entries keep their high byte (v >> 8)",
                    "compressed": "decoded by the transfer syntax's codec (RLE, JPEG "
                    "baseline / extended 8-bit, JPEG-LS, JPEG 2000); lossy JPEG decoders may "
                    "differ by one level, so bit-exact hosts use libjpeg(-turbo) as Pillow "
                    "does; a syntax the host cannot decode is refused, naming it",
                    "multi_frame": "refused unless a frame is chosen; index build/add "
                    "choose by a frame policy (default: Representative Frame Number "
                    "(0028,6010), 1-based in the file, else frame NumberOfFrames // 2, "
                    "0-based) and store the frame with the entry",
                    "us_region": US_REGION_RULE,
                },
                "refused": f"more than {MAX_PIXELS} pixels (checked from the header), a "
                f"side under {MIN_SIDE} pixels, 32-bit float images, NaN or infinite values",
                "max_pixels": MAX_PIXELS,  # numbers a host checks before decoding
                "min_side": MIN_SIDE,
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
        "tflite_signature": reader.TFLITE_SIGNATURE,
    }
    if hash_grid is not None:
        rows, cols, per_cell, first = (int(v) for v in hash_grid)
        contract["hash_grid"] = {
            "rows": rows,
            "cols": cols,
            "bits_per_cell": per_cell,
            "meaning": "bit i comes from grid cell i // bits_per_cell of the image, cells "
            "row-major (cell j: row j // cols, column j % cols)",
        }
        if first:  # only a head with unmapped bits writes it: the grid heads read as before
            contract["hash_grid"].update(
                first_bit=first,
                meaning="bits 0 to first_bit - 1 come from the whole image; bit first_bit + i "
                "comes from grid cell i // bits_per_cell, cells row-major (cell j: row "
                "j // cols, column j % cols)",
            )
    if model_card is not None:
        contract["model_card"] = model_card
    reader.validate_contract(contract, where="contract being exported")
    return contract


def model_hash_grid(model) -> tuple[int, int, int, int] | None:
    """The ``hash_grid`` argument for a YNet: (rows, cols, bits_per_cell, first_bit) of
    its codes, None when its bits have no image region (the ``embedding`` head).

    The layout is read where the workstation report reads it
    (:func:`keras_ynet.hash_head.model_hash_grid`), so the two cannot disagree.
    """
    from keras_ynet.hash_head import model_hash_grid as read_grid

    return read_grid(model)


def write_contract(folder: str | Path, contract: dict) -> Path:
    """Records the artifacts' hashes, validates ``contract`` and writes it to
    ``folder/encoder.json`` (atomically).

    ``artifacts`` is filled here from the model files in ``folder`` (so call this after
    they are written): per file its sha256 and its codes identity
    (:func:`deploy.contract.codes_identity`). The device refuses a model whose bytes no
    longer hash to what is recorded, and a file named in ``files`` must exist.
    """
    folder = Path(folder)
    path = folder / reader.CONTRACT_FILE
    contract = dict(contract)
    contract["artifacts"] = {
        kind: {
            "sha256": reader.file_sha256(folder / name),
            "codes": reader.codes_identity(contract["fingerprint"], kind),
        }
        for kind, name in contract["files"].items()
    }
    reader.validate_contract(contract, where=str(path))
    atomic_write_text(path, json.dumps(contract, indent=2) + "\n")
    return path
