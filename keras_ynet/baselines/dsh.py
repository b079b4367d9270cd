"""DSH: deep supervised hashing (Liu, Wang, Shan & Chen, CVPR 2016).

Loss of the paper for a pair of real-valued outputs (b1, b2), y = 0 similar, 1 not:

    L = 1/2 (1 - y) ||b1 - b2||^2 + 1/2 y max(m - ||b1 - b2||^2, 0)
        + alpha (|| |b1| - 1 ||_1 + || |b2| - 1 ||_1),        m = 2k

Where we had to choose:
* pairs are all pairs within a mini-batch (the paper's online pair generation) and
  the loss is their mean; the regulariser counts both images of every pair, which
  averages to 2 * alpha * mean_i || |u_i| - 1 ||_1.
* the outputs pass through the shared network's tanh (the paper's are linear); with
  |u| < 1, ||u_i - u_j||^2 <= 4k, so m = 2k asks dissimilar pairs to differ on about
  half of their bits, as for the paper's binary-like outputs.
* alpha = 0.01, the paper's value.
"""

from __future__ import annotations

from keras import ops

from keras_ynet.baselines.pairwise import masked_mean, off_diagonal, same_label, squared_distances

ALPHA = 0.01


def dsh_loss(labels, u, alpha: float = ALPHA, margin: float | None = None) -> dict:
    """DSH loss of one mini-batch.

    Args:
        labels: int (B,) class labels; similar = equal labels.
        u: float (B, bits) network outputs.
        alpha: weight of the regulariser.
        margin: m; None = 2 * bits.

    Returns:
        dict with ``loss``, ``contrastive`` and ``regularizer`` (before alpha).

    Example (by hand): bits 2 (m = 4), u = [(1, 1), (1, 1), (1, 0)], labels [0, 0, 1].
        pair 1-2 similar, distance 0: 0; pairs 1-3 and 2-3 dissimilar, distance 1:
        0.5 * (4 - 1) = 1.5 each. contrastive = (0 + 1.5 + 1.5) / 3 = 1.0.
        || |u_i| - 1 ||_1 = 0, 0, 1: regularizer = 2 * (1 / 3) = 0.666667.
        alpha = 0.01: loss = 1.0 + 0.01 * 0.666667 = 1.006667.
    """
    u = ops.cast(u, "float32")
    n, bits = ops.shape(u)[0], u.shape[-1]
    m = 2.0 * bits if margin is None else float(margin)
    s = same_label(labels)
    d = squared_distances(u)
    per_pair = 0.5 * s * d + 0.5 * (1.0 - s) * ops.relu(m - d)
    contrastive = masked_mean(per_pair, off_diagonal(n))
    regularizer = 2.0 * ops.mean(ops.sum(ops.abs(ops.abs(u) - 1.0), axis=1))
    return {
        "loss": contrastive + alpha * regularizer,
        "contrastive": contrastive,
        "regularizer": regularizer,
    }
