"""DDMH: deep disentangled hashing with momentum triplets (Yang, Yao, Cao, Guan, Yap,
Shen & Liu, MICCAI 2020).

The paper's two ideas, as we implement them:

* Disentangled triplet loss. For codes in {-1, +1}^k, the Hamming distance is
  (k - b_i . b_j) / 2, so a triplet loss on relaxed codes depends on inner products,
  i.e. on code norms times the cosine of the angle. The paper decouples the loss from
  the norms: only the directions enter, as the Hamming distance the codes would have at
  the binary norm sqrt(k): d_ij = k/2 * (1 - cos(u_i, u_j)). The triplet loss
  max(0, d_ap - d_an + m) then asks for a margin of m bits whatever the code length.
* Momentum triplets. A momentum copy of the network (weights an exponential moving
  average of the trained ones, as in MoCo) encodes every batch into a queue of codes
  with their labels; each anchor of the current batch forms triplets with the queue
  (and the current batch's momentum codes), so a small batch still sees many
  positives and negatives. Queue codes carry no gradient.

Where we had to choose (not fixed by the paper's text as we read it):
* margin m = bits / 4 bits; quantisation term mean((sgn(u) - u)^2) with weight 0.1;
* momentum 0.99 and a queue of 128 codes (our training sets hold 200-450 images, far
  fewer steps than the paper's setting, so a faster-moving average and a short queue);
* every valid (anchor, positive, negative) triplet is averaged (no hard mining); an
  anchor's own momentum code is excluded from its positives; the momentum network runs
  in inference mode and its batch-norm statistics follow the same moving average.
"""

from __future__ import annotations

import keras
import tensorflow as tf
from keras import ops

from keras_ynet.baselines.pairwise import masked_mean, same_label
from keras_ynet.baselines.training import LossModel

MARGIN_FRACTION = 0.25
QUANTIZATION_WEIGHT = 0.1
MOMENTUM = 0.99
QUEUE_SIZE = 128


def _unit(x):
    x = ops.cast(x, "float32")
    return x / ops.sqrt(ops.sum(ops.square(x), axis=-1, keepdims=True) + 1e-12)


def disentangled_triplet_loss(
    anchor_u, anchor_labels, memory_u, memory_labels, margin: float, exclude=None
):
    """Mean hinge max(0, d_ap - d_an + margin) over all valid triplets.

    Args:
        anchor_u: float (B, bits) outputs of the trained network.
        anchor_labels: int (B,) labels.
        memory_u: float (M, bits) codes to draw positives and negatives from.
        memory_labels: int (M,) labels; a negative label marks an empty queue slot.
        margin: m, in bits.
        exclude: optional (B, M) 0/1 mask of pairs that may not form a triplet.

    Returns:
        Scalar loss; 0 when there is no valid triplet.

    Example (by hand): bits 2, margin 1, anchor (1, 1) label 0; memory (1, -1) label 0,
    (1, 1) label 1, (0, 0) empty (label -1). cos with the positive 0: d_ap = 1;
    cos with the negative 1: d_an = 0. One triplet: max(0, 1 - 0 + 1) = 2.
    """
    bits = anchor_u.shape[-1]
    cos = ops.matmul(_unit(anchor_u), ops.transpose(_unit(memory_u)))
    d = 0.5 * bits * (1.0 - cos)
    valid = ops.cast(ops.reshape(memory_labels, (1, -1)) >= 0, "float32")
    if exclude is not None:
        valid = valid * (1.0 - ops.cast(exclude, "float32"))
    same = same_label(anchor_labels, ops.maximum(ops.cast(memory_labels, "int32"), 0))
    positives = same * valid
    negatives = (1.0 - same) * valid
    hinge = ops.relu(d[:, :, None] - d[:, None, :] + margin)
    return masked_mean(hinge, positives[:, :, None] * negatives[:, None, :])


def ddmh_loss(
    labels,
    u,
    memory_u,
    memory_labels,
    exclude=None,
    margin: float | None = None,
    quantization_weight: float = QUANTIZATION_WEIGHT,
) -> dict:
    """DDMH loss: disentangled triplet + quantisation; margin None = bits * 1/4."""
    margin = MARGIN_FRACTION * u.shape[-1] if margin is None else margin
    u = ops.cast(u, "float32")
    triplet = disentangled_triplet_loss(u, labels, memory_u, memory_labels, margin, exclude)
    quantization = ops.mean(ops.square(ops.stop_gradient(ops.sign(u)) - u))
    return {
        "loss": triplet + quantization_weight * quantization,
        "triplet": triplet,
        "quantization": quantization,
    }


class MomentumHashingModel(LossModel):
    """Trains a hash network with DDMH's momentum triplets.

    Args:
        network: the hash network (image -> u in (-1, 1)).
        queue_size: codes kept in the queue (at least one batch).
        momentum: moving-average rate of the momentum network.
        margin: triplet margin in bits (None = bits / 4).
    """

    def __init__(self, network, queue_size=QUEUE_SIZE, momentum=MOMENTUM, margin=None, **kw):
        super().__init__(network, None, term_names=("triplet", "quantization"), **kw)
        bits = network.output.shape[-1]
        self.momentum, self.margin = momentum, margin
        self.momentum_network = keras.models.clone_model(network)
        self.momentum_network.set_weights(network.get_weights())
        self.momentum_network.trainable = False
        self.queue_codes = self.add_weight(
            name="queue_codes", shape=(queue_size, bits), initializer="zeros", trainable=False
        )
        self.queue_labels = self.add_weight(
            name="queue_labels", shape=(queue_size,), dtype="int32",
            initializer=keras.initializers.Constant(-1), trainable=False,
        )  # fmt: skip
        self.queue_pointer = self.add_weight(
            name="queue_pointer", shape=(), dtype="int32", initializer="zeros", trainable=False
        )

    def train_step(self, data):
        x, labels = data[0], tf.cast(data[1]["label"], tf.int32)
        keys = tf.stop_gradient(self.momentum_network(x, training=False))
        batch = tf.shape(keys)[0]
        queue = self.queue_codes.shape[0]
        memory_u = tf.concat([tf.convert_to_tensor(self.queue_codes), keys], axis=0)
        memory_labels = tf.concat([tf.convert_to_tensor(self.queue_labels), labels], axis=0)
        # An anchor's own momentum code is not its positive.
        exclude = tf.concat([tf.zeros((batch, queue)), tf.eye(batch)], axis=1)

        def loss_fn(batch_labels, u, network):
            return ddmh_loss(batch_labels, u, memory_u, memory_labels, exclude, self.margin)

        terms = self.apply_loss(x, labels, loss_fn)

        mu = self.momentum
        for slow, fast in zip(self.momentum_network.weights, self.network.weights, strict=True):
            if slow.dtype.startswith("float"):  # not integer states (seed generators)
                slow.assign(mu * slow + (1.0 - mu) * tf.cast(fast, slow.dtype))
        slots = (self.queue_pointer + tf.range(batch)) % queue
        self.queue_codes.assign(tf.tensor_scatter_nd_update(self.queue_codes, slots[:, None], keys))
        self.queue_labels.assign(
            tf.tensor_scatter_nd_update(self.queue_labels, slots[:, None], labels)
        )
        self.queue_pointer.assign((self.queue_pointer + batch) % queue)
        return self.update_trackers(terms)
