"""Custom layers of Y-Net: R-MAC pooling, L2 normalisation, bit centring and the
gradient stop of a detached mask branch.

Each layer is registered for serialisation so a saved model loads in Keras safe mode.
"""

from __future__ import annotations

import keras
import numpy as np
from keras import ops

PACKAGE = "keras_ynet"


def rmac_regions(height: int, width: int, levels: int = 3, overlap: float = 0.4):
    """Square R-MAC regions (Tolias et al. 2016) on a feature map.

    At level ``l`` (1..levels) the region side is ``floor(2 * min(H, W) / (l + 1))`` and
    ``l`` (+ extra, on the longer side of a non-square map) regions are spread evenly
    along each axis, so neighbours overlap by about ``overlap``. Regions smaller than one
    cell are dropped and duplicates removed (small maps collapse to fewer regions).

    Returns:
        list of (top, left, size_h, size_w) tuples.
    """
    short, long_side = min(height, width), max(height, width)
    extra = 0
    if long_side > short:
        # Extra regions along the longer axis so that overlap stays near `overlap`.
        steps = np.arange(2, 7)
        b = (long_side - short) / (steps - 1)
        extra = int(steps[np.argmin(np.abs((short**2 - short * b) / short**2 - overlap))] - 1)
    extra_h = extra if height > width else 0
    extra_w = extra if width > height else 0
    regions = []
    for level in range(1, levels + 1):
        side = int(np.floor(2 * short / (level + 1)))
        if side < 1:
            continue
        tops = _region_starts(height, side, level + extra_h)
        lefts = _region_starts(width, side, level + extra_w)
        for top in tops:
            for left in lefts:
                region = (top, left, side, side)
                if region not in regions:
                    regions.append(region)
    return regions


def _region_starts(length: int, side: int, count: int) -> list[int]:
    if count <= 1 or length <= side:
        return [max(0, (length - side) // 2)]
    step = (length - side) / (count - 1)
    return sorted({int(round(i * step)) for i in range(count)})


# The one epsilon of every in-graph L2 normalisation (R-MAC, losses, baselines).
L2_EPSILON = 1e-6


def l2_normalize(x, axis: int = -1, epsilon: float = L2_EPSILON):
    """``x / sqrt(sum(x^2) + epsilon)`` along ``axis``, on tensors (the graph side; numpy
    descriptors use :func:`keras_ynet.ranking_metrics.unit_rows`)."""
    return x / ops.sqrt(ops.sum(ops.square(x), axis=axis, keepdims=True) + epsilon)


@keras.saving.register_keras_serializable(package=PACKAGE)
class L2Normalize(keras.layers.Layer):
    """L2-normalises the last axis."""

    def __init__(self, epsilon: float = L2_EPSILON, **kwargs):
        super().__init__(**kwargs)
        self.epsilon = epsilon

    def call(self, x):
        return l2_normalize(x, epsilon=self.epsilon)

    def get_config(self):
        return {**super().get_config(), "epsilon": self.epsilon}


@keras.saving.register_keras_serializable(package=PACKAGE)
class StopGradient(keras.layers.Layer):
    """Identity forward, no gradient backward: a branch after it trains only itself.

    Y-Net with the segmentation guidance off puts one in front of each FPN input, so the
    mask head still learns to segment while the encoder learns from the classification
    guidance alone.
    """

    def call(self, x):
        return ops.stop_gradient(x)


@keras.saving.register_keras_serializable(package=PACKAGE)
class RMACPooling(keras.layers.Layer):
    """Regional maximum activations of convolutions (Tolias et al. 2016).

    Max-pools each square region of an NHWC feature map, L2-normalises each region
    vector, sums them and L2-normalises the sum.

    Args:
        levels: number of region scales L.
        overlap: target overlap between neighbouring regions.
    """

    def __init__(
        self, levels: int = 3, overlap: float = 0.4, epsilon: float = L2_EPSILON, **kwargs
    ):
        super().__init__(**kwargs)
        self.levels = levels
        self.overlap = overlap
        self.epsilon = epsilon

    def build(self, input_shape):
        self.regions = rmac_regions(input_shape[1], input_shape[2], self.levels, self.overlap)

    def call(self, x):
        total = 0.0
        for top, left, size_h, size_w in self.regions:
            region = x[:, top : top + size_h, left : left + size_w, :]
            total = total + l2_normalize(ops.max(region, axis=(1, 2)), epsilon=self.epsilon)
        return l2_normalize(total, epsilon=self.epsilon)

    def compute_output_shape(self, input_shape):
        return (input_shape[0], input_shape[3])

    def get_config(self):
        return {
            **super().get_config(),
            "levels": self.levels,
            "overlap": self.overlap,
            "epsilon": self.epsilon,
        }


@keras.saving.register_keras_serializable(package=PACKAGE)
class BitCentering(keras.layers.Layer):
    """Subtracts per-bit thresholds, then applies tanh: ``tanh(x - thresholds)``.

    The core node comes out of a ReLU, so an aggregation of it is never negative and
    its sign would be 1 for every bit. The thresholds are fitted on the training codes
    after training (see ``keras_ynet.hash_head.fit_bit_thresholds``) and stored as a
    non-trainable weight, so every saved model and every export inherits them.
    """

    def __init__(self, bits: int, **kwargs):
        super().__init__(**kwargs)
        self.bits = bits

    def build(self, input_shape):
        if input_shape[-1] != self.bits:
            raise ValueError(f"BitCentering expects {self.bits} values, got {input_shape[-1]}")
        self.thresholds = self.add_weight(
            name="thresholds", shape=(self.bits,), initializer="zeros", trainable=False
        )

    def call(self, x):
        return ops.tanh(x - self.thresholds)

    def get_config(self):
        return {**super().get_config(), "bits": self.bits}
