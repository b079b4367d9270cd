"""The encoder contract (``encoder.json``): what a host needs to run an exported encoder.

Written by ``python -m export`` beside ``encoder.onnx`` and the ``.tflite`` files, read by
the device runtime and by hosts in other languages. Only json and the standard library
are imported here, so the device reads it without TensorFlow.

Longer than 300 lines on purpose: the format's example, its constants and the one
validator every host's reader relies on stay together, so a field is added in one file.

Format version 1 (see ``export/README.md`` for the meaning of each field)::

    {
      "format_version": 1,
      "input": {"name": "image", "shape": [null, S, S, C], "dtype": "uint8",
                "layout": "NHWC", "channels": C, "colour": "grey" | "rgb",
                "value_range": [0, 255]},
      "preprocessing": {"order": ["decode", "resize", "channels"],
                        "decode": {...}, "resize": {...}, "channels": {...}},
      "outputs": {"hash": {"name", "shape": [null, bits], "dtype": "float32",
                           "value_range": [-1, 1]},
                  "code": {"name", "shape": [null, bits / 8], "dtype": "uint8"}},
      "bits": 64, "bit_rule": "hash > 0 -> 1", "bit_order": "msb_first",
      "fingerprint": "...", "class_names": [...],
      "files": {"onnx": "encoder.onnx", "tflite": "encoder.tflite",
                "tflite_int8": "encoder_int8.tflite"},
      "tflite_signature": "serving_default",
      "hash_grid": {"rows": h, "cols": w, "bits_per_cell": c, "first_bit": f},
      "artifacts": {"onnx": {"sha256": "...", "codes": "<fingerprint>+float"}, ...}
    }

``artifacts`` says, per model file, what exactly was exported: the sha256 of the file's
bytes and the identity of the codes it makes (:func:`codes_identity`). The device
encoder hashes the file it loads and refuses it when the hash differs (an altered or
swapped file), and an index records the codes identity of the encoder that filled it,
so int8 codes never mix with float codes (:mod:`deploy.encoder`). Contracts written
before it was recorded lack it; the device refuses their models (re-export).

``preprocessing.decode.dicom`` spells out the DICOM rules of :mod:`deploy.dicom` (grey
LUTs, YBR and palette colour to RGB, compressed syntaxes, the frame of a cine loop) and
``us_region`` the ultrasound region rule of :mod:`deploy.ultrasound`, applied only when
the host is asked to (``--us-region``; an index records it per entry). Prose for hosts
in other languages; the device reads them from the modules, not from here.

``model_card`` (optional) says what the model is for and what it was measured on; see
:data:`MODEL_CARD_KEYS`. Nothing a host runs depends on it.

``hash_grid`` (optional: contracts exported before it was recorded lack it) says where
each bit comes from: the hash head pools the core node to an h x w grid of image regions
and gives each cell c bits; bit f + i belongs to cell i // c, cells in row-major order
(cell j is row j // w, column j % w), so f + h * w * c = bits. ``first_bit`` f is
optional (0 when absent, as the grid heads write it); a head that reads its first f bits
from the whole image (``combined``) records it. The search report draws per-cell bit
agreement from it (:mod:`deploy.report`).

Longer than 300 lines on purpose: it is the one home of the contract's names and the
one validator of its format, field by field; export writes through it and every host
reads through it, so the names and their checks stay side by side.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

FORMAT_VERSION = 1
CONTRACT_FILE = "encoder.json"
# The interface names, defined here only: export names the model's input and outputs
# with them (export/serving_graph.py) and every host looks them up in encoder.json.
INPUT_NAME = "image"
HASH_OUTPUT = "hash"
CODE_OUTPUT = "code"
TFLITE_SIGNATURE = "serving_default"
BIT_RULE = "hash > 0 -> 1"
BIT_ORDER = "msb_first"
VALID_BITS = (32, 64, 128, 256)  # the code lengths; the one definition
FILE_KEYS = ("onnx", "tflite", "tflite_int8")
COLOUR = {1: "grey", 3: "rgb"}
HASH_GRID_KEYS = ("rows", "cols", "bits_per_cell")
# Optional in hash_grid (0 when absent): the bits before it come from the whole image.
HASH_GRID_FIRST_BIT = "first_bit"
# What every model card holds (export/model_card.py writes it); all but fingerprint text
# or objects for people, checked only for presence and the fingerprint.
MODEL_CARD_KEYS = (
    "intended_use", "not_intended_for", "training_data", "retrieval", "export_date",
    "fingerprint",
)  # fmt: skip
# Which codes a model file makes. Both float exports must give the Keras bits on every
# parity image or the export fails, so they share one identity; the int8 model is only
# measured (its bits differ), so its codes are another kind and never share an index.
CODE_KINDS = {"onnx": "float", "tflite": "float", "tflite_int8": "int8"}


def codes_identity(fingerprint: str, kind: str) -> str:
    """What an index records about the codes of the ``kind`` artifact of an export:
    the Keras model fingerprint and the number kind (``"<fingerprint>+float"``)."""
    return f"{fingerprint}+{CODE_KINDS[kind]}"


def file_sha256(path: str | Path) -> str:
    """sha256 (hex) of a file's bytes, read in chunks."""
    import hashlib

    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


class ContractError(ValueError):
    """An ``encoder.json`` is missing, unreadable or inconsistent."""


@dataclass(frozen=True)
class EncoderContract:
    """A validated ``encoder.json``.

    Attributes:
        path: the file it was read from (None when built in memory).
        image_size: side of the square model input.
        channels: 1 (grey) or 3 (RGB).
        bits: code length; ``code`` has ``bits // 8`` bytes.
        fingerprint: the encoder fingerprint (see ``keras_ynet.fingerprint``).
        class_names: image class names, index order.
        files: artifact file names by kind (``onnx``, ``tflite``, ``tflite_int8``); a kind
            that was not exported is absent.
        input_name, hash_output, code_output: the interface names.
        tflite_signature: the LiteRT signature key.
        hash_grid: (rows, cols, bits_per_cell, first_bit) of the bit layout, or None
            when the contract does not record it (exported before it was, or a head
            whose bits have no image region).
        artifacts: per artifact kind, ``{"sha256": hex, "codes": identity}``; empty for
            a contract written before files were hashed.
        raw: the whole JSON object.
    """

    path: Path | None
    image_size: int
    channels: int
    bits: int
    fingerprint: str
    class_names: list[str]
    files: dict[str, str]
    input_name: str = INPUT_NAME
    hash_output: str = HASH_OUTPUT
    code_output: str = CODE_OUTPUT
    tflite_signature: str = TFLITE_SIGNATURE
    hash_grid: tuple[int, int, int, int] | None = None
    artifacts: dict[str, dict[str, str]] = field(default_factory=dict)
    raw: dict = field(default_factory=dict, repr=False)

    @property
    def code_bytes(self) -> int:
        return self.bits // 8

    def artifact(self, kind: str) -> Path:
        """Absolute path of an artifact named in ``files``, beside the contract file."""
        if kind not in self.files:
            where = self.path or "the contract"
            raise ContractError(f"{where}: no {kind!r} file (has {sorted(self.files)})")
        folder = self.path.parent if self.path is not None else Path(".")
        return folder / self.files[kind]


def load_contract(path: str | Path, check_files: bool = False) -> EncoderContract:
    """Reads and validates an ``encoder.json``.

    Args:
        path: the contract file, or the artifact folder holding ``encoder.json``.
        check_files: also require every file named in ``files`` to exist beside it.

    Raises:
        ContractError: naming the file and every problem found.
    """
    path = Path(path)
    if path.is_dir():
        path = path / CONTRACT_FILE
    if not path.is_file():
        raise ContractError(f"{path}: encoder contract not found")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as e:
        raise ContractError(f"{path}: not a readable JSON file: {e}") from None
    contract = validate_contract(data, where=str(path))
    contract = EncoderContract(**{**contract.__dict__, "path": path})
    if check_files:
        missing = [name for name in contract.files.values() if not (path.parent / name).is_file()]
        if missing:
            raise ContractError(f"{path}: artifact file(s) missing beside it: {missing}")
    return contract


def validate_contract(data, where: str = "encoder contract") -> EncoderContract:
    """Checks a contract object (parsed JSON) and returns it typed.

    Raises:
        ContractError: ``where`` followed by every problem found, one per line.
    """
    problems: list[str] = []
    if not isinstance(data, dict):
        raise ContractError(f"{where}: expected a JSON object, got {type(data).__name__}")
    version = data.get("format_version")
    if version != FORMAT_VERSION:
        raise ContractError(
            f"{where}: format_version {version!r} is not supported (this reader: {FORMAT_VERSION})"
        )

    def need(obj, key, kind, ctx):
        value = obj.get(key) if isinstance(obj, dict) else None
        if not isinstance(value, kind) or isinstance(value, bool) and kind is not bool:
            problems.append(
                f"{ctx}{key}: expected {getattr(kind, '__name__', kind)}, got {value!r}"
            )
            return None
        return value

    bits = need(data, "bits", int, "")
    if bits is not None and bits not in VALID_BITS:
        problems.append(f"bits: {bits} is not one of {VALID_BITS}")
        bits = None
    inp = need(data, "input", dict, "") or {}
    shape = need(inp, "shape", list, "input.") or []
    channels = need(inp, "channels", int, "input.")
    size = None
    if len(shape) != 4 or shape[0] is not None or shape[1] != shape[2]:
        problems.append(f"input.shape: expected [null, S, S, C], got {shape}")
    else:
        size = shape[1]
        if not isinstance(size, int) or size < 1:
            problems.append(f"input.shape: image side must be a positive integer, got {size!r}")
        if shape[3] != channels:
            problems.append(f"input.shape: {shape[3]} channels but input.channels is {channels}")
    if channels not in COLOUR:
        problems.append(f"input.channels: must be 1 or 3, got {channels!r}")
    elif inp.get("colour") != COLOUR[channels]:
        problems.append(f"input.colour: expected {COLOUR[channels]!r}, got {inp.get('colour')!r}")
    for key, expected in (("dtype", "uint8"), ("layout", "NHWC")):
        if inp.get(key) != expected:
            problems.append(f"input.{key}: expected {expected!r}, got {inp.get(key)!r}")
    input_name = need(inp, "name", str, "input.")

    resize = (data.get("preprocessing") or {}).get("resize")
    if not isinstance(resize, dict):
        problems.append("preprocessing.resize: missing")
    else:
        if resize.get("method") != "bilinear":
            problems.append(
                f"preprocessing.resize.method: expected 'bilinear', got {resize.get('method')!r}"
            )
        if size is not None and resize.get("size") != [size, size]:
            problems.append(
                f"preprocessing.resize.size: expected {[size, size]}, got {resize.get('size')!r}"
            )

    outputs = need(data, "outputs", dict, "") or {}
    names = {}
    for key, dtype, width in (("hash", "float32", bits), ("code", "uint8", bits and bits // 8)):
        out = outputs.get(key)
        if not isinstance(out, dict):
            problems.append(f"outputs.{key}: missing")
            continue
        names[key] = need(out, "name", str, f"outputs.{key}.")
        if out.get("dtype") != dtype:
            problems.append(f"outputs.{key}.dtype: expected {dtype!r}, got {out.get('dtype')!r}")
        if width is not None and out.get("shape") != [None, width]:
            problems.append(
                f"outputs.{key}.shape: expected [null, {width}], got {out.get('shape')!r}"
            )

    if data.get("bit_rule") != BIT_RULE:
        problems.append(f"bit_rule: expected {BIT_RULE!r}, got {data.get('bit_rule')!r}")
    if data.get("bit_order") != BIT_ORDER:
        problems.append(f"bit_order: expected {BIT_ORDER!r}, got {data.get('bit_order')!r}")
    fingerprint = need(data, "fingerprint", str, "")
    class_names = need(data, "class_names", list, "")
    if class_names is not None and not all(isinstance(c, str) for c in class_names):
        problems.append("class_names: every name must be a string")
    files = need(data, "files", dict, "") or {}
    for kind, name in files.items():
        if kind not in FILE_KEYS:
            problems.append(f"files.{kind}: unknown artifact kind (known: {', '.join(FILE_KEYS)})")
        elif (
            not isinstance(name, str)
            or not name
            or "/" in name
            or "\\" in name
            or name in (".", "..")
        ):
            problems.append(
                f"files.{kind}: must be a plain file name beside the contract, got {name!r}"
            )
    signature = data.get("tflite_signature", TFLITE_SIGNATURE)
    if not isinstance(signature, str):
        problems.append(f"tflite_signature: expected str, got {signature!r}")

    hash_grid = _hash_grid(data.get("hash_grid"), bits, problems)
    artifacts = _artifacts(data.get("artifacts"), files, fingerprint, problems)
    _model_card(data.get("model_card"), fingerprint, problems)

    if problems:
        raise ContractError(f"{where}: invalid encoder contract:\n  " + "\n  ".join(problems))
    return EncoderContract(
        path=None,
        image_size=size,
        channels=channels,
        bits=bits,
        fingerprint=fingerprint,
        class_names=list(class_names),
        files=dict(files),
        input_name=input_name,
        hash_output=names["hash"],
        code_output=names["code"],
        tflite_signature=signature,
        hash_grid=hash_grid,
        artifacts=artifacts,
        raw=data,
    )


def _hash_grid(grid, bits: int | None, problems: list[str]) -> tuple[int, int, int, int] | None:
    """The optional ``hash_grid`` as (rows, cols, bits_per_cell, first_bit); problems
    are appended."""
    if grid is None:
        return None
    if not isinstance(grid, dict):
        problems.append(f"hash_grid: expected an object, got {grid!r}")
        return None
    values = tuple(grid.get(key) for key in HASH_GRID_KEYS)
    if not all(isinstance(v, int) and not isinstance(v, bool) and v >= 1 for v in values):
        problems.append(f"hash_grid: {', '.join(HASH_GRID_KEYS)} must be positive integers")
        return None
    first = grid.get(HASH_GRID_FIRST_BIT, 0)
    if not isinstance(first, int) or isinstance(first, bool) or first < 0:
        problems.append(f"hash_grid: {HASH_GRID_FIRST_BIT} must be an integer >= 0, got {first!r}")
        return None
    if bits is not None and first + values[0] * values[1] * values[2] != bits:
        problems.append(
            f"hash_grid: {first} unmapped bits + {values[0]} x {values[1]} cells x "
            f"{values[2]} bits per cell is not the {bits} bits"
        )
        return None
    return (*values, first)


def _model_card(card, fingerprint: str | None, problems: list[str]) -> None:
    """The optional ``model_card``: every key of :data:`MODEL_CARD_KEYS`, the fingerprint
    the contract's own (a card copied from another export would describe another model)."""
    if card is None:
        return
    if not isinstance(card, dict):
        problems.append(f"model_card: expected an object, got {card!r}")
        return
    missing = [key for key in MODEL_CARD_KEYS if key not in card]
    if missing:
        problems.append(f"model_card: missing {', '.join(missing)}")
    elif card["fingerprint"] != fingerprint:
        problems.append(
            f"model_card.fingerprint: {card['fingerprint']!r} is not the contract's {fingerprint!r}"
        )


def _artifacts(value, files: dict, fingerprint: str | None, problems: list[str]) -> dict:
    """The optional ``artifacts``: one ``{"sha256", "codes"}`` per kind in ``files``."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        problems.append(f"artifacts: expected an object, got {value!r}")
        return {}
    out = {}
    for kind, entry in value.items():
        if kind not in files or kind not in CODE_KINDS:
            problems.append(f"artifacts.{kind}: not an artifact named in files")
            continue
        sha = entry.get("sha256") if isinstance(entry, dict) else None
        if not isinstance(sha, str) or len(sha) != 64 or set(sha) - set("0123456789abcdef"):
            problems.append(f"artifacts.{kind}.sha256: expected 64 hex digits, got {sha!r}")
            continue
        want = codes_identity(fingerprint, kind) if fingerprint is not None else None
        if entry.get("codes") != want:
            problems.append(
                f"artifacts.{kind}.codes: expected {want!r}, got {entry.get('codes')!r}"
            )
            continue
        out[kind] = {"sha256": sha, "codes": want}
    return out
