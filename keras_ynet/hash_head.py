"""The hash head: feature aggregation of the core node into ``bits`` values.

The paper convolves the C x H x W core node to c x h x w with c * h * w = bits
(64 bits: 256 x 8 x 8 -> 1 x 8 x 8), flattens, applies tanh and takes the sign. It does
not train this head; at test time it describes the aggregation as a channel mean. Six
heads are offered:

* ``"mean"``: the channel mean over c groups of channels (the paper's test-time head);
* ``"conv"``: a 1x1 convolution left at its seeded random initialisation (the paper's
  untrained convolution: a random projection per grid cell);
* ``"trained"`` (the head of ``--preset paper``): the same
  convolution trained with circle loss on the hash values plus a quantisation term
  (our option, not in the paper). Its gradient stops at the core node:
  the head learns how to aggregate the features the two branches taught the core node
  (the authors' reply R1-4 describes the aggregation as "weighed with class labels"),
  without the hash loss reshaping those features.

* ``"embedding"`` (the default of training, chosen by cross-validation on the train
  splits: docs/results.md; our option, not in the paper): a dense map of the float R-MAC
  embedding to ``bits`` values, trained like ``trained`` (gradient stopped at the
  embedding). It keeps more of what the classification guidance taught (Table II
  analysis in docs/results.md) but its bits have no image region, so the search report
  draws no agreement map for it.

* ``"guided"`` (our option, not in the paper): the same dense map of the R-MAC
  embedding, but trained end to end and *through* it: the classification guidance
  (circle loss or cross-entropy, by variant) reads the hash values instead of the
  float embedding, so the bits themselves are what the guidance shapes (a plain
  classifier's recipe for sign codes). Its bits are signed by training, so their
  thresholds stay at zero (a median split would cut the larger class in two).

* ``"combined"`` (our option, not in the paper): the first half of the bits from the
  embedding (as ``embedding``), the second half from the core-node grid (as
  ``trained``), both trained by the one hash loss on all the bits: retrieval that keeps
  most of the embedding's, with a region map for the grid's half (the search report
  draws agreement from those bits).

Every head is followed by :class:`~keras_ynet.layers.BitCentering`, whose thresholds are
fitted on the training codes by :func:`fit_bit_thresholds`.
"""

from __future__ import annotations

import math

import keras
import numpy as np
from keras import layers, ops

from keras_ynet.layers import PACKAGE, BitCentering
from keras_ynet.run_config import HASH_HEADS

# The layer whose input is the (h, w, c) grid the bits are read from (or, in the combined
# head, that concatenates its two parts), and whose output is what the bit thresholds
# split (keras_ynet.ynet_codes).
HASH_GRID_LAYER = "hash_flatten"
# The combined head's grid part: the layer whose input is its (h, w, c) grid.
REGION_FLATTEN = "hash_region_flatten"
TRAINED_HEADS = ("trained", "embedding", "guided", "combined")  # heads with a hash loss term
GUIDED_HEADS = ("guided",)  # heads the classification guidance reads
SIGNED_HEADS = ("guided",)  # heads whose bit thresholds stay at zero


def hash_grid(height: int, width: int, bits: int):
    """Chooses the pooling of the core-node grid and the channel count c.

    The grid is average-pooled by factors of 2 until h * w divides ``bits`` (32 bits on
    an 8x8 grid: pool 2x1 to 4x8, c = 1); then c = bits / (h * w).

    Returns:
        (pool_h, pool_w, h, w, c)
    """
    pool_h = pool_w = 1
    h, w = height, width
    while h * w > bits or bits % (h * w):
        if h >= w and h % 2 == 0:
            h, pool_h = h // 2, pool_h * 2
        elif w % 2 == 0:
            w, pool_w = w // 2, pool_w * 2
        else:  # odd grid that cannot be halved: collapse it
            pool_h, pool_w, h, w = pool_h * h, pool_w * w, 1, 1
    return pool_h, pool_w, h, w, bits // (h * w)


@keras.saving.register_keras_serializable(package=PACKAGE)
class ChannelGroupMean(keras.layers.Layer):
    """Splits the channels into ``groups`` equal groups and averages each one."""

    def __init__(self, groups: int, **kwargs):
        super().__init__(**kwargs)
        self.groups = groups

    def build(self, input_shape):
        if input_shape[-1] % self.groups:
            raise ValueError(
                f"the mean hash head needs the core node's channels ({input_shape[-1]}) to be a "
                f"multiple of c = {self.groups} (bits / grid cells); widen stage_widths or use "
                "hash_head='conv'"
            )

    def call(self, x):
        shape = ops.shape(x)
        channels = x.shape[-1]
        x = ops.reshape(x, (shape[0], shape[1], shape[2], self.groups, channels // self.groups))
        return ops.mean(x, axis=-1)

    def compute_output_shape(self, input_shape):
        return (*input_shape[:3], self.groups)

    def get_config(self):
        return {**super().get_config(), "groups": self.groups}


@keras.saving.register_keras_serializable(package=PACKAGE)
class StopGradient(keras.layers.Layer):
    """Identity forward; no gradient flows back through it."""

    def call(self, x):
        return ops.stop_gradient(x)


def build_hash_head(core_node, bits: int, head: str, seed: int, embedding=None):
    """Adds the hash head on the core node tensor (``embedding``: on the R-MAC
    embedding tensor instead; ``combined``: on both); the output layer is named
    ``hash``."""
    if head not in HASH_HEADS:
        raise ValueError(f"hash_head must be one of {HASH_HEADS}, got {head!r}")
    if head == "combined":
        # The first bits from the embedding, the last from the core-node grid (the
        # grid's share is what the report can map to image regions).
        region_bits = combined_region_bits(bits)
        from_embedding = _embedding_values(embedding, bits - region_bits, head, seed)
        from_grid = _grid_values(core_node, region_bits, "trained", seed + 1, "hash_region")
        x = layers.Concatenate(name=HASH_GRID_LAYER)([from_embedding, from_grid])
        return BitCentering(bits, name="hash")(x)
    if head in ("embedding", "guided"):
        # The same layer names as the grid heads, so encoding and threshold fitting
        # (keras_ynet.ynet_codes) read every head alike.
        x = _embedding_values(embedding, bits, head, seed)
        x = layers.Flatten(name=HASH_GRID_LAYER)(x)
        return BitCentering(bits, name="hash")(x)
    x = _grid_values(core_node, bits, head, seed)
    return BitCentering(bits, name="hash")(x)


def combined_region_bits(bits: int) -> int:
    """How many of a ``combined`` head's bits come from the core-node grid: half."""
    return bits // 2


def _embedding_values(embedding, bits: int, head: str, seed: int):
    """A dense map of the R-MAC embedding to ``bits`` values; its gradient stops at the
    embedding unless the head is ``guided``."""
    x = embedding
    if head != "guided":
        x = StopGradient(name="hash_stop_gradient")(x)
    return layers.Dense(
        bits,
        kernel_initializer=keras.initializers.GlorotNormal(seed=seed),
        name="hash_aggregate",
    )(x)


def _grid_values(core_node, bits: int, head: str, seed: int, prefix: str = "hash"):
    """``bits`` values read from the pooled core-node grid, flattened in (h, w, c) order
    by the layer ``{prefix}_flatten`` (bit i of them belongs to grid cell i // c: used
    by reports). Its layers are named ``{prefix}_...``."""
    pool_h, pool_w, _, _, channels = hash_grid(core_node.shape[1], core_node.shape[2], bits)
    x = core_node
    if pool_h > 1 or pool_w > 1:
        x = layers.AveragePooling2D((pool_h, pool_w), name=f"{prefix}_pool")(x)
    if head == "mean":
        x = ChannelGroupMean(channels, name=f"{prefix}_aggregate")(x)
    else:
        trained = head == "trained"
        conv = layers.Conv2D(
            channels,
            1,
            use_bias=trained,
            kernel_initializer=keras.initializers.GlorotNormal(seed=seed),
            name=f"{prefix}_aggregate",
        )
        conv.trainable = trained
        if trained:
            x = StopGradient(name=f"{prefix}_stop_gradient")(x)
        x = conv(x)
    return layers.Flatten(name=f"{prefix}_flatten")(x)


def model_hash_grid(model) -> tuple[int, int, int, int] | None:
    """(rows, cols, bits_per_cell, first_bit) of a YNet's codes; None for a head whose
    bits have no image region (``embedding``, ``guided``).

    The grid heads flatten an (h, w, c) tensor in that order, so bit first_bit + i comes
    from grid cell i // c and the cells run row-major over the pooled core node. The
    grid heads map every bit (first_bit 0); the ``combined`` head maps its last
    :func:`combined_region_bits` bits, after those of the embedding.

    Raises:
        ValueError: when the model has no such layer or its grid does not give its bits.
    """
    names = [layer.name for layer in model.layers]
    layer = REGION_FLATTEN if REGION_FLATTEN in names else HASH_GRID_LAYER
    try:
        shape = tuple(int(d) for d in model.get_layer(layer).input.shape[1:])
    except ValueError as err:
        raise ValueError(f"the model has no {layer!r} layer: {err}") from None
    if layer == HASH_GRID_LAYER and len(shape) == 1 and shape[0] == model.bits:
        return None
    first_bit = model.bits - combined_region_bits(model.bits) if layer == REGION_FLATTEN else 0
    if len(shape) != 3 or first_bit + math.prod(shape) != model.bits:
        raise ValueError(f"hash grid {shape} does not give the model's {model.bits} bits")
    return (*shape, first_bit)


def bit_thresholds(head: str, pre_activations: np.ndarray) -> np.ndarray:
    """The thresholds a head of kind ``head`` uses: zero for a signed head, else the
    balanced split of :func:`fit_bit_thresholds` on the training codes."""
    if head in SIGNED_HEADS:
        return np.zeros(np.shape(pre_activations)[1], np.float32)
    return fit_bit_thresholds(pre_activations)


def fit_bit_thresholds(pre_activations: np.ndarray) -> np.ndarray:
    """Per-bit thresholds that split the training codes as close to half as possible.

    Each threshold is a midpoint between two neighbouring distinct training values, so
    no training image sits exactly on a threshold (where float rounding in an export
    could flip its bit). Where many images share one value (a ReLU that is zero for
    most of them), the midpoint whose split is nearest to 50% is chosen. A bit that has
    the same value on every training image stays constant (threshold just below it).

    Args:
        pre_activations: (N, bits) values entering tanh, with thresholds at zero.

    Returns:
        float32 (bits,) thresholds.
    """
    values = np.sort(np.asarray(pre_activations, np.float64), axis=0)
    n, bits = values.shape
    if n < 2:
        raise ValueError("need at least 2 training codes to fit bit thresholds")
    thresholds = np.empty(bits)
    for b in range(bits):
        column = values[:, b]
        gaps = np.flatnonzero(np.diff(column) > 0)  # split after index i: n-1-i ones
        if gaps.size == 0:
            thresholds[b] = column[0] - 1.0
            continue
        ones = n - 1 - gaps
        best = gaps[np.argmin(np.abs(ones - n / 2))]
        thresholds[b] = (column[best] + column[best + 1]) / 2
    return thresholds.astype(np.float32)
