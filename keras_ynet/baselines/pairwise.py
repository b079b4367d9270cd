"""Pair bookkeeping shared by the deep-hashing losses (keras.ops, any backend).

A mini-batch of B images gives B * (B - 1) ordered pairs (i, j), i != j; every
pairwise loss here is the mean over those pairs, which equals the mean over unordered
pairs because every term is symmetric in i and j.
"""

from __future__ import annotations

from keras import ops


def same_label(labels_a, labels_b=None):
    """Float (A, B) matrix: 1 where the labels are equal."""
    labels_a = ops.reshape(ops.cast(labels_a, "int32"), (-1,))
    labels_b = labels_a if labels_b is None else ops.reshape(ops.cast(labels_b, "int32"), (-1,))
    return ops.cast(ops.equal(labels_a[:, None], labels_b[None, :]), "float32")


def off_diagonal(n):
    """Float (n, n) matrix: 1 off the diagonal, 0 on it."""
    return 1.0 - ops.eye(n, dtype="float32")


def squared_distances(a, b=None):
    """(A, B) squared Euclidean distances between rows, clipped at 0 against rounding."""
    a = ops.cast(a, "float32")
    b = a if b is None else ops.cast(b, "float32")
    sq_a = ops.sum(ops.square(a), axis=1)[:, None]
    sq_b = ops.sum(ops.square(b), axis=1)[None, :]
    return ops.maximum(sq_a + sq_b - 2.0 * ops.matmul(a, ops.transpose(b)), 0.0)


def masked_mean(values, mask):
    """Mean of ``values`` where ``mask`` is 1; 0 when the mask is empty."""
    mask = ops.cast(mask, values.dtype)
    return ops.sum(values * mask) / ops.maximum(ops.sum(mask), 1.0)
