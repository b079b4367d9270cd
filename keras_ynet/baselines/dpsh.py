"""DPSH: deep pairwise-supervised hashing (Li, Wang & Kang, IJCAI 2016).

Loss of the paper, for outputs u and codes b = sgn(u):

    L = - sum_{s_ij in S} (s_ij * theta_ij - log(1 + exp(theta_ij)))
        + eta * sum_i ||b_i - u_i||^2,            theta_ij = 0.5 * u_i . u_j

Where we had to choose:
* the paper sums over all training pairs, refreshing b in an alternating step; we use
  the pairs inside each mini-batch and take means (over pairs for the likelihood, over
  images for the quantisation), so ``eta`` here is the paper's eta divided by the
  number of images. b = sgn(u) is held constant within a step (stop-gradient), which is
  the paper's b-update done at every step.
* u is the tanh output of the shared hash network (the paper's u is linear); tanh keeps
  theta bounded by bits / 2.
* eta = 0.1 (the paper tunes it per dataset; 0.1 is the common default of the public
  PyTorch re-implementations with mean-normalised terms).
"""

from __future__ import annotations

from keras import ops

from keras_ynet.baselines.pairwise import masked_mean, off_diagonal, same_label

ETA = 0.1


def dpsh_loss(labels, u, eta: float = ETA) -> dict:
    """DPSH loss of one mini-batch.

    Args:
        labels: int (B,) class labels; s_ij = 1 for equal labels.
        u: float (B, bits) network outputs.
        eta: weight of the quantisation term.

    Returns:
        dict with ``loss`` (the total), ``likelihood`` and ``quantization``.

    Example (by hand): u = [(1, 1), (1, 1), (0.5, -1)], labels [0, 0, 1], eta = 1.
        theta_12 = 1, s = 1: log(1 + e) - 1 = 0.313262;
        theta_13 = theta_23 = 0.5 * (0.5 - 1) = -0.25, s = 0: log(1 + e^-0.25) = 0.575939.
        likelihood = (0.313262 + 2 * 0.575939) / 3 = 0.488380.
        b_3 = (1, -1): ||b_3 - u_3||^2 = 0.25, others 0: quantization = 0.25 / 3 = 0.083333.
        loss = 0.571713.
    """
    u = ops.cast(u, "float32")
    n = ops.shape(u)[0]
    s = same_label(labels)
    theta = 0.5 * ops.matmul(u, ops.transpose(u))
    # softplus(theta) = log(1 + exp(theta)), computed without overflow.
    per_pair = ops.softplus(theta) - s * theta
    likelihood = masked_mean(per_pair, off_diagonal(n))
    b = ops.stop_gradient(ops.sign(u))
    quantization = ops.mean(ops.sum(ops.square(b - u), axis=1))
    return {
        "loss": likelihood + eta * quantization,
        "likelihood": likelihood,
        "quantization": quantization,
    }
