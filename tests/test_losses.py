"""Loss terms and coupling, checked against values worked out by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest
from keras import ops

from keras_ynet import losses


def test_circle_loss_by_hand():
    """gamma 32, margin 0.25 (O_p = 1.25, O_n = -0.25, D_p = 0.75, D_n = 0.25).

    Embeddings a = (1, 0), b = (0, 1), c = (1, 0); labels 0, 0, 1.
    Anchor a: positive b, s_p = 0 -> -32 * 1.25 * (0 - 0.75) = 30;
              negative c, s_n = 1 ->  32 * 1.25 * (1 - 0.25) = 30; softplus(60) = 60.
    Anchor b: positive a, s_p = 0 -> 30;
              negative c, s_n = 0 ->  32 * 0.25 * (0 - 0.25) = -2; softplus(28) = 28.
    Anchor c: no positive -> 0, and it is left out of the mean: (60 + 28) / 2 = 44.
    """
    emb = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0]], np.float32)
    labels = np.array([0, 0, 1])
    import keras

    per_anchor = keras.losses.circle(labels, emb, gamma=32.0, margin=0.25)
    np.testing.assert_allclose(np.asarray(per_anchor), [60.0, 28.0, 0.0], rtol=1e-5)
    assert float(losses.circle_loss(labels, emb)) == pytest.approx(44.0, rel=1e-5)


def test_segmentation_loss_uniform_logits_is_log_k():
    logits = np.zeros((2, 4, 4, 3), np.float32)
    masks = np.random.default_rng(0).integers(0, 3, (2, 4, 4))
    assert float(losses.segmentation_loss(masks, logits)) == pytest.approx(math.log(3), rel=1e-5)


def test_quantization_loss_by_hand():
    # (|0.5| - 1)^2 = 0.25, (|-1| - 1)^2 = 0 -> mean 0.125
    assert float(losses.quantization_loss(np.array([[0.5, -1.0]], np.float32))) == 0.125


@pytest.mark.parametrize(
    "mode, expected",
    [
        ("alpha", 0.5 * 4.0 + 0.5 * 2.0),  # |a| L_cls + |1 - a| L_seg, a = 0.5
        ("uncertainty", 4.0 + 2.0),  # exp(-0) L_i + 0
        ("fixed", 2.0 * 4.0 + 0.5 * 2.0),  # weights (2, 0.5)
    ],
)
def test_coupling_at_initialisation(mode, expected):
    coupling = losses.LossCoupling(mode, fixed_weights=(2.0, 0.5))
    assert float(coupling(ops.convert_to_tensor(4.0), ops.convert_to_tensor(2.0))) == pytest.approx(
        expected
    )


def test_coupling_with_one_term_passes_it_through():
    coupling = losses.LossCoupling("uncertainty")
    assert float(coupling(ops.convert_to_tensor(3.0), None)) == 3.0
    assert float(coupling(None, ops.convert_to_tensor(1.5))) == 1.5


def test_unknown_coupling_is_refused():
    with pytest.raises(ValueError, match="coupling"):
        losses.LossCoupling("geometric")


def test_segmentation_loss_leaves_out_pixels_without_a_mask():
    from keras_ynet.dataset import MISSING_MASK

    # Two pixels: one labelled class 0 with logits (log 3, 0) -> p = 3/4; one without a mask.
    logits = np.array([[[[np.log(3.0), 0.0], [5.0, -5.0]]]], np.float32)
    masks = np.array([[[0, MISSING_MASK]]], np.int32)
    assert float(losses.segmentation_loss(masks, logits)) == pytest.approx(-np.log(0.75), rel=1e-5)
    none_known = np.full((1, 1, 2), MISSING_MASK, np.int32)
    assert float(losses.segmentation_loss(none_known, logits)) == 0.0


def test_classification_loss_with_label_smoothing_by_hand():
    # p = softmax([ln 3, 0]) = (0.75, 0.25); smoothing 0.2 over 2 classes: target (0.9, 0.1).
    logits = np.array([[np.log(3.0), 0.0]], np.float32)
    labels = np.array([0])
    plain = float(losses.classification_loss(labels, logits))
    smoothed = float(losses.classification_loss(labels, logits, label_smoothing=0.2))
    assert plain == pytest.approx(-np.log(0.75), abs=1e-6)
    assert smoothed == pytest.approx(-(0.9 * np.log(0.75) + 0.1 * np.log(0.25)), abs=1e-6)
