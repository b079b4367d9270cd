"""deploy.runtime: pixel quantisation into a model input and dequantisation of outputs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from deploy.runtime import TensorInfo, dequantise, open_runtime, quantise


def info(dtype, scale=0.0, zero_point=0):
    return TensorInfo("x", (None, 3), np.dtype(dtype), scale, zero_point)


def test_uint8_pixels_into_each_kind_of_input():
    pixels = np.array([[0, 10, 255]], np.uint8)
    # A plain uint8 input, or one quantised with scale 1 / zero point 0, takes them as they are.
    assert quantise(pixels, info(np.uint8)).tolist() == [[0, 10, 255]]
    assert quantise(pixels, info(np.uint8, 1.0, 0)).dtype == np.uint8
    # int8 with scale 0.5, zero point -3: round(v / 0.5) - 3, clipped to [-128, 127].
    q = quantise(pixels, info(np.int8, 0.5, -3))
    assert q.dtype == np.int8 and q.tolist() == [[-3, 17, 127]]
    # A float input gets the pixel values.
    assert quantise(pixels, info(np.float32)).tolist() == [[0.0, 10.0, 255.0]]


def test_dequantise_only_quantised_outputs():
    tanh_int8 = np.array([[-128, 0, 127]], np.int8)
    real = dequantise(tanh_int8, info(np.int8, 1 / 128, 0))
    assert real.dtype == np.float32 and real.tolist() == [[-1.0, 0.0, 0.9921875]]
    code = np.array([[7, 255, 0]], np.uint8)
    assert dequantise(code, info(np.uint8)) is code


def test_unknown_model_suffix_is_refused():
    with pytest.raises(ValueError, match=r"expected \.onnx or \.tflite"):
        open_runtime(Path("model.pb"))
