"""``encoder.onnx``: the export graph converted with tf2onnx, names and provenance checked.

The graph has one input ``image`` (uint8, [batch, S, S, C]) and two outputs ``hash``
(float32, [batch, bits]) and ``code`` (uint8, [batch, bits / 8]); the batch dimension is
the symbolic ``batch``. Provenance goes into ``metadata_props``.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx

from deploy.atomic import atomic_write_bytes
from deploy.contract import CODE_OUTPUT, HASH_OUTPUT, INPUT_NAME
from export.serving_graph import EncoderModule

OPSET = 17
BATCH_DIM = "batch"


class OnnxExportError(RuntimeError):
    """The converted graph does not have the interface the contract promises."""


def convert_to_onnx(encoder: EncoderModule) -> onnx.ModelProto:
    """tf2onnx conversion of ``encoder.serve`` (variables frozen by tf2onnx), opset 17."""
    import tf2onnx  # heavy import, only needed here

    model_proto, _ = tf2onnx.convert.from_function(
        encoder.serve, input_signature=[encoder.input_spec()], opset=OPSET
    )
    return model_proto


def name_batch_dimension(model: onnx.ModelProto) -> None:
    """Gives the dynamic first dimension of every graph input/output the name ``batch``."""
    for value in [*model.graph.input, *model.graph.output]:
        dim = value.type.tensor_type.shape.dim[0]
        if dim.HasField("dim_value"):
            raise OnnxExportError(f"{value.name}: batch dimension is fixed at {dim.dim_value}")
        dim.dim_param = BATCH_DIM


def check_interface(model: onnx.ModelProto, image_size: int, channels: int, bits: int) -> None:
    """Raises :class:`OnnxExportError` unless inputs/outputs are exactly as promised."""
    expected_in = {
        INPUT_NAME: (onnx.TensorProto.UINT8, [BATCH_DIM, image_size, image_size, channels])
    }
    expected_out = {
        HASH_OUTPUT: (onnx.TensorProto.FLOAT, [BATCH_DIM, bits]),
        CODE_OUTPUT: (onnx.TensorProto.UINT8, [BATCH_DIM, bits // 8]),
    }
    for kind, values, expected in (
        ("input", model.graph.input, expected_in),
        ("output", model.graph.output, expected_out),
    ):
        got = {v.name: _type_and_shape(v) for v in values}
        if got != expected:
            raise OnnxExportError(f"ONNX graph {kind}s are {got}, expected {expected}")


def packing_path_dtypes(model: onnx.ModelProto) -> dict[str, str]:
    """Every tensor the ``code`` output depends on after ``hash``, with its element type.

    Walks the graph backwards from ``code`` and stops at ``hash``; constants (initializers
    and Constant nodes) on the way are included, so shape or axes operands count too.

    Returns:
        {tensor name: ONNX element type name, e.g. "INT32"}.
    """
    inferred = onnx.shape_inference.infer_shapes(model)
    dtypes = {v.name: v.type.tensor_type.elem_type for v in inferred.graph.value_info}
    dtypes.update({v.name: v.type.tensor_type.elem_type for v in inferred.graph.output})
    dtypes.update({v.name: v.type.tensor_type.elem_type for v in inferred.graph.input})
    dtypes.update({t.name: t.data_type for t in inferred.graph.initializer})
    producer = {out: node for node in inferred.graph.node for out in node.output}
    for node in inferred.graph.node:
        if node.op_type == "Constant":
            for attr in node.attribute:
                if attr.name == "value":
                    dtypes[node.output[0]] = attr.t.data_type
    seen, stack = {}, [CODE_OUTPUT]
    while stack:
        name = stack.pop()
        if name in seen or not name:
            continue
        seen[name] = onnx.TensorProto.DataType.Name(dtypes.get(name, 0))
        if name == HASH_OUTPUT:
            continue
        node = producer.get(name)
        if node is not None:
            stack.extend(node.input)
    if HASH_OUTPUT not in seen:
        raise OnnxExportError("the code output does not depend on the hash output")
    return seen


def export_onnx(encoder: EncoderModule, path: str | Path, metadata: dict[str, str]) -> Path:
    """Converts ``encoder`` and writes it to ``path`` with ``metadata`` as metadata_props.

    Checks the interface (names, dtypes, symbolic batch) and that no int64 tensor lies on
    the packing path, then runs the ONNX checker.
    """
    path = Path(path)
    model = convert_to_onnx(encoder)
    name_batch_dimension(model)
    check_interface(model, encoder.image_size, encoder.channels, encoder.bits)
    int64 = [n for n, t in packing_path_dtypes(model).items() if t == "INT64"]
    if int64:
        raise OnnxExportError(f"int64 tensors on the hash -> code path: {int64}")
    model.doc_string = "Y-Net encoder: uint8 image -> hash (tanh) and code (packed sign bits)"
    del model.metadata_props[:]
    for key, value in sorted(metadata.items()):
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value if isinstance(value, str) else json.dumps(value)
    onnx.checker.check_model(model, full_check=True)
    atomic_write_bytes(path, model.SerializeToString())
    return path


def read_metadata(path: str | Path) -> dict[str, str]:
    """The ``metadata_props`` of an ONNX file, as a dict."""
    model = onnx.load(str(path), load_external_data=False)
    return {p.key: p.value for p in model.metadata_props}


def run_onnx(path: str | Path, images: np.ndarray, batch_size: int = 32) -> dict[str, np.ndarray]:
    """Runs ``encoder.onnx`` on uint8 images (N, S, S, C): {"hash": ..., "code": ...}."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    names = [HASH_OUTPUT, CODE_OUTPUT]
    parts = [
        session.run(names, {INPUT_NAME: images[i : i + batch_size]})
        for i in range(0, len(images), batch_size)
    ]
    return {name: np.concatenate([p[k] for p in parts]) for k, name in enumerate(names)}


def _type_and_shape(value: onnx.ValueInfoProto):
    tensor = value.type.tensor_type
    dims = [d.dim_param if d.HasField("dim_param") else d.dim_value for d in tensor.shape.dim]
    return tensor.elem_type, dims
