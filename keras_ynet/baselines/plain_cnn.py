"""The ``plain_cnn`` row: the small plain classifier a user could train in an afternoon.

Not Y-Net's encoder (every other baseline shares it): four blocks of one 3x3
convolution (16, 32, 64, 128 filters), batch normalisation, ReLU and a 2x2 max-pool,
then global average pooling, a dense layer to ``config.bits`` with tanh, and a linear
softmax classifier; about 106k parameters. Trained with cross-entropy alone and random
horizontal flips of the image (the class of an image does not depend on its side; no
mask is read, so chest masks with left/right labels do not forbid it), at the run's
step budget, with the validation rule of every row. Codes are the sign of the tanh
layer, ranked by Hamming distance.

It measures whether Y-Net's extra branches and larger encoder beat a network two orders
of magnitude smaller that keeps full resolution into its first convolution.
"""

from __future__ import annotations

import dataclasses

import keras
from keras import layers

from keras_ynet.fingerprint import RESCALE_LAYER

BLOCK_FILTERS = (16, 32, 64, 128)


def build_plain_cnn(input_shape, num_classes: int, bits: int, seed: int = 0):
    """(training network: image -> flip -> logits, code network: image -> tanh values)."""
    image = keras.Input(shape=tuple(input_shape), name="image")
    x = layers.Rescaling(1.0 / 127.5, offset=-1.0, name=RESCALE_LAYER)(image)
    for block, filters in enumerate(BLOCK_FILTERS, 1):
        x = layers.Conv2D(
            filters, 3, padding="same", use_bias=False, name=f"block{block}_conv",
            kernel_initializer=keras.initializers.HeNormal(seed=seed + block),
        )(x)  # fmt: skip
        x = layers.BatchNormalization(momentum=0.9, name=f"block{block}_bn")(x)
        x = layers.ReLU(name=f"block{block}_relu")(x)
        x = layers.MaxPooling2D(2, name=f"block{block}_pool")(x)
    pooled = layers.GlobalAveragePooling2D(name="gap")(x)
    u = layers.Dense(
        bits, activation="tanh", name="hash",
        kernel_initializer=keras.initializers.GlorotUniform(seed=seed),
    )(pooled)  # fmt: skip
    code_net = keras.Model(image, u, name="plain_cnn_codes")

    train_image = keras.Input(shape=tuple(input_shape), name="image")
    flipped = layers.RandomFlip("horizontal", seed=seed, name="flip")(train_image)
    logits = layers.Dense(
        num_classes, name="logits", kernel_initializer=keras.initializers.GlorotUniform(seed=seed)
    )(code_net(flipped))
    return keras.Model(train_image, logits, name="plain_cnn"), code_net


def run_plain_cnn(spec, config, out, verbose: int = 0) -> dict:
    """Trains and evaluates the row like ``classifier`` (same loop, checkpoint rule and
    evaluation), with this network in place of the shared encoder."""
    from keras_ynet.baselines.classifier_codes import run_classifier

    # Its flips are in its training graph; Y-Net's augmentation and batch settings do
    # not apply (its run key ignores them: keras_ynet.experiments.runs.PLAIN_CNN_SETTINGS).
    config = dataclasses.replace(config, augment=False, flip=False, balanced_batches=False)

    def networks(spec, config):
        keras.utils.set_random_seed(config.seed)
        shape = (config.image_size, config.image_size, spec.channels)
        return build_plain_cnn(shape, spec.num_classes, config.bits, config.seed)

    return run_classifier(spec, config, out, verbose, networks)
