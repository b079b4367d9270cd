"""The device encoder: image files -> hash bits, with an exported model and its contract.

An exported encoder is a model file (``encoder.onnx``, ``encoder.tflite`` or
``encoder_int8.tflite``) with ``encoder.json`` beside it (:mod:`deploy.contract`). The
contract fixes the input (name, size, channels), the two outputs (``hash`` float32
(N, bits), ``code`` uint8 (N, bits / 8) packed MSB first) and the fingerprint; opening
checks the model file against it. Images are prepared by :mod:`deploy.preprocess`, the
code that prepared them for training, so a PNG gives the bits the Keras model gives.

No TensorFlow: numpy, Pillow, tqdm and one runtime (ONNX Runtime or LiteRT).

Just over 300 lines on purpose: opening (file hash, interface check against the
contract) and encoding share the model and contract of one :class:`Encoder`.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from tqdm import tqdm

from deploy import codes, preprocess
from deploy.contract import (
    CONTRACT_FILE,
    ContractError,
    EncoderContract,
    codes_identity,
    load_contract,
)
from deploy.runtime import ONNX_SUFFIX, TensorInfo, dequantise, open_runtime


class EncoderError(ValueError):
    """A model file and its ``encoder.json`` do not fit together, or cannot be read."""


@dataclass
class EncodeResult:
    """Codes of the images that could be encoded, and why the others could not.

    Attributes:
        ids: ids of the encoded images, in input order (bad files left out).
        paths: their files (None for arrays).
        bits: uint8 (N, bits) of 0/1.
        packed: uint8 (N, bits / 8), bits packed MSB first (:func:`deploy.codes.pack_bits`).
        failures: ``(path, message)`` for every file that was skipped; the message
            names the file.
    """

    ids: list
    paths: list[Path | None]
    bits: np.ndarray
    packed: np.ndarray
    failures: list[tuple[str, str]] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.ids)


class Encoder:
    """An exported Y-Net encoder, checked against its contract. Use :meth:`open`.

    Args:
        model_path: the model file.
        contract: its validated contract.
        runtime: an opened :mod:`deploy.runtime` runtime.

    Attributes:
        image_size, channels, bits, fingerprint, class_names: from the contract.
        kind: the artifact kind of the model file (``onnx``, ``tflite``, ``tflite_int8``).
        codes_id: the identity of its codes (``"<fingerprint>+float"`` or ``+int8``), what
            an index records and checks: int8 codes differ from float codes, so an index
            filled by one kind of model is refused to the other.

    Example:
        >>> encoder = Encoder.open("artifacts/encoder.onnx")
        >>> result = encoder.encode_files(["a.png", "b.png"])
        >>> result.packed.shape
        (2, 8)
    """

    def __init__(self, model_path: Path, contract: EncoderContract, runtime):
        self.model_path = model_path
        self.contract = contract
        self.runtime = runtime
        self.image_size = contract.image_size
        self.channels = contract.channels
        self.bits = contract.bits
        self.fingerprint = contract.fingerprint
        self.class_names = list(contract.class_names)
        kinds = [k for k, name in contract.files.items() if name == model_path.name]
        if not kinds:
            raise EncoderError(f"{model_path.name} is not one of the models {contract.path} names")
        self.kind = kinds[0]
        self.codes_id = codes_identity(contract.fingerprint, self.kind)
        self._check_interface()

    @classmethod
    def open(cls, path: str | os.PathLike, num_threads: int | None = None) -> Encoder:
        """Opens a ``.onnx`` or ``.tflite`` encoder and the ``encoder.json`` beside it.

        Args:
            path: the model file, or an artifact folder (its ONNX model is used).
            num_threads: intra-op threads of the runtime; None lets it choose.

        Raises:
            EncoderError: when a file is missing or unreadable, or the model does not
                match the contract (naming both files).
        """
        path = Path(path).expanduser()
        folder = path if path.is_dir() else path.parent
        try:
            contract = load_contract(folder / CONTRACT_FILE)
            if path.is_dir():
                path = contract.artifact("onnx")
        except ContractError as err:
            raise EncoderError(str(err)) from None
        if not path.is_file():
            raise EncoderError(f"encoder model not found: {path}")
        if path.name not in contract.files.values():
            raise EncoderError(
                f"{path.name} is not one of the models {contract.path} describes "
                f"({', '.join(sorted(contract.files.values()))})"
            )
        content = _checked_bytes(path, contract)
        try:
            runtime = open_runtime(path, num_threads, contract.tflite_signature, content)
        except ValueError as err:  # unknown suffix, unreadable model, missing signature
            raise EncoderError(str(err)) from None
        return cls(path, contract, runtime)

    def _check_interface(self) -> None:
        """Model input/outputs against the contract; one error listing every mismatch."""
        c, rt = self.contract, self.runtime
        side, problems = self.image_size, []
        expected_input = (None, side, side, self.channels)
        if rt.input.name != c.input_name:
            problems.append(f"input is named {rt.input.name!r}, the contract says {c.input_name!r}")
        if rt.input.shape != expected_input:
            problems.append(
                f"input shape {_shape(rt.input.shape)}, expected {_shape(expected_input)}"
            )
        # LiteRT inputs may be quantised or float (the runtime converts the pixels);
        # anywhere else the model must take the contract's uint8 as it is.
        convertible = self.model_path.suffix != ONNX_SUFFIX and (
            rt.input.quantised or np.issubdtype(rt.input.dtype, np.floating)
        )
        if rt.input.dtype != np.uint8 and not convertible:
            problems.append(f"input dtype {rt.input.dtype}, the contract says uint8")
        for name, width, dtype in (
            (c.hash_output, self.bits, None),
            (c.code_output, c.code_bytes, np.uint8),
        ):
            info = rt.outputs.get(name)
            if info is None:
                problems.append(f"no output {name!r} (outputs: {', '.join(sorted(rt.outputs))})")
                continue
            if info.shape != (None, width):
                problems.append(
                    f"output {name!r} shape {_shape(info.shape)}, expected [N, {width}]"
                )
            if dtype is not None and (info.dtype != dtype or info.quantised):
                problems.append(f"output {name!r} is {info.dtype}, expected unquantised {dtype}")
        stored = self._model_fingerprint()
        if stored is not None and stored != c.fingerprint:
            problems.append(f"model fingerprint {stored!r}, the contract says {c.fingerprint!r}")
        if problems:
            raise EncoderError(
                f"{self.model_path} does not match {c.path}:\n  " + "\n  ".join(problems)
            )

    def _model_fingerprint(self) -> str | None:
        """The fingerprint an ONNX model stores in its metadata, if any."""
        session = getattr(self.runtime, "session", None)
        if session is None:
            return None
        return session.get_modelmeta().custom_metadata_map.get("fingerprint")

    # Encoding -------------------------------------------------------------------------

    def prepare(
        self, path: str | os.PathLike, frame: int | None = None, us_region: bool = False
    ) -> np.ndarray:
        """One file -> uint8 (S, S, C), exactly as training prepared it.

        Args:
            frame: 0-based frame of a multi-frame file (DICOM, GIF, TIFF); a multi-frame
                DICOM is refused without one.
            us_region: crop a DICOM to its declared ultrasound region
                (:mod:`deploy.ultrasound`, ``encoder.json``'s ``us_region`` rule).

        Raises:
            preprocess.ImageError: for a missing, unreadable or unsupported file.
        """
        return preprocess.load_prepared(path, self.image_size, self.channels, frame, us_region)

    def encode_arrays(self, images: np.ndarray, batch_size: int = 32) -> EncodeResult:
        """Codes of prepared images: uint8 (N, S, S, C); ids are 0..N-1.

        Raises:
            ValueError: for another dtype or shape.
        """
        images = np.asarray(images)
        expected = (self.image_size, self.image_size, self.channels)
        if images.dtype != np.uint8 or images.ndim != 4 or images.shape[1:] != expected:
            raise ValueError(
                f"encode_arrays takes uint8 (N, {', '.join(map(str, expected))}) images, "
                f"got {images.dtype} {images.shape}; use encode_files for image files"
            )
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        packed = np.empty((len(images), self.contract.code_bytes), np.uint8)
        for start in range(0, len(images), batch_size):
            packed[start : start + batch_size] = self._run(images[start : start + batch_size])
        bits = codes.unpack_bits(packed, self.bits)
        return EncodeResult(list(range(len(images))), [None] * len(images), bits, packed)

    def encode_files(
        self,
        paths: Sequence[str | os.PathLike],
        batch_size: int = 32,
        progress: bool = True,
        ids: Sequence | None = None,
        frames: Sequence[int | None] | None = None,
        us_region: bool = False,
    ) -> EncodeResult:
        """Codes of image files; unreadable files are skipped and listed in ``failures``.

        Args:
            paths: image files (any size and colour; see :mod:`deploy.preprocess`).
            batch_size: images per model call.
            progress: show a progress bar (stderr) when there is more than one image.
            ids: one id per path; default: the paths as strings.
            frames: one frame (or None) per path, see :meth:`prepare`; default: None.
            us_region: see :meth:`prepare`.
        """
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        paths = [Path(p) for p in paths]
        ids = [str(p) for p in paths] if ids is None else list(ids)
        if len(ids) != len(paths):
            raise ValueError(f"got {len(paths)} paths but {len(ids)} ids")
        frames = [None] * len(paths) if frames is None else list(frames)
        if len(frames) != len(paths):
            raise ValueError(f"got {len(paths)} paths but {len(frames)} frames")
        kept: list[int] = []
        failures: list[tuple[str, str]] = []
        chunks: list[np.ndarray] = []
        batch: list[np.ndarray] = []
        show = progress and len(paths) > 1
        with tqdm(total=len(paths), desc="encoding", unit="img", disable=not show) as bar:
            for i, path in enumerate(paths):
                try:
                    batch.append(self.prepare(path, frames[i], us_region))
                    kept.append(i)
                except preprocess.ImageError as err:  # its message names the file
                    failures.append((str(path), str(err)))
                except (ValueError, OSError) as err:
                    failures.append((str(path), f"{path}: {err}"))
                if len(batch) == batch_size or (i == len(paths) - 1 and batch):
                    chunks.append(self._run(np.stack(batch)))
                    batch = []
                    bar.update(i + 1 - bar.n)
            bar.update(len(paths) - bar.n)
        empty = np.empty((0, self.contract.code_bytes), np.uint8)
        packed = np.concatenate(chunks) if chunks else empty
        bits = codes.unpack_bits(packed, self.bits)
        return EncodeResult(
            [ids[i] for i in kept], [paths[i] for i in kept], bits, packed, failures
        )

    def code_file(
        self, path: str | os.PathLike, frame: int | None = None, us_region: bool = False
    ) -> np.ndarray:
        """The packed code uint8 (bits / 8,) of one file, as the model's ``code`` output
        gives it (what an index stores and scans); ``frame``: see :meth:`prepare`.

        Raises:
            preprocess.ImageError: for a missing, unreadable or unsupported file.
        """
        return self._run(self.prepare(path, frame, us_region)[None])[0]

    def encode_file(self, path: str | os.PathLike, frame: int | None = None) -> np.ndarray:
        """The {0, 1} bits (bits,) of one file: :meth:`code_file` unpacked."""
        return codes.unpack_bits(self.code_file(path, frame)[None], self.bits)[0]

    def _run(self, images: np.ndarray) -> np.ndarray:
        """One batch -> packed codes, checked against the signs of ``hash``."""
        out = self.runtime.run(np.ascontiguousarray(images, np.uint8))
        code = np.asarray(out[self.contract.code_output])
        hash_info: TensorInfo = self.runtime.outputs[self.contract.hash_output]
        hash_bits = codes.signs_to_bits(dequantise(out[self.contract.hash_output], hash_info))
        # The model packs `code` from `hash` itself; disagreement means a broken export.
        if not np.array_equal(codes.pack_bits(hash_bits), code):
            raise EncoderError(
                f"{self.model_path}: output {self.contract.code_output!r} is not the packed "
                f"sign bits of {self.contract.hash_output!r}; the export is broken"
            )
        return code


def _checked_bytes(path: Path, contract: EncoderContract) -> bytes:
    """The model file's bytes, refused unless they hash to what the contract recorded.

    The bytes that were hashed are the bytes the runtime loads (no second read), so a
    file replaced between the check and the load cannot slip through.
    """
    kind = next(k for k, name in contract.files.items() if name == path.name)
    recorded = contract.artifacts.get(kind)
    if recorded is None:
        raise EncoderError(
            f"{contract.path} records no sha256 for {path.name} (exported before model files "
            "were hashed): re-export the model"
        )
    try:
        content = path.read_bytes()
    except OSError as err:
        raise EncoderError(f"cannot read encoder model {path}: {err}") from None
    actual = hashlib.sha256(content).hexdigest()
    if actual != recorded["sha256"]:
        raise EncoderError(
            f"{path} was altered or replaced: its sha256 {actual[:16]}... is not the "
            f"{recorded['sha256'][:16]}... that {contract.path} records; use the exported file "
            "or re-export"
        )
    return content


def _shape(shape) -> str:
    return "[" + ", ".join("N" if d is None else str(d) for d in shape) + "]"
