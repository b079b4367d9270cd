"""The baselines' networks: Y-Net's encoder with a classifier or a hash layer on top.

Every baseline uses :func:`keras_ynet.backbone.encoder_features` with the encoder of the
run settings and the same in-graph rescaling as :class:`keras_ynet.model.YNet`, so the
comparison isolates the training objective and the descriptor, not the encoder.
"""

from __future__ import annotations

import keras
import numpy as np
from keras import layers

from deploy.codes import signs_to_bits
from keras_ynet.backbone import encoder_features
from keras_ynet.fingerprint import RESCALE_LAYER

FEATURES = "features"
LOGITS = "logits"
HASH_DENSE = "hash_dense"


def _encoder(input_shape, config):
    image = keras.Input(shape=tuple(input_shape), name="image")
    x = layers.Rescaling(1.0 / 127.5, offset=-1.0, name=RESCALE_LAYER)(image)
    c5 = encoder_features(
        x, config.backbone, config.stem_filters, config.stage_widths, config.stage_blocks,
        config.stem_stride,
    )[-1]  # fmt: skip
    return image, c5


def build_classifier(input_shape, num_classes: int, config, seed: int = 0) -> keras.Model:
    """Encoder + global average pooling + a linear softmax classifier.

    Args:
        input_shape: (height, width, channels) of the images.
        num_classes: image classes.
        config: a :class:`keras_ynet.run_config.RunConfig` (encoder widths).
        seed: seed of the classifier initialiser.

    Returns:
        A functional model with outputs ``features`` (the last conv map, NHWC, after
        ReLU) and ``logits`` (N, num_classes). The classifier has no bias, so a class
        activation map is exactly ``features @ kernel`` (Zhou et al. 2016).
    """
    image, c5 = _encoder(input_shape, config)
    pooled = layers.GlobalAveragePooling2D(name="gap")(c5)
    logits = layers.Dense(
        num_classes,
        use_bias=False,
        kernel_initializer=keras.initializers.GlorotUniform(seed=seed),
        name="classifier",
    )(pooled)
    features = layers.Identity(name=FEATURES)(c5)
    return keras.Model(image, {FEATURES: features, LOGITS: logits}, name="classifier_net")


def build_hash_network(input_shape, bits: int, config, seed: int = 0) -> keras.Model:
    """Encoder + global average pooling + dense to ``bits`` + tanh: u in (-1, 1).

    The code of an image is sign(u). The dense layer is named ``hash_dense`` so a loss
    can read its kernel (DRH's independence term).
    """
    image, c5 = _encoder(input_shape, config)
    pooled = layers.GlobalAveragePooling2D(name="gap")(c5)
    pre = layers.Dense(
        bits, kernel_initializer=keras.initializers.GlorotUniform(seed=seed), name=HASH_DENSE
    )(pooled)
    u = layers.Activation("tanh", name="hash")(pre)
    return keras.Model(image, u, name="hash_net")


def encode_codes(network: keras.Model, images: np.ndarray, batch_size: int = 32) -> np.ndarray:
    """{0, 1} codes (N, bits) of a hash network: the sign of its tanh output."""
    u = network.predict(np.asarray(images, np.float32), batch_size=batch_size, verbose=0)
    return signs_to_bits(u)
