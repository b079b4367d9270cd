"""Aggregating a conv feature map into one float descriptor (pure numpy).

Every function takes post-ReLU feature maps ``(N, H, W, C)`` (channels last) and
returns L2-normalised descriptors ``(N, C)``, ranked by cosine at native dimension.
None applies PCA-whitening: the papers learn it on a separate large collection, which
we do not have, and fitting it on a 400-image database at 256 dimensions would be
ill-conditioned (and would change the dimension the table compares).
"""

from __future__ import annotations

import numpy as np

from keras_ynet.layers import rmac_regions
from keras_ynet.ranking_metrics import unit_rows

EPS = 1e-12


# One numpy normalisation for every descriptor (zero vectors stay zero).
l2_normalize = unit_rows


def _check(features) -> np.ndarray:
    features = np.asarray(features, np.float64)
    if features.ndim != 4:
        raise ValueError(f"feature maps must be (N, H, W, C), got shape {features.shape}")
    return features


def mac(features) -> np.ndarray:
    """MAC (Tolias et al. 2016): max over positions per channel, L2."""
    return l2_normalize(_check(features).max(axis=(1, 2)))


def spoc(features) -> np.ndarray:
    """SPoC (Babenko & Lempitsky 2015): sum over positions per channel, L2.

    The optional centre prior of SPoC is left out: our images are already centred
    crops (optic-nerve head, chest), so a Gaussian centre weight adds nothing.
    """
    return l2_normalize(_check(features).sum(axis=(1, 2)))


def rmac(features, levels: int = 3) -> np.ndarray:
    """R-MAC (Tolias et al. 2016) on the regions of :func:`keras_ynet.layers.rmac_regions`.

    Each region is max-pooled, L2-normalised; the region vectors are summed and the
    sum L2-normalised (the same computation as :class:`keras_ynet.layers.RMACPooling`).
    """
    features = _check(features)
    total = np.zeros((features.shape[0], features.shape[3]))
    for top, left, size_h, size_w in rmac_regions(features.shape[1], features.shape[2], levels):
        region = features[:, top : top + size_h, left : left + size_w, :].max(axis=(1, 2))
        total += l2_normalize(region)
    return l2_normalize(total)


def crow_spatial_weights(features, a: float = 2.0, b: float = 2.0) -> np.ndarray:
    """CroW spatial weights (Kalantidis et al. 2016), (N, H, W).

    S' = sum of the channels at each position; S = (S' / ||S'||_a) ** (1 / b).
    """
    summed = _check(features).sum(axis=3)
    norm = (summed**a).sum(axis=(1, 2), keepdims=True) ** (1.0 / a)
    return (summed / np.maximum(norm, EPS)) ** (1.0 / b)


def crow_channel_weights(features) -> np.ndarray:
    """CroW channel weights, (N, C): an idf of each channel's sparsity, per image.

    Q_k = share of positions where channel k is non-zero;
    beta_k = log(sum_h Q_h / Q_k), and 0 for a channel that is zero everywhere.
    """
    features = _check(features)
    q = (features > 0).mean(axis=(1, 2))
    total = q.sum(axis=1, keepdims=True)
    with np.errstate(divide="ignore"):
        weights = np.log(np.where(q > 0, total / np.where(q > 0, q, 1.0), 1.0))
    return np.where(q > 0, weights, 0.0)


def crow(features, a: float = 2.0, b: float = 2.0) -> np.ndarray:
    """CroW: spatially weighted sum pooling, times the channel weights, L2.

    Example (worked by hand in tests/test_baselines.py): one image, 2x2 positions,
    channel 0 = [[3, 0], [0, 0]], channel 1 = [[1, 0], [0, 4]]. S' = [[4, 0], [0, 4]],
    ||S'||_2 = 4 sqrt(2), S = 2**-0.25 at the two non-zero positions. Q = (1/4, 1/2),
    beta = (log 3, log 1.5). Pooled: (3, 5) * 2**-0.25, weighted: (3 log 3, 5 log 1.5)
    * 2**-0.25, normalised: (0.8518, 0.5239).
    """
    features = _check(features)
    spatial = crow_spatial_weights(features, a, b)
    pooled = (features * spatial[..., None]).sum(axis=(1, 2))
    return l2_normalize(pooled * crow_channel_weights(features))


def class_activation_maps(features, kernel) -> np.ndarray:
    """CAMs (Zhou et al. 2016): sum_k w_kc F_k for every class, min-max scaled to [0, 1].

    Args:
        features: (N, H, W, C) feature maps.
        kernel: (C, num_classes) weights of the bias-free classifier on their average.

    Returns:
        (N, num_classes, H, W); a constant map becomes all ones (uniform weighting).
    """
    cams = np.einsum("nhwc,ck->nkhw", _check(features), np.asarray(kernel, np.float64))
    low = cams.min(axis=(2, 3), keepdims=True)
    span = cams.max(axis=(2, 3), keepdims=True) - low
    return np.where(span > EPS, (cams - low) / np.maximum(span, EPS), 1.0)


def cam_class_vectors(features, kernel, channel_weighting: bool = True) -> np.ndarray:
    """Class-weighted vectors of Jimenez et al. 2017, one per class, (N, classes, C).

    f_c = sum over positions of CAM_c * F, times the CroW channel weights (their
    channel weighting), L2-normalised per class.
    """
    features = _check(features)
    cams = class_activation_maps(features, kernel)
    vectors = np.einsum("nkhw,nhwc->nkc", cams, features)
    if channel_weighting:
        vectors = vectors * crow_channel_weights(features)[:, None, :]
    return l2_normalize(vectors)


def top_classes(logits, n: int) -> np.ndarray:
    """The indices of the n highest logits per row, best first (ties by index), (N, n)."""
    logits = np.asarray(logits, np.float64)
    n = min(n, logits.shape[1])
    return np.argsort(-logits, axis=1, kind="stable")[:, :n]


def sum_class_vectors(class_vectors, classes) -> np.ndarray:
    """L2(sum of the class vectors of ``classes`` (N, n)) per image, (N, C)."""
    picked = np.take_along_axis(np.asarray(class_vectors), np.asarray(classes)[:, :, None], axis=1)
    return l2_normalize(picked.sum(axis=1))
