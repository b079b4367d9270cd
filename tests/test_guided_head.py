"""The ``guided`` hash head: the classification guidance trains the bits themselves."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf
from conftest import TINY

from keras_ynet import losses
from keras_ynet.hash_head import bit_thresholds, fit_bit_thresholds
from keras_ynet.model import YNet
from keras_ynet.ynet_codes import calibrate_bit_thresholds


def images(n=4, seed=0):
    return np.random.default_rng(seed).uniform(0, 255, (n, 64, 64, 1)).astype(np.float32)


def test_guided_head_trains_the_encoder_through_the_bits():
    model = YNet(**TINY, hash_head="guided", variant="no_circle")
    x = tf.constant(images(4))
    with tf.GradientTape() as tape:
        hash_sum = tf.reduce_sum(model(x, training=True)["hash"])
    # No stop-gradient: the bits' loss reaches the R-MAC branch and the encoder.
    assert tape.gradient(hash_sum, model.get_layer("rmac_conv").kernel) is not None
    # The cross-entropy classifier reads the 64 hash values, not the 16-d embedding.
    assert model.classifier.kernel.shape == (64, 2)


def test_guided_loss_terms_read_the_hash():
    model = YNet(**TINY, hash_head="guided", variant="no_circle")
    outputs = model(images(4), training=False)
    y = {"label": np.array([0, 1, 0, 1]), "mask": np.zeros((4, 64, 64), np.int32)}
    terms = model.loss_terms(y, outputs)
    logits = model.classifier(outputs["hash"])
    expected_ce = losses.classification_loss(y["label"], logits)
    np.testing.assert_allclose(float(terms["cls"]), float(expected_ce), rtol=1e-6)
    h = np.asarray(outputs["hash"])
    np.testing.assert_allclose(float(terms["hash"]), np.mean((np.abs(h) - 1) ** 2), rtol=1e-5)


def test_guided_bits_keep_zero_thresholds():
    model = YNet(**TINY, hash_head="guided", variant="no_circle")
    thresholds = calibrate_bit_thresholds(model, images(6))
    assert np.array_equal(thresholds, np.zeros(64, np.float32))
    assert np.array_equal(np.asarray(model.get_layer("hash").thresholds), np.zeros(64))


@pytest.mark.parametrize("head", ["trained", "embedding", "mean"])
def test_other_heads_split_the_training_codes_in_half(head):
    pre = np.array([[0.0, 5.0], [1.0, 6.0], [2.0, 7.0], [3.0, 8.0]], np.float32)
    assert np.array_equal(bit_thresholds(head, pre), fit_bit_thresholds(pre))
    assert np.array_equal(bit_thresholds(head, pre), np.array([1.5, 6.5], np.float32))
