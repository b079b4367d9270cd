"""The two inference runtimes behind :class:`deploy.encoder.Encoder`: ONNX Runtime, LiteRT.

Both are wrapped to one small interface, so the encoder never branches on the runtime:

* ``input``: :class:`TensorInfo` of the one input;
* ``outputs``: ``{name: TensorInfo}``;
* ``run(images)``: ``{name: array}`` for a batch, as the model stores them; the caller
  passes the outputs that stand for real numbers through :func:`dequantise`.

Names come from the model's own interface (ONNX graph names; the LiteRT signature), never
from generated tensor names. Only numpy and the two runtimes are imported.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from deploy.contract import TFLITE_SIGNATURE

ONNX_SUFFIX = ".onnx"
TFLITE_SUFFIX = ".tflite"
_ONNX_DTYPES = {
    "tensor(uint8)": np.uint8, "tensor(int8)": np.int8, "tensor(float)": np.float32,
    "tensor(int32)": np.int32, "tensor(int64)": np.int64, "tensor(float16)": np.float16,
}  # fmt: skip


@dataclass(frozen=True)
class TensorInfo:
    """A model input or output as the runtime declares it.

    Attributes:
        name: the interface name (``image``, ``hash``, ``code``).
        shape: dimensions, None where dynamic (the batch).
        dtype: the numpy dtype the runtime stores.
        scale, zero_point: affine quantisation (real = scale * (q - zero_point));
            scale 0 means not quantised.
    """

    name: str
    shape: tuple[int | None, ...]
    dtype: np.dtype
    scale: float = 0.0
    zero_point: int = 0

    @property
    def quantised(self) -> bool:
        return self.scale != 0.0


def open_runtime(
    path: Path,
    num_threads: int | None = None,
    signature: str = TFLITE_SIGNATURE,
    content: bytes | None = None,
):
    """An :class:`OnnxRuntime` or :class:`LiteRtRuntime`, chosen by the file suffix."""
    suffix = path.suffix.lower()
    if suffix == ONNX_SUFFIX:
        return OnnxRuntime(path, num_threads, content)
    if suffix == TFLITE_SUFFIX:
        return LiteRtRuntime(path, num_threads, signature, content)
    raise ValueError(f"{path}: unknown model type {path.suffix!r}; expected .onnx or .tflite")


class OnnxRuntime:
    """An ONNX model on ONNX Runtime's CPU execution provider.

    Args:
        path: the ``.onnx`` file.
        num_threads: intra-op threads; None lets ONNX Runtime choose (all cores).
        content: the file's bytes, already read (and checked) by the caller; None reads
            ``path``.
    """

    def __init__(self, path: Path, num_threads: int | None = None, content: bytes | None = None):
        import onnxruntime as ort  # imported here: a LiteRT-only host need not have it

        options = ort.SessionOptions()
        if num_threads is not None:
            options.intra_op_num_threads = int(num_threads)
        options.inter_op_num_threads = 1
        try:
            self.session = ort.InferenceSession(
                str(path) if content is None else content,
                options,
                providers=["CPUExecutionProvider"],
            )
        except Exception as err:  # onnxruntime raises its own exception types
            raise ValueError(f"{path}: cannot load the ONNX model: {err}") from err
        inputs = [self._info(a) for a in self.session.get_inputs()]
        if len(inputs) != 1:
            raise ValueError(f"{path}: expected one input, the model has {len(inputs)}")
        self.input = inputs[0]
        self.outputs = {a.name: self._info(a) for a in self.session.get_outputs()}

    @staticmethod
    def _info(arg) -> TensorInfo:
        shape = tuple(d if isinstance(d, int) else None for d in arg.shape)
        return TensorInfo(arg.name, shape, np.dtype(_ONNX_DTYPES.get(arg.type, np.void)))

    def run(self, images: np.ndarray) -> dict[str, np.ndarray]:
        names = list(self.outputs)
        values = self.session.run(names, {self.input.name: images.astype(self.input.dtype)})
        return dict(zip(names, values, strict=True))


class LiteRtRuntime:
    """A ``.tflite`` model on the LiteRT interpreter, run through a named signature.

    Float and int8 models alike: a quantised input is quantised from the uint8 pixels
    (a uint8 input with scale 1 and zero point 0 is fed as it is). Outputs come back as
    stored; :func:`dequantise` turns a quantised ``hash`` into float32.

    Args:
        path: the ``.tflite`` file.
        num_threads: interpreter threads; None lets LiteRT choose.
        signature: the signature key (``encoder.json``: ``tflite_signature``).
        content: the file's bytes, already read (and checked) by the caller; None reads
            ``path``.
    """

    def __init__(
        self,
        path: Path,
        num_threads: int | None = None,
        signature: str = TFLITE_SIGNATURE,
        content: bytes | None = None,
    ):
        from ai_edge_litert.interpreter import Interpreter

        try:
            source = {"model_path": str(path)} if content is None else {"model_content": content}
            self.interpreter = Interpreter(**source, num_threads=num_threads)
        except Exception as err:  # LiteRT raises ValueError / RuntimeError
            raise ValueError(f"{path}: cannot load the LiteRT model: {err}") from err
        signatures = self.interpreter.get_signature_list()
        if signature not in signatures:
            raise ValueError(
                f"{path}: no signature {signature!r} (found {sorted(signatures) or 'none'})"
            )
        self.signature = signature
        self.runner = self.interpreter.get_signature_runner(self.signature)
        # One interpreter holds one set of input/output tensors: calls from several
        # threads (the search service) would overwrite each other's, so they take turns.
        self._running = threading.Lock()
        inputs = [self._info(n, d) for n, d in self.runner.get_input_details().items()]
        if len(inputs) != 1:
            raise ValueError(f"{path}: expected one input, the model has {len(inputs)}")
        self.input = inputs[0]
        self.outputs = {n: self._info(n, d) for n, d in self.runner.get_output_details().items()}

    @staticmethod
    def _info(name: str, details: dict) -> TensorInfo:
        signature = details.get("shape_signature", details["shape"])
        shape = tuple(int(d) if d >= 0 else None for d in signature)
        scale, zero_point = details.get("quantization", (0.0, 0))
        return TensorInfo(name, shape, np.dtype(details["dtype"]), float(scale), int(zero_point))

    def run(self, images: np.ndarray) -> dict[str, np.ndarray]:
        with self._running:
            out = self.runner(**{self.input.name: quantise(images, self.input)})
            return {name: np.array(out[name]) for name in self.outputs}


def quantise(images: np.ndarray, info: TensorInfo) -> np.ndarray:
    """uint8 pixels -> the input's dtype: ``round(v / scale) + zero_point``, clipped.

    A float input gets the pixel values; an integer input that is not quantised, or
    quantised with scale 1 and zero point 0, gets them as they are.
    """
    if np.issubdtype(info.dtype, np.floating):
        return images.astype(info.dtype)
    if not info.quantised or (info.scale == 1.0 and info.zero_point == 0):
        return images.astype(info.dtype)
    limits = np.iinfo(info.dtype)
    q = np.rint(images.astype(np.float32) / info.scale) + info.zero_point
    return np.clip(q, limits.min, limits.max).astype(info.dtype)


def dequantise(values: np.ndarray, info: TensorInfo) -> np.ndarray:
    """Quantised integers -> float32 reals (``scale * (q - zero_point)``); else as is."""
    if not info.quantised:
        return values
    return ((values.astype(np.float32) - info.zero_point) * info.scale).astype(np.float32)
