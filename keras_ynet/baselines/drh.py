"""DRH: deep residual hashing (Conjeti, Guha Roy, Katouzian & Navab; arXiv 1612.05400,
MICCAI 2017 "Hashing with residual networks for image retrieval").

The paper trains a residual network with a tanh hashing layer on four terms:

* J_S, a supervised retrieval loss from neighbourhood component analysis (NCA):
  p_ij = exp(-||h_i - h_j||^2) / sum_{l != i} exp(-||h_i - h_l||^2), and the loss is
  1 - (mean over anchors of the probability mass on same-class neighbours);
* J_Q, quantisation with a smooth surrogate of the L1 distance to +-1:
  log cosh(|h| - 1);
* J_B, bit balance: every bit should be +1 on half of the images;
* J_O, independence of the hashing layer: ||W^T W - I||_F^2.

Where we had to choose (the paper's text gives the terms, not every constant):
* NCA runs over the pairs inside a mini-batch; anchors without a same-class neighbour
  in the batch are left out of the mean (they have nothing to pull toward).
* J_B = mean over bits of (mean over the batch of h)^2; J_Q is the mean over entries.
* weights lambda_q = 0.1, lambda_b = 0.1, lambda_o = 0.001 (guessed; J_O is a sum over
  bits^2 entries, hence its smaller weight).
* the Y-Net authors' own "DRH" notebook trains a DSH contrastive loss on a small
  ResNet and ranks real values by L2; we follow the DRH paper instead, on the shared
  encoder, and rank sign codes by Hamming distance like every hashing baseline.
"""

from __future__ import annotations

import math

from keras import ops

from keras_ynet.baselines.pairwise import off_diagonal, same_label, squared_distances

LAMBDA_Q = 0.1
LAMBDA_B = 0.1
LAMBDA_O = 0.001


def log_cosh(x):
    """log(cosh(x)) without overflow: |x| + log(1 + exp(-2|x|)) - log 2."""
    a = ops.abs(x)
    return a + ops.softplus(-2.0 * a) - math.log(2.0)


def nca_loss(labels, h):
    """1 - mean over anchors (with a same-class neighbour) of sum_{j same class} p_ij."""
    h = ops.cast(h, "float32")
    n = ops.shape(h)[0]
    others = off_diagonal(n)
    # The diagonal gets a huge distance so that a point never selects itself.
    logits = -squared_distances(h) - (1.0 - others) * 1e9
    p = ops.softmax(logits, axis=1)
    positives = same_label(labels) * others
    mass = ops.sum(p * positives, axis=1)
    has_positive = ops.cast(ops.sum(positives, axis=1) > 0, "float32")
    return 1.0 - ops.sum(mass * has_positive) / ops.maximum(ops.sum(has_positive), 1.0)


def quantization_loss(h):
    """Mean over entries of log cosh(|h| - 1)."""
    return ops.mean(log_cosh(ops.abs(ops.cast(h, "float32")) - 1.0))


def bit_balance_loss(h):
    """Mean over bits of the squared batch mean of each bit."""
    return ops.mean(ops.square(ops.mean(ops.cast(h, "float32"), axis=0)))


def independence_loss(kernel):
    """||W^T W - I||_F^2 for the hashing layer's kernel W (features, bits)."""
    kernel = ops.cast(kernel, "float32")
    gram = ops.matmul(ops.transpose(kernel), kernel)
    return ops.sum(ops.square(gram - ops.eye(kernel.shape[1], dtype="float32")))


def drh_loss(
    labels,
    h,
    kernel,
    lambda_q: float = LAMBDA_Q,
    lambda_b: float = LAMBDA_B,
    lambda_o: float = LAMBDA_O,
) -> dict:
    """DRH loss of one mini-batch: J_S + lambda_q J_Q + lambda_b J_B + lambda_o J_O.

    Args:
        labels: int (B,) class labels.
        h: float (B, bits) tanh outputs.
        kernel: (features, bits) kernel of the hashing layer.
        lambda_q, lambda_b, lambda_o: term weights.

    Returns:
        dict with ``loss``, ``nca``, ``quantization``, ``balance`` and ``independence``.

    Example (by hand): h = [(1, 1), (1, 1), (0.5, -1)], labels [0, 0, 1],
    W = [[1, 1], [0, 0]], all lambdas 1.
        distances: d_12 = 0, d_13 = d_23 = 0.25 + 4 = 4.25. Anchors 1 and 2 put
        p = 1 / (1 + e^-4.25) = 0.985936 on each other; anchor 3 has no positive.
        nca = 1 - 0.985936 = 0.014064.
        log cosh(|0.5| - 1) = log cosh(0.5) = 0.120115, other entries 0:
        quantization = 0.120115 / 6 = 0.020019.
        bit means (5/6, 1/3): balance = (25/36 + 1/9) / 2 = 0.402778.
        W^T W = [[1, 1], [1, 1]]: independence = 0^2 + 1^2 + 1^2 + 0^2 = 2.
        loss = 2.436860.
    """
    terms = {
        "nca": nca_loss(labels, h),
        "quantization": quantization_loss(h),
        "balance": bit_balance_loss(h),
        "independence": independence_loss(kernel),
    }
    terms["loss"] = (
        terms["nca"]
        + lambda_q * terms["quantization"]
        + lambda_b * terms["balance"]
        + lambda_o * terms["independence"]
    )
    return terms
