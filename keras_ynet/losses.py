"""Loss terms of Y-Net and the coupling that unifies them.

Losses are pure functions (TensorFlow Similarity style); :class:`LossCoupling` is the
small layer that owns the learnable weights of the coupled loss.
"""

from __future__ import annotations

import keras
from keras import ops

from keras_ynet.layers import PACKAGE
from keras_ynet.masks import MISSING_MASK
from keras_ynet.run_config import COUPLINGS

CIRCLE_GAMMA = 32.0
CIRCLE_MARGIN = 0.25


def circle_loss(labels, embeddings, gamma: float = CIRCLE_GAMMA, margin: float = CIRCLE_MARGIN):
    """Circle loss (Sun et al. 2020) on L2-normalised embeddings, positives = same label.

    Uses ``keras.losses.Circle`` (cosine similarity); the mean is taken over the
    anchors that have at least one positive and one negative in the batch.
    """
    per_anchor = keras.losses.circle(
        ops.cast(labels, "int32"), embeddings, gamma=gamma, margin=margin
    )
    active = ops.cast(per_anchor > 0, per_anchor.dtype)
    return ops.sum(per_anchor) / ops.maximum(ops.sum(active), 1.0)


def segmentation_loss(masks, logits, ignore_value: int = MISSING_MASK):
    """Pixel-wise softmax cross-entropy over the mask classes, mean over the pixels that
    have a label (pixels equal to ``ignore_value``, rows without a mask, are left out;
    a batch with none gives 0)."""
    masks = ops.cast(masks, "int32")
    known = ops.not_equal(masks, ignore_value)
    per_pixel = keras.losses.sparse_categorical_crossentropy(
        ops.where(known, masks, 0), logits, from_logits=True
    )
    weight = ops.cast(known, per_pixel.dtype)
    return ops.sum(per_pixel * weight) / ops.maximum(ops.sum(weight), 1.0)


def classification_loss(labels, logits, label_smoothing: float = 0.0):
    """Softmax cross-entropy (the ``no_circle`` guidance).

    ``label_smoothing`` s > 0 trains toward (1 - s) on the true class and s / C spread
    over all C classes, so the logits stay finite once a small training set is fitted
    and the images of one class are not pulled onto one point.
    """
    labels = ops.cast(labels, "int32")
    if not label_smoothing:
        return ops.mean(
            keras.losses.sparse_categorical_crossentropy(labels, logits, from_logits=True)
        )
    one_hot = ops.one_hot(labels, ops.shape(logits)[-1], dtype=logits.dtype)
    return ops.mean(
        keras.losses.categorical_crossentropy(
            one_hot, logits, from_logits=True, label_smoothing=label_smoothing
        )
    )


def quantization_loss(hash_values):
    """Pushes tanh hash values toward +-1: mean of (|h| - 1)^2."""
    return ops.mean(ops.square(ops.abs(hash_values) - 1.0))


@keras.saving.register_keras_serializable(package=PACKAGE)
class LossCoupling(keras.layers.Layer):
    """Unifies the classification and segmentation losses.

    Modes:
        ``alpha``: ``|a| * L_cls + |1 - a| * L_seg`` with a trainable scalar a (init
            0.5), as in the authors' code. It can drift toward the smaller loss.
        ``uncertainty``: Kendall et al. 2018, ``sum_i exp(-s_i) * L_i + s_i`` with
            trainable log-variances s_i (init 0).
        ``fixed``: ``w_cls * L_cls + w_seg * L_seg`` with constant weights.

    Args:
        mode: one of ``COUPLINGS``.
        fixed_weights: (w_cls, w_seg) for ``fixed``.
    """

    def __init__(self, mode: str = "uncertainty", fixed_weights=(1.0, 1.0), **kwargs):
        super().__init__(**kwargs)
        if mode not in COUPLINGS:
            raise ValueError(f"coupling must be one of {COUPLINGS}, got {mode!r}")
        self.mode = mode
        self.fixed_weights = tuple(float(w) for w in fixed_weights)
        if self.mode == "alpha":
            self.alpha = self.add_weight(name="alpha", shape=(), initializer="zeros")
            self.alpha.assign(0.5)
        elif self.mode == "uncertainty":
            self.log_vars = self.add_weight(name="log_vars", shape=(2,), initializer="zeros")

    def weights_for_terms(self):
        """The current effective weights (w_cls, w_seg) as tensors."""
        if self.mode == "alpha":
            return ops.abs(self.alpha), ops.abs(1.0 - self.alpha)
        if self.mode == "uncertainty":
            w = ops.exp(-self.log_vars)
            return w[0], w[1]
        return ops.convert_to_tensor(self.fixed_weights[0]), ops.convert_to_tensor(
            self.fixed_weights[1]
        )

    def call(self, cls_loss, seg_loss):
        """Returns the coupled loss; a ``None`` term (ablated branch) is left out."""
        w_cls, w_seg = self.weights_for_terms()
        if cls_loss is None or seg_loss is None:
            # One term only: nothing to balance, so no learnable weight is involved.
            return cls_loss if seg_loss is None else seg_loss
        total = w_cls * cls_loss + w_seg * seg_loss
        if self.mode == "uncertainty":
            total = total + ops.sum(self.log_vars)
        return total

    def get_config(self):
        return {**super().get_config(), "mode": self.mode, "fixed_weights": self.fixed_weights}
