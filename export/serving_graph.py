"""The export graph: uint8 image -> main branch + hash head -> ``hash`` and ``code``.

Only what encoding needs is exported: the YNet sub-model from the input up to the layer
named ``hash`` (backbone, hash head, bit thresholds). The R-MAC and FPN branches and
the augmentation are left out. Two named outputs:

* ``hash``: float32 (N, bits), the tanh values in (-1, 1); bit = ``hash > 0``;
* ``code``: uint8 (N, bits / 8), those bits packed most-significant-bit first, the layout
  of ``numpy.packbits`` and of :func:`deploy.codes.pack_bits`.

The pixel scaling of the model's ``rescale`` layer (``x * scale + offset`` in float32) is
done here on the image flattened to (N, S * S * C), then the rest of the sub-model runs:
the same float operations, but ONNX Runtime runs an elementwise op on an NHWC tensor
whose last axis is 1 (grey) about 50x slower than on a flat one (1.4 ms of 3 at 256 px).

The packing runs in int32 with int32 gather indices and no reshape or reduction, so no
int64 tensor (not even an ONNX shape or axes operand) appears between ``hash`` and
``code``, and an int8 quantiser leaves it alone (it only rewrites float ops).
"""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf

from deploy.contract import CODE_OUTPUT, HASH_OUTPUT, INPUT_NAME
from deploy.contract import TFLITE_SIGNATURE as SIGNATURE_KEY
from keras_ynet.fingerprint import HASH_LAYER, RESCALE_LAYER, hash_submodel
from keras_ynet.model import YNet

OUTPUT_NAMES = (HASH_OUTPUT, CODE_OUTPUT)
__all__ = [
    "CODE_OUTPUT",
    "HASH_LAYER",
    "HASH_OUTPUT",
    "INPUT_NAME",
    "SIGNATURE_KEY",
    "EncoderModule",
    "hash_submodel",
    "pack_sign_bits",
]


def pack_sign_bits(hash_values: tf.Tensor) -> tf.Tensor:
    """``hash > 0`` packed MSB first into uint8 (N, bits / 8), like ``numpy.packbits``.

    Byte j is ``sum_k bit[8 j + k] * 2 ** (7 - k)``: eight int32 gathers of every eighth
    bit, each scaled by its place value and added. Sums stay below 256, so the final
    cast to uint8 is exact.
    """
    bits = int(hash_values.shape[-1])
    if bits % 8:
        raise ValueError(f"bit length {bits} is not a multiple of 8")
    ones = tf.cast(hash_values > 0, tf.int32, name="bits")
    packed = None
    for k in range(8):
        column = np.arange(k, bits, 8, dtype=np.int32)
        term = tf.gather(ones, tf.constant(column, tf.int32), axis=1) * tf.constant(
            1 << (7 - k), tf.int32
        )
        packed = term if packed is None else packed + term
    return tf.cast(packed, tf.uint8, name=CODE_OUTPUT)


class EncoderModule(tf.Module):
    """The exported encoder as a ``tf.Module`` with one traced function, ``serve``.

    Args:
        model: a YNet with fitted bit thresholds.

    Attributes:
        image_size: side of the square input.
        channels: 1 (grey) or 3 (RGB).
        bits: code length.
        serve: ``tf.function`` taking ``image`` uint8 (None, S, S, C) and returning
            ``{"hash": float32 (N, bits), "code": uint8 (N, bits / 8)}``.

    Example:
        >>> encoder = EncoderModule(load_ynet("run/model.keras"))
        >>> out = encoder.serve(tf.constant(images_uint8))  # {"hash": ..., "code": ...}
    """

    def __init__(self, model: YNet):
        super().__init__(name="ynet_encoder")
        height, width, channels = model.input_shape_
        if height != width:
            raise ValueError(f"the encoder export needs a square input, got {height}x{width}")
        self.image_size = int(height)
        self.channels = int(channels)
        self.bits = int(model.bits)
        rescale = model.get_layer(RESCALE_LAYER)
        if not isinstance(rescale, keras.layers.Rescaling):
            raise ValueError(f"layer {RESCALE_LAYER!r} of the model is not a Rescaling layer")
        # The float32 values Rescaling.call casts them to; numpy scalars become constants
        # inside the traced graph (a tf.constant made here would be a captured input).
        self.scale = np.float32(rescale.scale)
        self.offset = np.float32(rescale.offset)
        # hash_submodel() minus its first layer: starts at the rescaled image.
        self.hash_model = keras.Model(rescale.output, hash_submodel(model).output, name="ynet_core")
        self.serve = tf.function(self._serve, input_signature=[self.input_spec()])

    def input_spec(self) -> tf.TensorSpec:
        return tf.TensorSpec(
            (None, self.image_size, self.image_size, self.channels), tf.uint8, name=INPUT_NAME
        )

    def _serve(self, image):
        size, channels = self.image_size, self.channels
        flat = tf.reshape(tf.cast(image, tf.float32), (-1, size * size * channels))
        scaled = flat * tf.constant(self.scale) + tf.constant(self.offset)
        scaled = tf.reshape(scaled, (-1, size, size, channels))
        hash_values = self.hash_model(scaled, training=False)
        hash_values = tf.identity(hash_values, name=HASH_OUTPUT)
        return {HASH_OUTPUT: hash_values, CODE_OUTPUT: pack_sign_bits(hash_values)}

    def save(self, directory) -> str:
        """Writes a SavedModel whose ``serving_default`` signature is ``serve``."""
        tf.saved_model.save(self, str(directory), signatures={SIGNATURE_KEY: self.serve})
        return str(directory)
