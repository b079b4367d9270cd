"""Running a trained Y-Net over images: outputs, hash bits and bit-threshold fitting."""

from __future__ import annotations

import keras
import numpy as np

from deploy.codes import signs_to_bits
from keras_ynet.hash_head import HASH_GRID_LAYER as HASH_PRE_ACTIVATION
from keras_ynet.model import YNet


def hash_pre_activations(model: keras.Model, images: np.ndarray, batch_size: int = 32):
    """The values entering the bit centring (before thresholds and tanh), (N, bits)."""
    sub = keras.Model(model.input, model.get_layer(HASH_PRE_ACTIVATION).output)
    return sub.predict(np.asarray(images, np.float32), batch_size=batch_size, verbose=0)


def calibrate_bit_thresholds(model: YNet, train_images: np.ndarray, batch_size: int = 32):
    """Fits per-bit thresholds on training images and stores them in the model.

    Afterwards each bit is 1 for half of the training images, so codes are balanced
    (a signed head, ``guided``, keeps zero thresholds: see
    :func:`keras_ynet.hash_head.bit_thresholds`).

    Returns:
        the thresholds (bits,).
    """
    from keras_ynet.hash_head import bit_thresholds

    pre = hash_pre_activations(model, train_images, batch_size)
    thresholds = bit_thresholds(model.hash_head, pre)
    model.get_layer("hash").thresholds.assign(thresholds)
    return thresholds


def encode_bits(model: keras.Model, images: np.ndarray, batch_size: int = 32) -> np.ndarray:
    """{0, 1} hash bits (N, bits): the sign of the ``hash`` output."""
    hash_values = model.predict(np.asarray(images, np.float32), batch_size=batch_size, verbose=0)
    return signs_to_bits(hash_values["hash"])
